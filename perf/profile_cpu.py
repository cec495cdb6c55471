"""Profiles of the CPU hot paths (not a ratio; for the closing note of issue 8): reference capture
(llama.cpp F32) and scoring against the compact store (llama.cpp GGUF quant; transformers float32),
each under cProfile, top functions by own time (torch and llama.cpp calls are leaves there).

    .venv/bin/python perf/profile_cpu.py [--tokens 1024 --ctx 256 --top 12]
"""

from __future__ import annotations

import cProfile
import io
import pstats
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def top(prof: cProfile.Profile, n: int) -> str:
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(n)
    return "\n".join(ln for ln in s.getvalue().splitlines() if ln.strip() and "Ordered by" not in ln)


def main() -> None:
    a = C.args(__doc__, tokens=1024, ctx=256, top=12, gguf="Q4_K_M")
    from silentzone.fidelity.capture import capture, open_scorer
    from silentzone.fidelity.score import score_store
    work = C.work_dir("profile")
    ref = C.reference()
    ids = C.corpus_ids(a.tokens)
    store = work / f"store-{a.tokens}-{a.ctx}"
    shutil.rmtree(store, ignore_errors=True)
    R = open_scorer(ref.gguf, n_ctx=a.ctx, threads=C.THREADS, name="reference")
    p = cProfile.Profile()
    p.runcall(capture, R, ids, a.ctx, store, kinds=("compact",))
    print(f"== capture (llama.cpp F32, compact store, {a.tokens} tokens, ctx {a.ctx})\n{top(p, a.top)}\n")
    del R
    from silentzone.fidelity.store import Store
    st = Store(store)
    for label, path in ((a.gguf, C.gguf_quant(a.gguf, work)), ("hf-f32", ref.hf_dir)):
        m = open_scorer(path, n_ctx=a.ctx, threads=C.THREADS, name=label)
        score_store(m, st, "compact")  # warm-up
        p = cProfile.Profile()
        p.runcall(score_store, m, st, "compact")
        print(f"== score_store ({m.kind} {label} vs compact store)\n{top(p, a.top)}\n")
        del m


if __name__ == "__main__":
    main()
