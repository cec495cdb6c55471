"""GGUF quants in llama.cpp built with CUDA, through the module code: a random Qwen-shaped model
(vocabulary 151,936) converted to GGUF F16 by the pinned tree's convert_hf_to_gguf.py, quantized
by `make_quant` (llama-quantize: Q8_0, Q4_K_M), the F16 reference captured with llama.cpp on the
GPU, every candidate scored by `score_store` with device="cuda" (llama.cpp offloads every layer;
the metrics run on the GPU), next to a bare llama.cpp forward (`decode_tok_s`: decode alone, logits
left in llama.cpp's buffer; `bare_tok_s`: window_logits, which adds a copy into a fresh numpy array
per window) and to llama-perplexity --kl-divergence-base / --kl-divergence on the GPU over the same
windows.

Runs where a CUDA build of llama.cpp is (perf/gpu/llama_cuda.sh builds one from the same source
tree as the CPU build and runs this file: `python3 -m pytest -m gpu tests/gpu/test_gpu_llamacpp.py -s`).
The CPU variant (mark slow) runs the same steps at toy size with the CPU build. Numbers go to the
JSON report $SILENTZONE_LLAMA_REPORT (default <tmp>/llamacpp_report_<device>.json) as they come.
Random weights: the KLD values mean nothing; the checks are that every step runs on the GPU, that
our KLD agrees with llama-perplexity's on the same windows, and what it costs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
llama_cpp = pytest.importorskip("llama_cpp")

from test_gpu_pipeline import SHAPES, _config, _tokenizer  # noqa: E402 - same shapes as the HF run

CTX = 1024


def _gpu_build() -> bool:
    try:
        return bool(torch.cuda.is_available() and llama_cpp.llama_supports_gpu_offload())
    except Exception:  # noqa: BLE001
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _gpu_build(), reason="needs CUDA and a CUDA build of llama.cpp")
def test_llamacpp_cuda(tmp_path_factory):
    run_llamacpp("cuda", os.environ.get("SILENTZONE_LLAMA_SIZE", "full"), tmp_path_factory)


@pytest.mark.slow
def test_llamacpp_code_paths_on_cpu(tmp_path_factory):
    rep = run_llamacpp("cpu", "toy", tmp_path_factory)
    assert rep["score.reference"]["kld_mean"] < 1e-3


def convert_random(hf: Path, out: Path, outtype: str = "f16") -> None:
    """convert_hf_to_gguf.py of the pinned tree on a model whose tokenizer was trained here: its
    pre-tokenizer hash is in no table, so it is declared GPT-2's (the same regex as the byte-level
    BPE it was trained with; the probe ids that scoring compares prove it)."""
    from silentzone.llama_tools import source_tree
    tree = source_tree()
    code = (f"import sys, runpy; sys.path[:0] = [{str(tree)!r}, {str(tree / 'gguf-py')!r}]\n"
            "import conversion.base as b\n"
            "for c in vars(b).values():\n"
            "    if isinstance(c, type) and 'get_vocab_base_pre' in vars(c):\n"
            "        c.get_vocab_base_pre = lambda self, tokenizer: 'gpt-2'\n"
            f"sys.argv = ['convert', {str(hf)!r}, '--outfile', {str(out)!r}, '--outtype', {outtype!r}]\n"
            f"runpy.run_path({str(tree / 'convert_hf_to_gguf.py')!r}, run_name='__main__')\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if p.returncode != 0 or not out.is_file():
        raise RuntimeError(f"convert_hf_to_gguf failed: {p.stderr.strip().splitlines()[-3:]}")


class GpuPeak:
    """Peak device memory in use (all processes' view: cudaMemGetInfo) while the block runs,
    sampled every 5 ms: llama.cpp's allocations are invisible to torch's own counters."""

    def __init__(self, device: str):
        self.on = device == "cuda"
        self.peak = 0

    def __enter__(self):
        if self.on:
            self.stop = False
            self.t = threading.Thread(target=self._poll, daemon=True)
            self.t.start()
        return self

    def _poll(self):
        while not self.stop:
            free, total = torch.cuda.mem_get_info()
            self.peak = max(self.peak, total - free)
            time.sleep(0.005)

    def __exit__(self, *exc):
        if self.on:
            self.stop = True
            self.t.join()

    def gib(self):
        return round(self.peak / 2**30, 2) if self.on else None


def decode_only(llm, ids, start: int) -> None:
    """The llama.cpp forward alone: the window decoded from an empty cache, logits of positions >=
    start computed into llama.cpp's own host buffer and left there (llama_logits without its copy
    out). The floor any scorer of llama.cpp logits pays; `bare` in the report adds the copy into a
    fresh numpy array per window, as window_logits returns it."""
    ids = [int(i) for i in ids]
    llm.reset()
    llm._ctx.kv_cache_clear()
    b, nb = llm._batch.batch, llm.n_batch
    for i in range(0, len(ids), nb):
        k = min(nb, len(ids) - i)
        b.n_tokens = k
        for j in range(k):
            b.token[j], b.pos[j], b.n_seq_id[j] = ids[i + j], i + j, 1
            b.seq_id[j][0] = 0
            b.logits[j] = (i + j) >= start
        llm._ctx.decode(llm._batch)
    llm._ctx.get_logits()  # the last decode's outputs are in host memory before this returns
    llm.n_tokens = 0


def _perplexity_kld(out: str) -> dict:
    """Mean KLD, its top-1 agreement ('Same top p') and the per-pass time from llama-perplexity."""
    r = {}
    m = re.search(r"Mean\s+KLD:\s+([-\d.e+]+)", out)
    if m:
        r["kld_mean"] = float(m.group(1))
    m = re.search(r"Same top p:\s+([\d.]+)", out)
    if m:
        r["top1"] = float(m.group(1)) / 100
    m = re.search(r"([\d.]+) seconds per pass", out)
    if m:
        r["s_per_pass"] = float(m.group(1))
    return r


def run_llamacpp(device: str, size: str, tmp_path_factory) -> dict:
    from silentzone import llama_tools
    from silentzone.config import load
    from silentzone.fidelity.capture import capture, model_bos, model_tokenize, open_scorer, window_logits
    from silentzone.fidelity.corpora import corpus_text
    from silentzone.fidelity.kernels import summarize
    from silentzone.fidelity.score import score_store
    from silentzone.fidelity.store import Store, make_windows
    from silentzone.models import Reference
    from silentzone.quantize import make_quant

    z = SHAPES[size]
    ctx = z["ctx"] if size == "toy" else CTX
    work = tmp_path_factory.mktemp(f"llama-{device}")
    path = Path(os.environ.get("SILENTZONE_LLAMA_REPORT", work.parent / f"llamacpp_report_{device}.json"))
    rep = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
           "llama_cpp_python": llama_cpp.__version__, "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload())}
    errors = []

    def put(key, value):
        rep[key] = value
        path.write_text(json.dumps(rep, indent=2, default=str))
        print(f"[llama.cpp {device}] {key}: {json.dumps(value, default=str)[:500]}", flush=True)

    def step(name, fn):
        t0 = time.perf_counter()
        try:
            with GpuPeak(device) as g:
                out = fn()
            put(name, out)
            put(f"{name}.wall_s", round(time.perf_counter() - t0, 2))
            put(f"{name}.gpu_peak_gib", g.gib())
            return out
        except Exception as e:  # noqa: BLE001 - recorded; the test fails at the end
            import traceback
            traceback.print_exc()
            errors.append(f"{name}: {type(e).__name__}: {e}")
            put(f"{name}.error", f"{type(e).__name__}: {str(e)[:800]}")
            return None

    text = corpus_text("wiki")

    # -- a random Qwen3-shaped dense model, its HF directory and its F16 GGUF ----------------------
    hf = work / "ref" / "hf-bf16"
    f16 = work / "ref" / "model-f16.gguf"

    def build():
        torch.manual_seed(0)
        cfg = _config("dense", z)
        from transformers import AutoModelForCausalLM
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
        with torch.no_grad():  # random init gives near-uniform outputs: widen the logits a little
            for name, p in model.named_parameters():
                if p.dim() >= 2 and "embed" not in name:
                    p.mul_(2.0)
        model.save_pretrained(hf)
        _tokenizer(text, z["vocab"]).save_pretrained(hf)
        return {"arch": cfg.model_type, "params_b": round(sum(p.numel() for p in model.parameters()) / 1e9, 3),
                "vocab": z["vocab"], "layers": cfg.num_hidden_layers, "hidden": cfg.hidden_size}
    step("build", build)
    step("convert_f16", lambda: convert_random(hf, f16, "f16") or {"gb": round(f16.stat().st_size / 1e9, 2)})
    ref = Reference(spec=str(hf), name="qwen-shape-dense", root=hf.parent, hf_dir=hf, gguf=f16, dtype="bfloat16")

    # -- quants with llama-quantize, checked against the HF reference on the device --------------
    cfg_yaml = work / "study.yaml"
    cfg_yaml.write_text(f"""
