"""Target 2: the compact reference store is >= 50x smaller than llama.cpp's KLD base file for the
same tokens and model, with mean KLD within 1% (relative) of the exact store's on every quant of a
cohort; the exact store is no larger than llama.cpp's file.

The same text is given to `llama-perplexity --kl-divergence-base` (its file) and to
`fidelity.capture` twice (an exact-only and a compact-only store, so each folder holds one kind);
sizes are whole folders: the per-window arrays, tokens.npy and meta.json. Then each quant is scored
against both stores (llama.cpp) and the mean KLDs compared.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

COHORT = ("Q8_0", "Q6_K", "Q4_K_M", "Q4_0", "Q2_K")


def text_file(work: Path, n_chars: int) -> tuple[Path, str]:
    """The shipped wiki text cut to n_chars, written with the trailing newline that llama-perplexity's
    -f drops (so both tokenize the same string)."""
    from silentzone.fidelity.corpora import corpus_text
    text = corpus_text("wiki")[:n_chars]
    p = work / f"wiki-{n_chars}.txt"
    p.write_text(text + "\n", encoding="utf-8")
    return p, text


def folder_bytes(d: Path) -> int:
    return sum(f.stat().st_size for f in Path(d).iterdir() if f.is_file())


def llama_base(ref_gguf: Path, text: Path, ctx: int, out: Path) -> Path:
    from silentzone.llama_tools import run
    run("llama-perplexity", "-m", str(ref_gguf), "-f", str(text), "-c", str(ctx), "-b", str(ctx),
        "--kl-divergence-base", str(out), threads=C.THREADS)
    return out


def main() -> None:
    a = C.args(__doc__, chars=9000, ctx=256)
    from silentzone.fidelity.capture import capture, open_scorer
    from silentzone.fidelity.corpora import tokenize_text
    from silentzone.fidelity.kernels import summarize
    from silentzone.fidelity.score import score_store
    from silentzone.fidelity.store import llama_base_bytes
    work = C.work_dir("store_size")
    ref = C.reference()
    chars, ctx, cohort = (1500, 64, ("Q8_0",)) if a.quick else (a.chars, a.ctx, COHORT)
    tf, text = text_file(work, chars)
    ids = tokenize_text(ref.gguf, text)
    stores = {}
    for kind in ("exact", "compact"):
        d = work / f"store-{chars}-{ctx}-{kind}"
        shutil.rmtree(d, ignore_errors=True)  # sizes of a fresh capture only
        stores[kind] = capture(ref.gguf, ids, ctx, d, kinds=(kind,), threads=C.THREADS)
    base = llama_base(ref.gguf, tf, ctx, work / f"base-{chars}-{ctx}.kld")
    st = stores["compact"]
    n_scored = st.n_windows * (ctx - 1 - st.first)
    b_llama = base.stat().st_size
    b_exact, b_compact = folder_bytes(stores["exact"].path), folder_bytes(st.path)
    formula = llama_base_bytes(st.n_vocab, ctx, st.n_windows)
    rows = [
        C.row("llama.cpp base file / compact store", b_llama / b_compact, 50, ">=", "x",
              f"{b_llama / 2**20:.1f} MiB vs {b_compact / 2**20:.2f} MiB for {n_scored} scored tokens "
              f"({st.n_windows} windows of {ctx}); {b_compact / n_scored:.0f} B/token"),
        C.row("exact store / llama.cpp base file", b_exact / b_llama, 1.0, "<=", "x",
              f"{b_exact} B vs {b_llama} B ({b_exact - b_llama:+d} B: per scored token 2 V + 4 B "
              f"vs 2 V + 8 B, less our headers and meta.json; store.llama_base_bytes predicts "
              f"{formula} B)"),
    ]
    per_quant = {}
    for q in cohort:
        m = open_scorer(C.gguf_quant(q, work), n_ctx=ctx, threads=C.THREADS, name=q)
        ex = summarize(score_store(m, stores["exact"], "exact"))["kld_mean"]
        co = summarize(score_store(m, st, "compact"))["kld_mean"]
        del m
        per_quant[q] = {"kld_mean_exact": ex, "kld_mean_compact": co, "rel_err": co / ex - 1}
        rows.append(C.row(f"|compact/exact - 1| of mean KLD, {q}", abs(co / ex - 1), 0.01, "<=", "",
                          f"exact {ex:.5f}, compact {co:.5f} ({co / ex - 1:+.3%})"))
    C.write("store_size", "Reference store size and accuracy (target 2)", rows, out_dir=a.out,
            extra={"bytes": {"llama_base": b_llama, "exact": b_exact, "compact": b_compact},
                   "n_scored": n_scored, "per_quant": per_quant})


if __name__ == "__main__":
    main()
