"""Peak RSS of a capture plus a scoring pass over n corpus tokens; run in a fresh process by
test_fidelity_memory.py so that each size gets its own peak:

    python tests/fidelity/mem_probe.py REFERENCE CANDIDATE TOKENIZER_GGUF N_TOKENS CTX OUT_DIR

prints one JSON line {"n_tokens", "n_windows", "peak_rss_mb", "kld_mean"}.
"""

from __future__ import annotations

import json
import resource
import sys


def main(reference: str, candidate: str, gguf: str, n_tokens: int, ctx: int, out: str) -> dict:
    from silentzone.fidelity.capture import capture, open_scorer
    from silentzone.fidelity.corpora import corpus_tokens
    from silentzone.fidelity.kernels import summarize
    from silentzone.fidelity.score import score_store
    ids, _ = corpus_tokens(gguf, "wiki", n_tokens)
    st = capture(reference, ids, ctx, out, kinds=("compact",), threads=2)
    m = open_scorer(candidate, n_ctx=ctx, threads=2)
    s = summarize(score_store(m, st, "compact"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"n_tokens": n_tokens, "n_windows": st.n_windows, "peak_rss_mb": peak, "kld_mean": s["kld_mean"]}


if __name__ == "__main__":
    a = sys.argv[1:]
    print(json.dumps(main(a[0], a[1], a[2], int(a[3]), int(a[4]), a[5])))
