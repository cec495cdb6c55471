"""Target 1: scoring a quant against the stored reference costs at most 1.10x a bare forward pass.

score = `score_store(m, store, "compact")`: the candidate's forward pass over every window, reading
the reference store from disk, and every per-token metric; bare = the same `window_logits` calls
(forward pass plus getting the logits of the scored positions out of the backend) and nothing else.
Both run on the same quant, tokens and backend, repetitions interleaved; the ratio is the median of
neighbouring pairs. Backends: llama.cpp (a GGUF quant) and transformers (the float32 HF reference,
the fastest forward there is, so the hardest case; `--extra bnb-int8` adds cached study quants).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

TARGET = 1.10


def make_store(ref_path, ids, ctx: int, out: Path, kinds=("compact",)):
    from silentzone.fidelity.capture import capture
    return capture(ref_path, ids, ctx, out, kinds=kinds, threads=C.THREADS)


def measure(model, store, reps: int) -> dict:
    from silentzone.fidelity.capture import window_logits
    from silentzone.fidelity.score import score_store
    windows = store.windows()
    timings = {}

    def bare():
        for i in range(store.n_windows):
            window_logits(model, windows[i:i + 1], store.first)

    def score():
        score_store(model, store, "compact", timings=timings)

    t = C.interleave({"bare": bare, "score": score}, reps=reps)
    n = store.n_windows * (store.ctx - 1 - store.first)
    return {"ratio": C.ratio(t, "score", "bare"), "bare_s": C.med(t["bare"]), "score_s": C.med(t["score"]),
            "scored_tokens": n, "times": t, "forward_s_last": timings.get("forward_s"),
            "metrics_s_last": timings.get("metrics_s")}


def main() -> None:
    a = C.args(__doc__, tokens=1024, ctx=256, reps=5, gguf="Q4_K_M", extra="")
    from silentzone.fidelity.capture import open_scorer
    work = C.work_dir("scoring_overhead")
    cases = []
    if a.quick:  # two tiny random Llamas (transformers only): checks the script, not the speed
        ref_dir, cand_dir = C.tiny_models(work)
        ids = C.corpus_ids(512)
        store = make_store(ref_dir, ids, 64, work / "store-quick")
        cases.append(("transformers", "tiny random Llama", cand_dir, store))
        reps = 2
    else:
        ref = C.reference()
        ids = C.corpus_ids(a.tokens)
        store = make_store(ref.gguf, ids, a.ctx, work / f"store-{a.tokens}-{a.ctx}")
        cases.append(("llama.cpp", a.gguf, C.gguf_quant(a.gguf, work), store))
        cases.append(("transformers", "hf-f32 (reference)", ref.hf_dir, store))
        for q in filter(None, a.extra.split(",")):  # e.g. --extra bnb-int8 (a cached study quant)
            art = C.cached_artifact(q)
            if art is None:
                print(f"  {q}: no cached artifact; skipped")
                continue
            cases.append(("transformers" if not (art / "model.gguf").is_file() else "llama.cpp", q, art, store))
        reps = a.reps
    rows, extra = [], {}
    for backend, label, path, st in cases:
        m = open_scorer(path, n_ctx=st.ctx, threads=C.THREADS, name=label)
        r = measure(m, st, reps)
        del m
        extra[f"{backend}/{label}"] = r
        rows.append(C.row(f"scoring / bare forward, {backend} {label}", r["ratio"], TARGET, "<=", "x",
                          f"{r['scored_tokens']} scored tokens, ctx {st.ctx}: bare {r['bare_s']:.2f} s, "
                          f"score {r['score_s']:.2f} s (median of {reps}; inside the last score: forward "
                          f"{r['forward_s_last']:.2f} s, store + metrics {r['metrics_s_last']:.2f} s)"))
        print(C.format_row(rows[-1]), flush=True)
    C.write("scoring_overhead", "Scoring overhead (target 1)", rows, out_dir=a.out,
            extra={"cases": extra})


if __name__ == "__main__":
    main()
