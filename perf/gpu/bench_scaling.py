"""How the quants' bench scales on one machine: GPU jobs 1, 4, 12 against CPU jobs, side by side (issue 19).

    python3 perf/gpu/bench_scaling.py --study smollm2 --profile power --task piqa \
        --configs gpu-numpy:1 gpu:1 gpu-numpy:4 gpu:4 cpu:16 --window 30 --out $OUT

`gpu-numpy` runs the GPU jobs with LlamaCppModel.rows_to = "numpy": the context's logit rows come
to the host as numpy, are concatenated there and uploaded again for the KLD (the data path before
rows_to); `gpu` keeps them on the GPU. The first items of a quant scored by two one-job
configurations are compared row by row (the same quant starts from its first item each time):
their answers, margins and KLD must be the same bits, and the JSON records how many were.

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
    if dev not in ("gpu", "gpu-numpy", "cpu") or not n.isdigit() or int(n) < 1:
        raise SystemExit(f"bench_scaling.py: --configs {s!r}: expected gpu:N, gpu-numpy:N or cpu:N")
    return dev, int(n)


# a job of the path before rows_to: the same CLI with the class attribute set first
NUMPY_JOB = ("import sys; import silentzone.backends.llama_cpp as L; L.LlamaCppModel.rows_to = 'numpy'; "
             "from silentzone.cli import main; sys.exit(main(sys.argv[1:]))")


def read_rows(path: Path) -> dict:
    """{item_id: row} of a partial file's whole lines."""
    out = {}
    if path.is_file():
        for line in path.read_text().splitlines()[1:]:
            try:
                r = json.loads(line)
            except ValueError:  # a torn last line
                continue
            out[r["item_id"]] = r
    return out


def same_rows(a: dict, b: dict) -> dict:
    """How many items two runs of one quant share, and on how many every scored field is equal."""
    fields = ("correct", "correct_norm", "pred", "margin", "ll_gold", "kld_mean", "kld_max", "n_tokens")
    common = sorted(set(a) & set(b))
    equal = [i for i in common if all(a[i][f] == b[i][f] for f in fields)]
    diff = max((abs(a[i][f] - b[i][f]) for i in common for f in ("margin", "ll_gold", "kld_mean", "kld_max")),
               default=0.0)
    return {"common": len(common), "equal": len(equal), "max_abs_diff": diff}


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
    results, kept = [], {}
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
            head = [sys.executable, "-c", NUMPY_JOB] if dev == "gpu-numpy" else [sys.executable, "-m", "silentzone.cli"]
            cmd = [*head, "stage", "bench", "--study", args.study,
                   "--profile", args.profile, "--device", "cpu" if dev == "cpu" else "cuda",
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
        if n == 1:
            kept[(dev, use[0])] = read_rows(parts[0])
        for p in parts:
            p.unlink(missing_ok=True)
        rate = (c1 - c0) / (t1 - t0)
        results.append({"config": f"{dev}:{n}", "jobs": n, "device": dev, "items": c1 - c0,
                        "window_s": round(t1 - t0, 2), "items_per_s": round(rate, 2),
                        "per_job": round(rate / n, 2), "quants": use})
        base = results[0]["items_per_s"] or float("nan")
        print(f"{dev}:{n:<3d} {rate:7.2f} items/s in all, {rate / n:6.2f} per job, "
              f"x{rate / base:.2f} of {results[0]['config']}", flush=True)
    compared = []
    keys = sorted(kept)
    for i, ka in enumerate(keys):
        for kb in keys[i + 1:]:
            if ka[1] == kb[1] and "cpu" not in (ka[0], kb[0]):  # one engine: the same bits expected
                c = {"a": ka[0], "b": kb[0], "quant": ka[1], **same_rows(kept[ka], kept[kb])}
                compared.append(c)
                print(f"{ka[0]} vs {kb[0]} ({ka[1]}): {c['equal']} of {c['common']} shared items equal, "
                      f"max |diff| {c['max_abs_diff']:.3g}", flush=True)
    gpu = None
    try:
        import torch
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001
        pass
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"bench-scaling-{args.study}.json").write_text(json.dumps(
        {"study": args.study, "profile": args.profile, "task": args.task, "warmup_s": args.warmup,
         "gpu": gpu, "cpu_cores": os.cpu_count(), "results": results, "compared": compared}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
