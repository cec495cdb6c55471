"""Target 6: peak RSS of reference capture and of scoring does not grow with the corpus.

Each (stage, size) runs in a fresh process that reports its own peak RSS (ru_maxrss): capture of
the F32 reference (llama.cpp) into a compact store, then scoring a GGUF quant against it, over N
and 10 N tokens of the shipped wiki text at one context. Ratio = peak at 10 N / peak at N, per
stage (1.0 = bounded; the target allows 10% for allocator noise). `capture` pins glibc's mmap
threshold at 1 MiB itself (capture.pin_mmap_threshold: large temporaries go back to the system when
freed; before that the heap fragmented and the ratio was 1.24). The info row `capture-mmap` sets the
same threshold through MALLOC_MMAP_THRESHOLD_ in the environment, as a cross-check.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

TARGET = 1.10


def probe(stage: str, ref: str, cand: str, n_tokens: int, ctx: int, store: str) -> dict:
    from silentzone.fidelity.capture import capture, open_scorer
    from silentzone.fidelity.corpora import corpus_tokens
    from silentzone.fidelity.kernels import summarize
    from silentzone.fidelity.score import score_store
    from silentzone.fidelity.store import Store
    out = {"stage": stage, "n_tokens": n_tokens}
    if stage == "capture":
        ids, _ = corpus_tokens(C.reference(), "wiki", n_tokens)
        st = capture(ref, ids, ctx, store, kinds=("compact",), threads=C.THREADS)
    else:
        st = Store(store)
        m = open_scorer(cand, n_ctx=ctx, threads=C.THREADS)
        out["kld_mean"] = summarize(score_store(m, st, "compact"))["kld_mean"]
    out["n_windows"] = st.n_windows
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--probe":
        s, r, c, n, ctx, store = sys.argv[2:8]
        print(json.dumps(probe(s, r, c, int(n), int(ctx), store)))
        return
    a = C.args(__doc__, tokens=1024, ctx=256, gguf="Q4_K_M")
    work = C.work_dir("memory")
    if a.quick:
        ref, cand = C.tiny_models(work)
        sizes, ctx = (256, 2560), 64
    else:
        ref, cand = C.reference().gguf, C.gguf_quant(a.gguf, work)
        sizes, ctx = (a.tokens, 10 * a.tokens), a.ctx
    res = {}
    pinned = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    for n in sizes:
        store = work / f"store-{n}-{ctx}"
        for stage, env in (("capture-mmap", pinned), ("capture", None), ("score", None)):
            if stage.startswith("capture"):
                shutil.rmtree(store, ignore_errors=True)
            p = subprocess.run([sys.executable, __file__, "--probe", stage.split("-")[0], str(ref), str(cand),
                                str(n), str(ctx), str(store)], capture_output=True, text=True, env=env)
            if p.returncode != 0:
                raise RuntimeError(f"{stage} {n}: {p.stderr[-2000:]}")
            res[stage, n] = {**json.loads(p.stdout.strip().splitlines()[-1]), "stage": stage}
    small, large = sizes
    rows = []
    for stage in ("capture", "score", "capture-mmap"):
        s, l_ = res[stage, small], res[stage, large]
        info = stage == "capture-mmap"
        rows.append(C.row(f"peak RSS at {large} / at {small} tokens, {stage}" +
                          (" (MALLOC_MMAP_THRESHOLD_=1 MiB)" if info else ""),
                          l_["peak_rss_mib"] / s["peak_rss_mib"], None if info else TARGET,
                          None if info else "<=", "x",
                          f"{s['peak_rss_mib']:.0f} MiB ({s['n_windows']} windows) vs "
                          f"{l_['peak_rss_mib']:.0f} MiB ({l_['n_windows']} windows), ctx {ctx}"))
    C.write("memory", "Peak memory vs corpus length (target 6)", rows, out_dir=a.out,
            extra={"probes": [v for v in res.values()]})


if __name__ == "__main__":
    main()