study: llama-{device}
description: random Qwen-shaped model, GGUF quants in llama.cpp
reference: {{model: {hf}, dtype: bfloat16}}
corpora: [wiki]
contexts: [{ctx}]
tasks: [sciq]
quants:
  - {{id: Q8_0, method: gguf, type: Q8_0}}
  - {{id: Q4_K_M, method: gguf, type: Q4_K_M}}
profiles:
  gpu: {{n_items: 10, corpus_tokens: {z["tokens"]}, calib_samples: 2}}
""")
    study = load(cfg_yaml, "gpu")
    quants = {}
    for q in study.quants:
        def mk(q=q):
            r = make_quant(study, q, ref, root=work / "quants", device=device)
            keep = ("status", "reason", "tensor_types", "bpw", "bytes", "wall_s", "check_kld", "artifact")
            return {k: r.get(k) for k in keep}
        r = step(f"quant.{q.id}", mk)
        if r and r["status"] == "ok":
            quants[q.id] = Path(r["artifact"]) / "model.gguf"
        elif r:
            errors.append(f"quant {q.id}: {r['reason']}")

    # -- the corpus as llama-perplexity reads it, and the F16 reference captured on the device ---
    text_file = work / "wiki.txt"
    body = text[:400000].rstrip("\n")
    text_file.write_text(body + "\n")  # llama-perplexity -f drops one trailing newline
    store_path = work / "store"
    m_ref = open_scorer(f16, n_ctx=ctx, device=device, name="reference")
    ids = model_tokenize(m_ref, body)
    windows = make_windows(ids[: study.profile.corpus_tokens], ctx, model_bos(m_ref))
    n_win = len(windows)
    step("capture", lambda: {"windows": n_win, "ctx": ctx,
                             "store_mib": round(capture(m_ref, ids[: study.profile.corpus_tokens], ctx,
                                                        store_path).nbytes("compact") / 2**20, 1)})
    del m_ref

    # -- scoring vs a bare llama.cpp forward, per candidate -----------------------------------
    ours = {}
    for name, gg in {"reference": f16, **quants}.items():
        def sc(name=name, gg=gg):
            st = Store(store_path)
            m = open_scorer(gg, n_ctx=ctx, device=device, name=name)
            w = st.windows()

            def bare():
                for i in range(st.n_windows):
                    window_logits(m, w[i:i + 1], st.first)

            def decode():
                for i in range(st.n_windows):
                    decode_only(m.llm, w[i], st.first)
            window_logits(m, w[:1], st.first)          # warm-up
            score_store(m, st, batch=1, label=name)    # warm-up (torch.compile of the metrics)
            t0 = time.perf_counter()
            bare()
            t_bare = time.perf_counter() - t0
            t0 = time.perf_counter()
            decode()
            t_decode = time.perf_counter() - t0
            t0 = time.perf_counter()
            per_token = score_store(m, st, batch=1, label=name)
            if device == "cuda":
                torch.cuda.synchronize()
            t_score = time.perf_counter() - t0
            s = summarize(per_token)
            n = s["n_tokens"]
            return {"n_tokens": n, "bare_tok_s": round(n / t_bare), "decode_tok_s": round(n / t_decode),
                    "score_tok_s": round(n / t_score), "ratio": round(t_bare / t_score, 3),
                    "ratio_vs_decode": round(t_decode / t_score, 3), "kld_mean": s["kld_mean"],
                    "kld_p99": s["kld_p99"], "top1": s["top1_agreement"]}
        r = step(f"score.{name}", sc)
        if r is not None:
            ours[name] = r
            assert np.isfinite(r["kld_mean"])

    # -- llama-perplexity --kl-divergence on the same windows, on the same device -------------
    base = work / "base.kld"
    ngl = ["-ngl", "999"] if device == "cuda" else ["-ngl", "0"]
    common = ["-c", str(ctx), "--chunks", str(n_win), "-f", str(text_file), *ngl]

    def ppl_base():
        t0 = time.perf_counter()
        p = llama_tools.run("llama-perplexity", "-m", str(f16), *common, "--kl-divergence-base", str(base))
        return {"wall_s": round(time.perf_counter() - t0, 2), "base_gb": round(base.stat().st_size / 1e9, 2),
                **_perplexity_kld(p.stdout + p.stderr)}
    step("perplexity.base", ppl_base)
    for name, gg in quants.items():
        def ppl(gg=gg):
            t0 = time.perf_counter()
            p = llama_tools.run("llama-perplexity", "-m", str(gg), *common, "--kl-divergence-base", str(base),
                                "--kl-divergence")
            wall = time.perf_counter() - t0
            r = _perplexity_kld(p.stdout + p.stderr)
            n = n_win * (ctx - 1 - ctx // 2)
            return {"wall_s": round(wall, 2), "tok_s_incl_load": round(n / wall), **r}
        r = step(f"perplexity.{name}", ppl)
        if r is not None and name in ours and "kld_mean" in r:
            a, b = ours[name]["kld_mean"], r["kld_mean"]
            put(f"agree.{name}", {"ours": a, "llama_perplexity": b, "rel": round(a / b - 1, 4) if b else None})
            # compact store (k=128, m=64) vs llama-perplexity's uint16 base file: a few % at most
            assert abs(a - b) <= 0.05 * abs(b) + 2e-3, (name, a, b)

    put("errors", errors)
    assert not errors, errors
    return rep
