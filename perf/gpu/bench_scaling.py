"""How the quants' bench scales on one machine: GPU jobs 1, 4, 12 against CPU jobs, side by side (issue 19).

    python3 perf/gpu/bench_scaling.py --study smollm2 --profile power --task piqa \
        --configs gpu:1 gpu:4 gpu:12 cpu:16 --window 30 --out $OUT

Needs the reference's bench of the task and the quants (`perf/gpu/power_run.py --stages reference
quant bench-reference` first). For each configuration it starts N `silentzone stage bench` jobs of
N different GGUF quants on one task (one thread each; a `cpu` job sees no GPU:
CUDA_VISIBLE_DEVICES is empty), waits `--warmup` seconds for the models to load, counts the rows
in their partial files (`<task>.csv.partial.jsonl`, one per finished item), waits `--window`
seconds, counts again, and stops them. items/s = new rows / window, summed over the jobs, and the
ratio to the first configuration is printed. The configurations run one after the other in one
call on one machine (ratios, not absolute times, are what compare across machines).

The jobs' rows are not kept: before and after each configuration the partial files of the quants
it used are removed, and quants whose task table is finished are not used. Writes
$OUT/bench-scaling-<study>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def rows(path: Path) -> int:
    """Finished items in a partial file: its lines after the header (a torn last line not counted)."""
    if not path.is_file():
        return 0
    text = path.read_text()
    n = text.count("\n")
    return max(0, n - 1)


def parse_config(s: str) -> tuple[str, int]:
    dev, _, n = s.partition(":")
    if dev not in ("gpu", "cpu") or not n.isdigit() or int(n) < 1:
        raise SystemExit(f"bench_scaling.py: --configs {s!r}: expected gpu:N or cpu:N")
    return dev, int(n)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", required=True)
    ap.add_argument("--profile", default="power")
    ap.add_argument("--task", default="piqa")
    ap.add_argument("--configs", nargs="+", default=["gpu:1", "gpu:4", "gpu:12", "cpu:16"])
    ap.add_argument("--warmup", type=float, default=15.0)
    ap.add_argument("--window", type=float, default=30.0)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/power-out")))
    args = ap.parse_args(argv)
    configs = [parse_config(c) for c in args.configs]

    from silentzone.config import load_study
    from silentzone.paths import samples_dir
    from silentzone.workflow.stages import sd as study_root
    study = load_study(args.study, args.profile)
    sd = study_root(study)
    wf = sd / "wf"
    if args.task not in study.tasks:
        raise SystemExit(f"bench_scaling.py: --task {args.task}: not a task of {args.study}/{args.profile}")
    if not (wf / "bench" / f"reference-{args.task}.json").is_file() and not (wf / "bench" / "reference.json").is_file():
        raise SystemExit(f"bench_scaling.py: {wf / 'bench'}: the reference's {args.task} is not finished "
                         "(run power_run.py --stages reference quant bench-reference first)")

    def table(q):
        return samples_dir(study.study, study.profile_name, q, sd) / f"{args.task}.csv"

    quants = [q.id for q in study.quants if q.method == "gguf" and (wf / "quants" / f"{q.id}.json").is_file()
              and not table(q.id).is_file()]
    need = max(n for _, n in configs)
    if len(quants) < need:
        raise SystemExit(f"bench_scaling.py: {len(quants)} made GGUF quants without a finished {args.task} "
                         f"table, {need} needed")
    results = []
    for dev, n in configs:
        use = quants[:n]
        parts = [table(q).with_name(f"{args.task}.csv.partial.jsonl") for q in use]
        for p in parts:
            p.unlink(missing_ok=True)
        env = {**os.environ, "SILENTZONE_THREADS": "1"}
        if dev == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
        procs = []
        for q in use:
            cmd = [sys.executable, "-m", "silentzone.cli", "stage", "bench", "--study", args.study,
                   "--profile", args.profile, "--device", "cuda" if dev == "gpu" else "cpu",
                   "--out", f"/tmp/bench-scaling/{dev}{n}-{q}.json", "--quant", q,
                   "--quant-marker", str(wf / "quants" / f"{q}.json"), "--tasks", args.task]
            procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        time.sleep(args.warmup)
        c0, t0 = sum(rows(p) for p in parts), time.time()
        time.sleep(args.window)
        c1, t1 = sum(rows(p) for p in parts), time.time()
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
        for p in parts:
            p.unlink(missing_ok=True)
        rate = (c1 - c0) / (t1 - t0)
        results.append({"config": f"{dev}:{n}", "jobs": n, "device": dev, "items": c1 - c0,
                        "window_s": round(t1 - t0, 2), "items_per_s": round(rate, 2),
                        "per_job": round(rate / n, 2), "quants": use})
        base = results[0]["items_per_s"] or float("nan")
        print(f"{dev}:{n:<3d} {rate:7.2f} items/s in all, {rate / n:6.2f} per job, "
              f"x{rate / base:.2f} of {results[0]['config']}", flush=True)
    gpu = None
    try:
        import torch
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001
        pass
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"bench-scaling-{args.study}.json").write_text(json.dumps(
        {"study": args.study, "profile": args.profile, "task": args.task, "warmup_s": args.warmup,
         "gpu": gpu, "cpu_cores": os.cpu_count(), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
