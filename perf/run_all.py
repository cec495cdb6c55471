"""Run every CPU performance script (`make perf`), print each ratio against its target with the machine,
versions and date, and write perf/cpu/results.json and the CPU block of docs/performance.md.

    .venv/bin/python perf/run_all.py [--only scoring_overhead,mc_scoring] [--quick]

Each script runs in its own process (fresh memory; one failing does not stop the others) and
writes perf/cpu/<name>.json. perf/e2e.py (end-to-end stage shares) runs too when it exists.
Only the text between the perf-cpu markers of docs/performance.md is rewritten.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

SCRIPTS = ("scoring_overhead", "store_size", "vs_llama_perplexity", "mc_scoring", "item_scoring", "memory",
           "quant_job")
BEGIN, END = "<!-- perf-cpu:begin -->", "<!-- perf-cpu:end -->"
HEADING = ("## CPU\n\nWritten by `make perf` (`perf/run_all.py`): ratios measured side by side in one "
           "run, repetitions interleaved, median of neighbouring pairs. Numbers: "
           "`perf/cpu/results.json`.\n\n")


def rewrite_block(path: Path, body: str) -> None:
    """Replace the text between the perf-cpu markers of `path` with `body`; without the markers,
    insert a CPU section holding them just above the `## GPU` heading (else at the end). Nothing
    outside the markers changes."""
    path = Path(path)
    text = path.read_text() if path.is_file() else "# Benchmarks of the pipeline\n\n"
    block = f"{BEGIN}\n{body.strip()}\n{END}"
    if text.count(BEGIN) == 1 and text.count(END) == 1 and text.index(BEGIN) < text.index(END):
        a, b = text.index(BEGIN), text.index(END) + len(END)
        new = text[:a] + block + text[b:]
    elif BEGIN in text or END in text:
        raise ValueError(f"{path}: perf-cpu markers are unbalanced; fix them by hand")
    else:
        lines = text.splitlines(keepends=True)
        at = next((i for i, ln in enumerate(lines) if ln.rstrip() == "## GPU"), None)
        section = HEADING + block + "\n\n"
        if at is None:
            new = text.rstrip("\n") + "\n\n" + section
        else:
            new = "".join(lines[:at]) + section + "".join(lines[at:])
    path.write_text(new)


# What each row measures and why a miss misses (no numbers here: those come from the result files).
NOTES = {
    "scoring_overhead": "bare = the same `window_logits` calls (forward plus the scored rows' logits "
                        "out of the backend); score = `score_store` against the compact store. The "
                        "time inside score_store spent outside the forward is shown beside it: the "
                        "rest of a ratio's distance from 1 is the forward's own run-to-run noise.",
    "store_size": "Sizes are whole store folders (per-window files, tokens.npy, meta.json). The "
                  "exact store keeps one record per scored token, float16 log-probs and the float32 "
                  "target log-prob (2 V + 4 bytes; llama.cpp keeps 2 V + 8); targets come from "
                  "tokens.npy and top-1 from the row's first maximum (store.py says how that stays "
                  "the float32 argmax). The 4 bytes per token pay for a 192-byte .npy header per "
                  "window and meta.json.",
    "vs_llama_perplexity": "llama-perplexity enables flash attention by default on the CPU; "
                           "llama-cpp-python (ours) does not, and turning it on changes logits, so "
                           "the tool is also timed with `-fa off` (info row).",
    "mc_scoring": "The first items of each task (no support paragraph: short contexts). With k "
                  "choices the ideal speed-up is k (context + choice) / (context + k choices). "
                  "Shared = the opt-in batched mode (SILENTZONE_MC_BATCHED=1; why it is not the "
                  "default: docs/performance.md, target 4). "
                  "llama.cpp: the context in one KV stream, copied to one stream per choice, then "
                  "all continuations in one decode call (padded to the longest): two passes over the "
                  "weights per item instead of k + 1, and the same logit bits as the per-choice "
                  "passes (max |dll| 0). transformers: one forward of context + all choices under a "
                  "tree-shaped 4D mask (1e-5 nats from the full passes: another matmul shape).",
    "item_scoring": "Issue 19 item 3, the per-item bench path (score_pair) against the engine's "
                    "logits for the same tokens alone. On the CPU the per-item [T, V] passes (the "
                    "reference's top-k into its store, a quant's KLD against it) share the cores with "
                    "the forward; the target is for a GPU run (`--device cuda`), where they run on the "
                    "GPU and the host had bounded the first run (docs/performance.md).",
    "quant_job": "Each DAG quant job is its own process. The float reference's logits on "
                 "models.CHECK_TEXT (the artifact check) are now computed once per reference and "
                 "device kind and kept beside the reference (quantize._reference_logits); before, "
                 "every job loaded the HF reference for them, which on a 24-35B reference means tens "
                 "of GB read per quant.",
    "memory": "Each (stage, size) in a fresh process; ru_maxrss includes the model's mapped weights. "
              "Nothing per window is kept (the stores stream to disk); what grew (1.24x before "
              "capture pinned it) is glibc's heap: its dynamic mmap threshold moves large freed "
              "temporaries onto the heap, which fragments. `capture` now pins the threshold at 1 MiB "
              "(capture.pin_mmap_threshold); the capture-mmap row sets it through "
              "MALLOC_MMAP_THRESHOLD_ instead, as a cross-check.",
}


def fmt(v) -> str:
    return f"{v:.5g}" if isinstance(v, float) else str(v)


def markdown(results: list[dict], hdr: dict, log: list[str]) -> str:
    v = hdr["versions"]
    out = [f"Machine: {hdr['cpu']}, {hdr['cores']} cores, {hdr['threads']} threads used, load average "
           f"{' / '.join(map(str, hdr['loadavg']))} at the start (shared machine). Versions: "
           + ", ".join(f"{k} {x}" for k, x in v.items() if x) + f". Date {hdr['date']}, commit "
           f"{hdr['commit']}. Command: `make perf` (a script rerun alone: "
           f"`perf/run_all.py --only NAME`; each row shows when its script ran).", "",
           "| script | ratio | value | target | result | detail |", "|---|---|---|---|---|---|"]
    for r in results:
        for x in r["rows"]:
            tgt = f"{x['op']} {x['target']}" if x["op"] else "(info)"
            res = "" if x["pass"] is None else ("pass" if x["pass"] else "**miss**")
            cell = lambda v: str(v).replace("|", "\\|")  # noqa: E731 - a | inside a cell ends it
            when = r.get("header", {}).get("date", "")[11:16]  # scripts rerun alone differ in time
            out.append(f"| {r['name']}{f' ({when})' if when else ''} | {cell(x['metric'])} | {fmt(x['value'])}{x['unit']} | {tgt} | {res} | "
                       f"{cell(x['detail'])} |")
    out.append("")
    for r in results:
        for n in [NOTES.get(r["name"], ""), *r.get("notes", [])]:
            if n:
                out.append(f"- {r['name']}: {n}")
    if log:
        out += ["", *log]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated script names (default: all)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (tests); writes no docs/performance.md")
    ap.add_argument("--out", type=Path, default=C.OUT)
    ap.add_argument("--results-md", type=Path, default=C.REPO / "docs" / "performance.md")
    ap.add_argument("--report-only", action="store_true",
                    help="run nothing: rebuild results.json and the docs/performance.md block from the result files")
    a = ap.parse_args(argv)
    names = [] if a.report_only else ([n for n in a.only.split(",") if n] or list(SCRIPTS))
    hdr = C.header()
    print(f"machine: {hdr['cpu']}, {hdr['cores']} cores, load {hdr['loadavg']}; {hdr['date']}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in hdr["versions"].items()), flush=True)
    log, failed = [], 0
    for n in names:
        t0 = time.perf_counter()
        print(f"\n== {n}", flush=True)
        cmd = [sys.executable, str(C.PERF / f"{n}.py"), "--out", str(a.out)] + (["--quick"] if a.quick else [])
        rc = subprocess.run(cmd).returncode
        if rc:
            failed += 1
            log.append(f"{n}: FAILED (exit {rc}); its earlier result, if any, is shown.")
        print(f"   ({time.perf_counter() - t0:.0f} s, exit {rc})", flush=True)
    e2e = C.PERF / "e2e.py"
    if a.quick:
        print("\n== e2e: skipped in --quick mode")
    elif not a.report_only and (not a.only or "e2e" in names):
        if e2e.is_file():
            print("\n== e2e", flush=True)
            rc = subprocess.run([sys.executable, str(e2e)]).returncode
            if rc:
                failed += 1
                log.append(f"e2e: FAILED (exit {rc})")
        else:
            print("\n== e2e: perf/e2e.py does not exist; skipped")
    results = []
    for p in sorted(Path(a.out).glob("*.json")):
        if p.name == "results.json":
            continue
        r = json.loads(p.read_text())
        if isinstance(r, dict) and "rows" in r:
            results.append(r)
    order = {n: i for i, n in enumerate(SCRIPTS)}
    results.sort(key=lambda r: order.get(r["name"], len(order)))
    print("\n== summary")
    for r in results:
        print(f"{r['name']} ({r['header']['date']}):")
        for x in r["rows"]:
            print(C.format_row(x))
    (Path(a.out) / "results.json").write_text(json.dumps({"header": hdr, "results": results}, indent=2) + "\n")
    if not a.quick:
        hdr_md = results[0]["header"] if a.report_only and results else hdr
        rewrite_block(a.results_md, markdown(results, hdr_md, log))
        print(f"wrote {a.results_md} (CPU block) and {Path(a.out) / 'results.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
