"""Target 4: shared-context multiple-choice scoring gives >= 3x the items per second of scoring each
choice with its own full forward pass, with identical per-item results.

shared = `silentzone.bench.mc.score_mc(..., shared=True, batched=True)` (the opt-in batched mode, see
silentzone/bench/mc.py for why it is not the default): the context once, shared by every choice
(llama.cpp: one KV stream per choice, the context's cells copied into each, all continuations in
one decode call; transformers: one forward of context + all choices under a tree mask); full =
`shared=False`: one forward pass of context + choice per choice. Both on the
float reference, both backends, the same prepared items; rounds interleaved. Per item, pred,
correct and correct_norm must be equal and the log-likelihoods equal to 1e-3 nats (float sums in
another order), else the script fails. SciQ (4 choices after a support paragraph) carries the
target; ARC-Easy (4 choices after a one-line question: little context to share) is reported beside.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

TARGET = 3.0
KEYS = ("pred", "correct", "correct_norm")


def check_same(a: list[dict], b: list[dict]) -> float:
    """Max |ll difference| of two runs over the same items; raises if any decision differs."""
    worst = 0.0
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if [x[k] for k in KEYS] != [y[k] for k in KEYS]:
            raise AssertionError(f"item {i}: shared {[x[k] for k in KEYS]} != full {[y[k] for k in KEYS]}")
        d = float(np.max(np.abs(np.asarray(x["ll"]) - np.asarray(y["ll"]))))
        if d > 1e-3:
            raise AssertionError(f"item {i}: log-likelihoods differ by {d:.2e} nats")
        worst = max(worst, d)
    return worst


def measure(model, task, prep, reps: int) -> dict:
    from silentzone.bench import mc
    res = {}

    def run(shared):
        def f():
            res[shared] = [mc.score_mc(model, p["ctxs"][0], p["conts"], p["item"].gold, p["n_chars"],
                                       shared=shared, batched=True) for p in prep]
        return f

    t = C.interleave({"shared": run(True), "full": run(False)}, reps=reps)
    dll = check_same(res[True], res[False])
    n_tok = [len(p["ctxs"][0]) for p in prep]
    return {"speedup": C.ratio(t, "full", "shared"), "shared_items_s": len(prep) / C.med(t["shared"]),
            "full_items_s": len(prep) / C.med(t["full"]), "max_abs_dll": dll,
            "mean_ctx_tokens": float(np.mean(n_tok)),
            "mean_choices": float(np.mean([len(p["conts"]) for p in prep]))}


def main() -> None:
    a = C.args(__doc__, items=8, reps=3)
    from silentzone.backends import open_model
    from silentzone.bench import tasks
    from silentzone.bench.run import Encoder, prepare
    ref = C.reference()
    enc = Encoder(ref.tokenizer())
    if a.quick:
        work = C.work_dir("mc_scoring")
        models = [("transformers", C.tiny_models(work)[0])]
        task_names, n, reps = ("sciq",), 2, 1
    else:
        models = [("llama.cpp", ref.gguf), ("transformers", ref.hf_dir)]
        task_names, n, reps = ("sciq", "arc_easy"), a.items, a.reps
    preps = {}
    for name in task_names:
        t = tasks.get(name)
        preps[name] = [p for p in prepare(t, t.items(n), enc) if all(c == p["ctxs"][0] for c in p["ctxs"])]
    rows, extra = [], {}
    for backend, path in models:
        m = open_model(path, threads=C.THREADS, name=backend)
        for name, prep in preps.items():
            r = measure(m, tasks.get(name), prep, reps)
            extra[f"{backend}/{name}"] = r
            target = name == "sciq"
            rows.append(C.row(f"shared / per-choice items/s, {backend} {name}", r["speedup"],
                              TARGET if target else None, ">=" if target else None, "x",
                              f"{len(prep)} items, {r['mean_choices']:.1f} choices, context "
                              f"{r['mean_ctx_tokens']:.0f} tokens: {r['shared_items_s']:.2f} vs "
                              f"{r['full_items_s']:.2f} items/s; identical decisions, max |dll| "
                              f"{r['max_abs_dll']:.1e}"))
            print(C.format_row(rows[-1]), flush=True)
        del m
    C.write("mc_scoring", "Multiple-choice scoring (target 4)", rows, out_dir=a.out, extra={"cases": extra})


if __name__ == "__main__":
    main()
