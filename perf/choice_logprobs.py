"""The host side of scoring a choice: `silentzone.bench.mc.continuation_logprobs` (the token's log-prob
and its gap to the best other token, float64, taken only at those cells) against the whole float64
log-softmax [L, V] it replaced, on the same rows, side by side.

On a GPU the bench's decode and KLD run on the card, but this step runs on the host for every choice
of every item: a cProfile of a PIQA bench on the 2-core development CPU (another job beside it) put
4.1 of 90 s in it, 9 ms per choice under the profiler, where one GPU job spends about 40 ms per PIQA
item in all (docs/performance.md). Measured here: 1.84x, 3.0 -> 1.6 ms per choice. The rows are the
float reference's own (llama.cpp, real items of PIQA and SciQ); the two must give the same bits,
else the script fails. --quick: random rows of a small vocabulary.

    .venv/bin/python perf/choice_logprobs.py [--items 12] [--reps 5] [--quick]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def textbook(ctx_logits, cont_logits, cont):
    """The whole float64 log-softmax of the rows, then the token's and the best other token's."""
    rows = np.concatenate([ctx_logits[-1:], cont_logits[: len(cont) - 1]], 0).astype(np.float64)
    m = rows.max(-1, keepdims=True)
    lp = rows - m - np.log(np.exp(rows - m).sum(-1, keepdims=True))
    idx = np.arange(len(cont))
    tok = lp[idx, cont]
    other = lp.copy()
    other[idx, cont] = -np.inf
    return tok, tok - other.max(-1)


def main() -> None:
    a = C.args(__doc__, items=12, reps=5)
    from silentzone.bench import mc
    if a.quick:
        rng = np.random.default_rng(0)
        cases = [(rng.normal(0, 3, (4, 500)).astype(np.float32), rng.normal(0, 3, (3, 500)).astype(np.float32),
                  list(rng.integers(0, 500, 3)))]
        reps = 2
    else:
        from silentzone.backends import open_model
        from silentzone.bench import tasks
        from silentzone.bench.run import Encoder, prepare
        ref = C.reference()
        enc = Encoder(ref.tokenizer())
        model = open_model(ref.gguf, threads=1, name="reference")
        cases = []
        for name in ("piqa", "sciq"):
            t = tasks.get(name)
            for p in prepare(t, t.items(a.items), enc):
                ctx, outs = mc.shared_logits(model, p["ctxs"][0], p["conts"])
                cases += [(ctx, o, c) for o, c in zip(outs, p["conts"])]
        reps = a.reps
    res = {}

    def run(f, key):
        def g():
            res[key] = [f(*case) for case in cases]
        return g
    t = C.interleave({"full": run(textbook, "full"), "taken": run(mc.continuation_logprobs, "taken")}, reps=reps)
    for (x0, x1), (y0, y1) in zip(res["full"], res["taken"]):
        if not (np.array_equal(x0, y0) and np.array_equal(x1, y1)):
            raise AssertionError("continuation_logprobs differs from the whole log-softmax's bits")
    speed = C.ratio(t, "full", "taken")
    vocab = cases[0][0].shape[1]
    C.write("choice_logprobs", "choice log-probs on the host: taken cells vs the whole log-softmax",
            [C.row("speedup", speed, detail=f"{len(cases)} choices, vocabulary {vocab}, bits equal"),
             C.row("taken_ms_per_choice", 1e3 * C.med(t["taken"]) / len(cases), unit=" ms"),
             C.row("full_ms_per_choice", 1e3 * C.med(t["full"]) / len(cases), unit=" ms")], out_dir=a.out)


if __name__ == "__main__":
    main()
