"""Where scoring's time goes on a GPU: score_store of the commit before the GPU changes (old) and of
this tree (new) side by side on the same random dense Qwen3-shaped model (1.3B parameters,
vocabulary 151,936, bf16) and the same compact store (32 windows x 1,024, half scored, 8 windows
per call), each next to the bare forward, then one run of each under torch.profiler.

    python3 perf/gpu/profile_score.py --out DIR [--old DIR_WITH score_old.py kernels_old.py]

Writes DIR/profile.json (tok/s, ratio, GPU busy share per variant) and DIR/profile_<variant>.txt
(the profiler's tables: CUDA kernels by device time, CPU ops by self CPU time). The old files
are `git show 1cbf750:silentzone/fidelity/{score,kernels}.py`, copied next to the new ones.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

VOCAB, CTX, BATCH, TOKENS = 151936, 1024, 8, 32768


def _variant(old_dir: Path | None, name: str):
    if name == "new":
        return importlib.import_module("silentzone.fidelity.score")
    pkg = Path(importlib.import_module("silentzone.fidelity").__file__).parent
    k = (old_dir / "kernels_old.py").read_text()
    s = (old_dir / "score_old.py").read_text().replace("from .kernels import", "from ._old_kernels import")
    (pkg / "_old_kernels.py").write_text(k)
    (pkg / "_old_score.py").write_text(s)
    return importlib.import_module("silentzone.fidelity._old_score")


def dense_model_and_store(tokens: int, path: Path):
    """The random dense Qwen3-shaped model (1.32B, vocabulary 151,936, bf16, on CUDA; logits widened
    a little, as the pipeline test does) and a compact store of `tokens` random ids captured at
    path (CTX-token windows, BATCH per call): (HFModel, Store)."""
    from transformers import AutoModelForCausalLM, Qwen3Config
    from silentzone.backends import HFModel
    from silentzone.fidelity.capture import capture
    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=VOCAB, hidden_size=2048, intermediate_size=6144, num_hidden_layers=20,
                      num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                      max_position_embeddings=8192, tie_word_embeddings=True)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.dim() >= 2 and "embed" not in n:
                p.mul_(2.0)
    m = HFModel(model, "dense", "cuda")
    m._tok = None  # no tokenizer: the probe-id check is skipped, as for a model without one
    ids = np.random.default_rng(0).integers(0, 8192, tokens)
    shutil.rmtree(path, ignore_errors=True)
    return m, capture(m, ids, CTX, path, batch=BATCH)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--old", type=Path, default=Path(".llcarry/old"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=TOKENS, help="corpus tokens (32 windows by default)")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    from silentzone.fidelity.capture import window_logits
    from silentzone.fidelity.store import Store
    m, st = dense_model_and_store(a.tokens, Path("/tmp/profile_store"))
    tmp = st.path
    windows = st.windows()

    def bare():
        for j in range(0, st.n_windows, BATCH):
            window_logits(m, windows[j:j + BATCH], st.first)

    def timed(fn):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        return time.perf_counter() - t0, out

    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
           "params_b": round(sum(p.numel() for p in model.parameters()) / 1e9, 3),
           "windows": st.n_windows, "ctx": CTX, "batch": BATCH}
    mods = {v: _variant(a.old, v) for v in ("old", "new")}
    n_tok = st.n_windows * (CTX - 1 - st.first)
    for v, mod in mods.items():
        bare()
        mod.score_store(m, Store(tmp), batch=BATCH, label=v)  # warm-up: torch.compile, allocator
    # interleaved repetitions, so that clocks and contention hit both variants alike
    t = {"bare": [], "old": [], "new": []}
    outs = {}
    for _ in range(a.reps):
        t["bare"].append(timed(bare)[0])
        for v, mod in mods.items():
            dt, outs[v] = timed(lambda mod=mod, v=v: mod.score_store(m, Store(tmp), batch=BATCH, label=v))
            t[v].append(dt)
    best = {k: min(x) for k, x in t.items()}
    med = {k: float(np.median(x)) for k, x in t.items()}
    res["bare_tok_s"] = round(n_tok / best["bare"])
    for v in mods:
        res[v] = {"score_tok_s": round(n_tok / best[v]), "ratio": round(best["bare"] / best[v], 3),
                  "ratio_of_medians": round(med["bare"] / med[v], 3),
                  "overhead_us_per_token": round((best[v] - best["bare"]) / n_tok * 1e6, 2),
                  "times_s": [round(x, 4) for x in t[v]]}
    res["bare_times_s"] = [round(x, 4) for x in t["bare"]]
    res["same_results"] = {k: float(np.abs(outs["old"][k] - outs["new"][k]).max()) for k in outs["new"]}

    from torch.profiler import ProfilerActivity, profile
    for v, mod in (("bare", None), *mods.items()):
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            wall = timed(bare if mod is None else (lambda mod=mod: mod.score_store(m, Store(tmp), batch=BATCH)))[0]
        ev = prof.key_averages()
        busy = sum(e.self_device_time_total for e in ev) / 1e6  # kernels + copies, seconds
        res.setdefault("profile", {})[v] = {"wall_s": round(wall, 4), "device_busy_s": round(busy, 4),
                                            "device_idle_s": round(wall - busy, 4)}
        (a.out / f"profile_{v}.txt").write_text(
            f"{v}: wall {wall:.4f} s, device busy {busy:.4f} s\n\n"
            + ev.table(sort_by="self_device_time_total", row_limit=25) + "\n\n"
            + ev.table(sort_by="self_cpu_time_total", row_limit=25))
    (a.out / "profile.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
