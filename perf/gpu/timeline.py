"""Where the GPU idles during score_store: one run under torch.profiler (chrome trace), kernel
intervals of every stream merged, the idle gaps listed with the CPU-side calls that were running.

    python3 perf/gpu/timeline.py --out DIR

Same model and store as profile_score.py (dense Qwen3 shape, 1.3B, vocabulary 151,936, bf16,
32 windows x 1,024, 8 per call). Writes DIR/timeline.json: wall, union of kernel time, idle time,
the 20 longest gaps (start offset, length, what the host was doing), for `bare` and `score`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from profile_score import BATCH, TOKENS, dense_model_and_store  # same model and store as the profile


def _analyse(trace: dict) -> dict:
    ev = trace["traceEvents"]
    kern = sorted((e["ts"], e["ts"] + e["dur"], e.get("args", {}).get("stream"), e["name"]) for e in ev
                  if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset") and "dur" in e)
    host = [(e["ts"], e["ts"] + e.get("dur", 0), e["name"]) for e in ev
            if e.get("cat") in ("cuda_runtime", "cuda_driver", "cpu_op", "python_function") and "dur" in e]
    t0 = min(k[0] for k in kern)
    t1 = max(k[1] for k in kern)
    busy, gaps, end = 0.0, [], None
    for s, e, _, _ in kern:
        if end is None or s > end:
            if end is not None:
                gaps.append((end, s))
            busy += e - s
            end = e
        else:
            busy += max(0.0, e - end)
            end = max(end, e)
    streams = sorted({k[2] for k in kern if k[2] is not None})
    per_stream = {str(st): round(sum(k[1] - k[0] for k in kern if k[2] == st) / 1e3, 3) for st in streams}
    top = sorted(gaps, key=lambda g: g[0] - g[1])[:20]
    rows = []
    for a, b in top:
        during = sorted({h[2] for h in host if h[0] < b and h[1] > a and h[1] - h[0] < 5e5})
        rows.append({"at_ms": round((a - t0) / 1e3, 3), "gap_ms": round((b - a) / 1e3, 3),
                     "host_calls": [d for d in during if d.startswith(("cuda", "aten::", "triton"))][:12]})
    return {"span_ms": round((t1 - t0) / 1e3, 3), "kernel_union_ms": round(busy / 1e3, 3),
            "idle_ms": round((t1 - t0 - busy) / 1e3, 3), "n_gaps": len(gaps),
            "idle_in_gaps_over_100us_ms": round(sum(b - a for a, b in gaps if b - a > 100) / 1e3, 3),
            "kernel_ms_per_stream": per_stream, "longest_gaps": rows}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    from torch.profiler import ProfilerActivity, profile
    from silentzone.fidelity.capture import window_logits
    from silentzone.fidelity.score import score_store
    from silentzone.fidelity.store import Store
    m, st = dense_model_and_store(TOKENS, Path("/tmp/timeline_store"))
    tmp = st.path
    windows = st.windows()

    def bare():
        for j in range(0, st.n_windows, BATCH):
            window_logits(m, windows[j:j + BATCH], st.first)

    def score():
        score_store(m, Store(tmp), batch=BATCH)

    res = {}
    for name, fn in (("bare", bare), ("score", score)):
        fn()
        fn()  # warm: compile, allocator
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            t = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            wall = time.perf_counter() - t
        path = a.out / f"trace_{name}.json"
        prof.export_chrome_trace(str(path))
        res[name] = {"wall_ms": round(wall * 1e3, 3), **_analyse(json.loads(path.read_text()))}
        path.unlink()
    (a.out / "timeline.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
