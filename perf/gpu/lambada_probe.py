"""Where a reference's bench aborts on llama.cpp's CUDA build (issue 19): Gemma 3's LAMBADA reference
bench died with `ggml-cuda.cu:109: CUDA error` in llama_get_logits, every time after about 380 items
(seventh lease, 2026-12-07; docs/performance.md). This runs the same scoring (bench.run.score_pair on
the study's items, in the study's order) in variants, each in a process of its own, since an abort
ends only that one:

    seq        items --start .. --upto as the bench stage scores them (the store's passes in torch on
               the model's metric device, the rows to a torch tensor there)
    seq-numpy  the same, the rows as numpy (LlamaCppModel.rows_to = "numpy")
    seq-nostore  the same without the store (no torch pass at all)
    alone      item --item alone on a fresh model: one item's fault, or what came before it?

    python perf/gpu/lambada_probe.py --study gemma3 --profile power --device cuda --upto 390 --item 380
    bash perf/gpu/power_run.sh py perf/gpu/lambada_probe.py --study gemma3 --device cuda --out $OUT

Writes <out>/lambada_probe.json: per variant the exit code, the items scored (id, tokens, margin)
and the last lines of stderr, which carry llama.cpp's own error message since silentzone.logits
installs its log callback (llama-cpp-python 0.3.36's dropped ERROR-level messages).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
VARIANTS = ("seq", "seq-numpy", "seq-nostore", "alone")


def worker(a) -> int:
    """Score the variant's items; one JSON line per item on stdout as it is done."""
    import tempfile

    from silentzone.backends import open_model
    from silentzone.bench import mc
    from silentzone.bench import tasks as T
    from silentzone.bench.kld import RefStore
    from silentzone.bench.run import Encoder, prepare, score_pair
    from silentzone.config import load_study
    from silentzone.models import resolve
    study = load_study(a.study, a.profile)
    task = T.get(a.task)
    held = int(getattr(study.profile, "selection_items", 0))
    items = task.items(a.n_items or study.profile.n_items, None, held_back=held, held_seed=study.held_seed)
    idx = [a.item] if a.worker == "alone" else list(range(a.start, min(a.upto, len(items) - 1) + 1))
    if not 0 <= idx[0] < len(items):
        raise SystemExit(f"--item {a.item}: outside the {len(items)} items of {a.task}")
    ref = resolve(study.reference.model, study.reference.dtype)
    enc = Encoder(ref.tokenizer())
    prep = prepare(task, [items[i] for i in idx], enc)
    m = open_model(str(ref.gguf), threads=a.threads, name="reference", device=a.device,
                   kv_cache=study.kv_cache, dtype="float32")
    if a.worker == "seq-numpy":
        m.rows_to = "numpy"
    batched = bool(study.profile.mc_batched or mc.batched_default())
    with tempfile.TemporaryDirectory() as tmp:
        store = None if a.worker == "seq-nostore" else RefStore(Path(tmp) / "ref.npz", k=a.k)
        for i, p in zip(idx, prep):
            row = score_pair("reference", m, task, [p], enc, store, True, progress=False,
                             batched=batched).iloc[0]
            print(json.dumps({"i": i, "item_id": p["item"].id, "n_tokens": int(row["n_tokens"]),
                              "margin": float(row["margin"]), "correct": bool(row["correct"])}), flush=True)
    return 0


def _tail(text: str, n: int = 12) -> list[str]:
    """stderr's last lines that say something (power_run.said_lines: no backtrace frames, no
    progress redraws; a path-led line such as "ggml-cuda.cu:109: CUDA error" stays)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from power_run import said_lines
    return said_lines(text)[-n:]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default="gemma3")
    ap.add_argument("--profile", default="power")
    ap.add_argument("--task", default="lambada")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--upto", type=int, default=390, help="the last item (index in the study's order)")
    ap.add_argument("--item", type=int, default=380, help="the item the 'alone' variant scores")
    ap.add_argument("--n-items", type=int, default=None, help="default: the profile's")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--k", type=int, default=1024)
    ap.add_argument("--timeout", type=float, default=240.0, help="seconds per variant")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp")))
    ap.add_argument("--worker", choices=VARIANTS, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        return worker(a)
    res = {"study": a.study, "profile": a.profile, "task": a.task, "device": a.device,
           "start": a.start, "upto": a.upto, "item": a.item, "variants": {}}
    for v in a.variants:
        cmd = [sys.executable, __file__, "--worker", v] + [x for x in (argv if argv is not None else sys.argv[1:])
                                                          if x != "--variants" and x not in VARIANTS]
        t = time.time()
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout, cwd=REPO)
            rc, out, err = p.returncode, p.stdout, p.stderr
        except subprocess.TimeoutExpired as e:
            rc = "timeout"
            out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        items = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
        res["variants"][v] = {"rc": rc, "s": round(time.time() - t, 1), "n_scored": len(items),
                              "last": items[-1] if items else None, "items": items, "stderr": _tail(err)}
        print(f"{v}: exit {rc}, {len(items)} items scored"
              + (f", last {items[-1]['i']} ({items[-1]['item_id']})" if items else "")
              + ("" if rc == 0 else " | " + " | ".join(_tail(err, 4))), flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "lambada_probe.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
