"""End to end (issue 8, target 5): wall time of the whole DAG and each stage's share.

    python perf/e2e.py                                   # the default studies already run
    python perf/e2e.py --study-dir ~/.cache/silentzone/studies/smollm2/default
    python perf/e2e.py --smoke                           # also run the smoke DAG afresh and time it

Reads Snakemake's own run logs (<study_dir>/.snakemake/log/*.snakemake.log): each job's start and
finish lines (1 s resolution) give its wall seconds; the stage of a job is its rule (the seven
notebook rules are one stage, `notebooks`). A study reached through several runs (an interrupted
run resumed) is the sum of its runs' walls; jobs that a run only reused do not appear in its log.
Shares are of summed job-seconds (jobs run side by side, so they add up to more than the wall).
Targets: smoke <= 5 min, default <= 60 min on the 2-core machine. `--smoke` runs
`silentzone reproduce --study smollm2 --profile smoke` in a fresh SILENTZONE_HOME that shares only
the llama.cpp build cache, so every stage runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
_START = re.compile(r"^(?:local)?rule (\w+):$")
_JOBID = re.compile(r"^\s+jobid: (\d+)$")
_DONE = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")
_ERROR = re.compile(r"^Error in rule (\w+):$")
TARGETS_MIN = {"smoke": 5.0, "default": 60.0}


def stage_of(rule: str) -> str:
    return "notebooks" if rule.startswith("nb0") else rule


def parse_log(path: Path) -> dict:
    """{"start", "end" (datetimes), "jobs": [{rule, jobid, seconds, ok}]} of one Snakemake log."""
    stamp = None
    started: dict[str, tuple[str, datetime]] = {}
    pending_rule = None
    jobs, first, last = [], None, None
    for line in path.read_text(errors="replace").splitlines():
        m = _STAMP.match(line)
        if m:
            stamp = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
            first = first or stamp
            last = stamp
            continue
        m = _START.match(line)
        if m:
            pending_rule = m.group(1)
            continue
        m = _JOBID.match(line)
        if m and pending_rule:
            started[m.group(1)] = (pending_rule, stamp)
            pending_rule = None
            continue
        m = _DONE.match(line)
        if m and m.group(1) in started:
            rule, t0 = started.pop(m.group(1))
            jobs.append({"rule": rule, "jobid": int(m.group(1)), "ok": True,
                         "seconds": (stamp - t0).total_seconds()})
    return {"start": first, "end": last, "jobs": jobs, "unfinished": sorted(r for r, _ in started.values())}


def study_times(study_dir: Path) -> dict:
    logs = sorted((study_dir / ".snakemake" / "log").glob("*.snakemake.log"))
    runs = [parse_log(p) for p in logs]
    runs = [r for r in runs if r["jobs"]]  # dry runs and nothing-to-do runs have no finished jobs
    if not runs:
        raise SystemExit(f"{study_dir}: no Snakemake run with finished jobs under .snakemake/log")
    per_stage: dict[str, float] = {}
    n_jobs: dict[str, int] = {}
    for r in runs:
        for j in r["jobs"]:
            s = stage_of(j["rule"])
            if s == "all":
                continue
            per_stage[s] = per_stage.get(s, 0.0) + j["seconds"]
            n_jobs[s] = n_jobs.get(s, 0) + 1
    total = sum(per_stage.values()) or 1.0
    wall = sum((r["end"] - r["start"]).total_seconds() for r in runs)
    return {"study_dir": str(study_dir), "runs": len(runs), "wall_s": wall,
            "job_seconds": total,
            "stages": {s: {"jobs": n_jobs[s], "seconds": v, "share": v / total}
                       for s, v in sorted(per_stage.items(), key=lambda kv: -kv[1])}}


def run_smoke(cores: int) -> tuple[float, Path]:
    """A fresh smoke DAG (fresh SILENTZONE_HOME, the llama.cpp build cache linked in); its wall."""
    from silentzone.llama_tools import build_dir
    home = Path(tempfile.mkdtemp(prefix="sz-e2e-"))
    (home / "build").mkdir()
    os.symlink(build_dir(), home / "build" / build_dir().name)
    env = {**os.environ, "SILENTZONE_HOME": str(home)}
    out = home / "results"
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "silentzone.cli", "reproduce", "--study", "smollm2",
                        "--profile", "smoke", "--cores", str(cores), "--results", str(out)],
                       env=env, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"smoke DAG failed (exit {p.returncode}): {p.stderr.strip().splitlines()[-1:]}")
    return wall, home


def markdown(results: dict) -> str:
    lines = ["| study / profile | runs | wall | target | job-seconds | stage shares (job-seconds) |",
             "|---|---|---|---|---|---|"]
    for name, r in results.items():
        prof = name.split("/")[1].split(" ")[0]
        tgt = TARGETS_MIN.get(prof)
        ok = "" if tgt is None else (" (met)" if r["wall_s"] <= tgt * 60 else " (missed)")
        shares = ", ".join(f"{s} {v['share']:.0%} ({v['jobs']} jobs)" for s, v in r["stages"].items())
        lines.append(f"| {name} | {r['runs']} | {r['wall_s'] / 60:.1f} min{ok} | "
                     f"{'' if tgt is None else f'<= {tgt:.0f} min'} | {r['job_seconds']:.0f} s | {shares} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study-dir", nargs="*", type=Path, help="default: the cache's default studies")
    ap.add_argument("--smoke", action="store_true", help="run a fresh smoke DAG and time it")
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", type=Path, default=REPO / "perf" / "cpu" / "e2e.json")
    args = ap.parse_args(argv)
    from silentzone.paths import cache_home
    dirs = args.study_dir
    if not dirs:
        dirs = [d for d in sorted((cache_home() / "studies").glob("*/default")) if (d / ".snakemake").is_dir()]
    results = {}
    for d in dirs:
        key = f"{d.parent.name}/{d.name}"
        if len(dirs) > 1 and sum(x.parent.name == d.parent.name and x.name == d.name for x in dirs) > 1:
            key += f" ({d.parents[2]})"  # the same study in two SILENTZONE_HOMEs
        results[key] = study_times(d)
    if args.smoke:
        wall, home = run_smoke(args.cores)
        r = study_times(home / "studies" / "smollm2" / "smoke")
        r["wall_s"] = wall  # the command's own wall, setup of the reference export included
        results["smollm2/smoke (fresh)"] = r
        shutil.rmtree(home, ignore_errors=True)
    if not results:
        raise SystemExit("no study directory with Snakemake logs; run `make paper` or pass --study-dir")
    md = markdown(results)
    print(md)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
