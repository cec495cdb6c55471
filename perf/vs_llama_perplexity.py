"""Target 3: our KLD workflow for a GGUF pair takes no longer than llama.cpp's perplexity tool.

ours   = one fresh process: open the reference, tokenize the text, capture the compact reference
         store (fidelity.capture), open the candidate, score it against the store (score_store)
         and summarise: Python start-up and imports included (the study's path: a store that
         every quant of a cohort is scored against);
cli    = `silentzone kld --reference R --candidate C --text F --ctx N --json` (an info row): the
         ad hoc pair command, both models window by window, no store;
theirs = `llama-perplexity --kl-divergence-base BASE` on the reference, then
         `llama-perplexity --kl-divergence-base BASE --kl-divergence` on the candidate.
Same text file, context, batch and threads; the store and the base file are deleted before every
repetition; repetitions interleaved. Ratio = ours / theirs (median of neighbouring pairs).

llama-perplexity turns flash attention on by default ("auto": on for the CPU); llama-cpp-python,
which `ours` runs, leaves it off. The tool is also timed with `-fa off` (an info row), and ours
with SILENTZONE_FLASH_ATTN=1 against the tool's default (another info row): same attention kernels
on both sides, so those ratios are the cost of our workflow itself.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

TARGET = 1.0


def ours(ref: str, cand: str, text: str, ctx: int, store: str, threads: int) -> dict:
    """The workflow timed as `ours` (run in its own process by main)."""
    from silentzone.fidelity.capture import capture, model_tokenize, open_scorer
    from silentzone.fidelity.kernels import summarize
    from silentzone.fidelity.score import score_store
    R = open_scorer(ref, n_ctx=ctx, threads=threads, name="reference")
    ids = model_tokenize(R, Path(text).read_text(encoding="utf-8")[:-1])
    st = capture(R, ids, ctx, store, kinds=("compact",))
    del R
    m = open_scorer(cand, n_ctx=ctx, threads=threads, name=Path(cand).name)
    s = summarize(score_store(m, st, "compact"))
    return {"kld_mean": s["kld_mean"], "top1": s["top1_agreement"], "n_tokens": s["n_tokens"]}


def theirs(ref: Path, cand: Path, text: Path, ctx: int, base: Path, fa: str = "auto") -> dict:
    from silentzone.llama_tools import run
    common = ["-f", str(text), "-c", str(ctx), "-b", str(ctx), "--kl-divergence-base", str(base),
              "-fa", fa]
    run("llama-perplexity", "-m", str(ref), *common, threads=C.THREADS)
    p = run("llama-perplexity", "-m", str(cand), *common, "--kl-divergence", threads=C.THREADS)
    log = p.stdout + p.stderr
    num = r"([-+]?[0-9.]+)"
    kld = re.search(rf"Mean    KLD:\s+{num}", log)
    top = re.search(rf"Same top p:\s+{num}", log)
    return {"kld_mean": float(kld.group(1)) if kld else float("nan"),
            "top1": float(top.group(1)) / 100 if top else float("nan")}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--ours":
        r, c, t, ctx, store, threads = sys.argv[2:8]
        print(json.dumps(ours(r, c, t, int(ctx), store, int(threads))))
        return
    a = C.args(__doc__, chars=9000, ctx=512, reps=3, gguf="Q4_K_M")
    sys.path.insert(0, str(C.PERF))
    from store_size import text_file
    work = C.work_dir("vs_llama_perplexity")
    ref = C.reference()
    chars, ctx, reps = (1500, 64, 1) if a.quick else (a.chars, a.ctx, a.reps)
    tf, _ = text_file(work, chars)
    cand = C.gguf_quant(a.gguf, work)
    store, base = work / "store", work / "base.kld"
    got = {}

    def run_ours(fa=False):
        def f():
            shutil.rmtree(store, ignore_errors=True)
            env = {**os.environ, "SILENTZONE_FLASH_ATTN": "1" if fa else "0"}
            p = subprocess.run([sys.executable, __file__, "--ours", str(ref.gguf), str(cand), str(tf),
                                str(ctx), str(store), str(C.THREADS)], capture_output=True, text=True,
                               env=env)
            if p.returncode != 0:
                raise RuntimeError(f"ours failed: {p.stderr[-2000:]}")
            got["ours_fa" if fa else "ours"] = json.loads(p.stdout.strip().splitlines()[-1])
        return f

    def run_cli():
        p = subprocess.run([sys.executable, "-m", "silentzone.cli", "kld", "--reference", str(ref.gguf),
                            "--candidate", str(cand), "--text", str(tf), "--ctx", str(ctx),
                            "--threads", str(C.THREADS), "--json"], capture_output=True, text=True,
                           env={**os.environ, "SILENTZONE_FLASH_ATTN": "0"})
        if p.returncode != 0:
            raise RuntimeError(f"silentzone kld failed: {p.stderr[-2000:]}")
        got["cli"] = json.loads(p.stdout.strip().splitlines()[-1])

    def run_theirs(fa):
        def f():
            base.unlink(missing_ok=True)
            got[f"theirs-{fa}"] = theirs(ref.gguf, cand, tf, ctx, base, fa)
        return f

    # no warm-up round: the GGUF files are in the page cache from making the quant and the text
    t = C.interleave({"ours": run_ours(), "theirs": run_theirs("auto"), "theirs_nofa": run_theirs("off"),
                      "ours_fa": run_ours(fa=True), "cli": run_cli}, reps=reps, warmup=0)
    o, th = got["ours"], got["theirs-auto"]
    r = C.ratio(t, "ours", "theirs")
    r_nofa = C.ratio(t, "ours", "theirs_nofa")
    rows = [C.row(f"ours / llama-perplexity, reference F32 + {a.gguf}", r, TARGET, "<=", "x",
                  f"{o['n_tokens']} scored tokens, ctx {ctx}, {C.THREADS} threads: ours "
                  f"{C.med(t['ours']):.1f} s, theirs {C.med(t['theirs']):.1f} s (median of {reps}); "
                  f"mean KLD ours {o['kld_mean']:.5f} vs theirs {th['kld_mean']:.5f}, top-1 "
                  f"{o['top1']:.4f} vs {th['top1']:.4f}"),
            C.row(f"ours / llama-perplexity -fa off, reference F32 + {a.gguf}", r_nofa, unit="x",
                  detail=f"theirs {C.med(t['theirs_nofa']):.1f} s; mean KLD "
                         f"{got['theirs-off']['kld_mean']:.5f} (flash attention off on both sides)"),
            C.row(f"ours with SILENTZONE_FLASH_ATTN=1 / llama-perplexity, reference F32 + {a.gguf}",
                  C.ratio(t, "ours_fa", "theirs"), unit="x",
                  detail=f"ours {C.med(t['ours_fa']):.1f} s; mean KLD {got['ours_fa']['kld_mean']:.5f} vs "
                         f"theirs {th['kld_mean']:.5f} (flash attention on both sides)"),
            C.row(f"`silentzone kld` (no store) / llama-perplexity -fa off, reference F32 + {a.gguf}",
                  C.ratio(t, "cli", "theirs_nofa"), unit="x",
                  detail=f"cli {C.med(t['cli']):.1f} s; mean KLD {got['cli']['kld_mean']:.5f} (float32 "
                         f"reference logits, flash attention off on both sides)")]
    C.write("vs_llama_perplexity", "Against llama-perplexity (target 3)", rows, out_dir=a.out,
            extra={"times": t, "ours": o, "theirs": th, "theirs_nofa": got["theirs-off"],
                   "ours_fa": got["ours_fa"], "cli": got["cli"]})


if __name__ == "__main__":
    main()
