"""Issue 19, item 3: per-item benchmark scoring at >= 0.8 of a bare batched forward over the same tokens.

scoring = `silentzone.bench.run.score_pair` on one task's items, as the bench stage runs it: the
item's logits (shared context, every choice in one batched decode), the multiple-choice decision,
and the per-prompt KLD work (the reference: log-softmax and top-k of every row into the store; a
quant: its KLD against that store). bare = the engine's logits for the same tokens and nothing
else (`model.shared_logits(ctx, choices, batched=True)` per item). ratio = bare time / scoring
time, so 1.0 means the scoring adds nothing to the forward; the two are interleaved, and the same
items, model and threads serve both. On a GPU (`--device cuda`, llama.cpp built with CUDA) the
per-item [T, V] passes run on the GPU (`Model.metric_device`, used by `bench.run.score_pair`); on the CPU they share its
cores with the forward.

    python perf/item_scoring.py                    # SmolLM2 F32 reference + a Q4_0, 24 SciQ items
    python perf/item_scoring.py --device cuda      # on the lent GPU
    python perf/item_scoring.py --model embedded:gemma3-270m   # Gemma 3 (a 262k-token vocabulary)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

TARGET = 0.8


def main() -> None:
    a = C.args(__doc__, items=24, reps=3, device="cpu", task="sciq", k=1024, model=C.MODEL)
    C.MODEL = a.model  # the reference whose F32 GGUF and Q4_0 quant are timed (C.reference, C.gguf_quant)
    from silentzone.backends import open_model
    from silentzone.bench import tasks
    from silentzone.bench.kld import RefStore
    from silentzone.bench.run import Encoder, prepare, score_pair
    ref = C.reference()
    enc = Encoder(ref.tokenizer())
    work = C.work_dir("item_scoring")
    if a.quick:
        tiny = C.tiny_models(work)
        models = [("reference", tiny[0], None), ("quant", tiny[1], None)]
        n, reps = 2, 1
    else:
        models = [("reference", ref.gguf, "f32"), ("quant", C.gguf_quant("Q4_0", work), None)]
        n, reps = a.items, a.reps
    task = tasks.get(a.task)
    prep = prepare(task, task.items(n), enc)
    store_path = work / f"{a.task}-{n}.npz"
    rows, cases = [], {}
    store = None
    for role, path, kv in models:
        m = open_model(path, threads=C.THREADS, name=role, device=a.device, kv_cache=kv,
                       dtype="float32" if role == "reference" else None)
        is_ref = role == "reference"

        def scoring():
            nonlocal store
            s = RefStore(store_path, k=a.k) if is_ref else store
            score_pair(role, m, task, prep, enc, s, is_ref, progress=False, batched=True)
            if is_ref:
                store = s

        def bare():
            for p in prep:
                m.shared_logits(p["ctxs"][0], p["conts"], True)

        t = C.interleave({"scoring": scoring, "bare": bare}, reps=reps)
        r = C.ratio(t, "bare", "scoring")
        n_tok = sum(len(p["ctxs"][0]) + sum(len(c) for c in p["conts"]) for p in prep)
        cases[role] = {"ratio": r, "scoring_items_s": len(prep) / C.med(t["scoring"]),
                       "bare_items_s": len(prep) / C.med(t["bare"]), "tokens": n_tok,
                       "engine": m.attention(), "times": t}
        rows.append(C.row(f"bare forward / scoring time, {role} ({Path(str(path)).name}, {a.device})", r,
                          TARGET, ">=", "", f"{len(prep)} {a.task} items, {n_tok} tokens: scoring "
                          f"{cases[role]['scoring_items_s']:.2f} items/s, bare {cases[role]['bare_items_s']:.2f}; "
                          f"k {a.k}"))
        print(C.format_row(rows[-1]), flush=True)
        del m
    C.write("item_scoring", "Per-item scoring vs a bare batched forward (issue 19 item 3)", rows,
            out_dir=a.out, extra={"cases": cases, "device": a.device})


if __name__ == "__main__":
    main()
