"""A powered profile's stages on the lent GPU machine, in resumable chunks (issue 19).

    python3 perf/gpu/power_run.py --study smollm2 --profile power --device cuda --jobs 12 \
        --methods gguf --deadline 520 --out $OUT

Runs the workflow's own jobs (`silentzone stage <name>`, the commands the Snakefile runs, see
silentzone/workflow/stages.py) in dependency order: the reference, the quants, the reference
captures, the fidelity scores, the reference's benchmark pass (one job per task, then its marker),
then each quant's. Per-quant jobs run
`--jobs` at a time, each in its own process (one CPU thread each: on the GPU the host side of a
135M-parameter model is the bottleneck, so processes, not threads, fill the card). Every job reuses
what is finished, so a later call continues an interrupted one. No job starts after `--deadline`
seconds; then what is finished is packed for the trip back, paths relative to $SILENTZONE_HOME:

    $OUT/<study>-<profile>-results.tar.xz   wf/ markers, samples/<model>/<task>.csv (+ provenance),
                                            fidelity/<quant>/fidelity.csv (+ provenance), logs/
    $OUT/<study>-<profile>-timing.json      wall seconds per stage and per job, the device, versions

Unpacked into the development machine's $SILENTZONE_HOME (set the same path on both machines, so
the markers' paths hold), the CPU workflow finds these jobs finished and runs the gathers and the
analysis. `--methods gguf` restricts the quants to some methods (the others' libraries may not be
on the GPU machine); `--stages` to some stages (none: only pack). The last stage, `float-reference`, is the reference's bench once more on the host's CPU cores with
CUDA hidden (llama.cpp's CUDA build computes F32 products in TF32: docs/performance.md), in a second
home beside SILENTZONE_HOME (`--float-home`, default <home>-f32: links to the first's models and
builds, its own studies/), one job per task, the cores shared among them; its tables are packed as
$OUT/<study>-<profile>-reference-f32.tar.xz, what `silentzone gather-leases --reference` takes. It runs on a CPU too
(`--device cpu`): a cohort that the leases left unfinished is finished there with `--quants`, and
then only those quants' files are packed (pack_list).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

STAGES = ("reference", "quant", "capture", "score", "bench-reference", "bench", "float-reference")


# a frame of glibc's/ggml's backtrace: "lib.so(symbol+0x2e)[0x7efc...]" or "python3[0x5d33dc]"
_FRAME = re.compile(r"^\S*(\([^)]*\))?\[0x[0-9a-f]+\]$")


def said_lines(log_text: str) -> list[str]:
    """A log's lines that say something: not blank, not a progress bar's redraw (only the text after
    a line's last carriage return), not a backtrace frame."""
    lines = [ln.rsplit("\r", 1)[-1].strip() for ln in log_text.splitlines()]
    return [ln for ln in lines if ln and not _FRAME.match(ln)]


def last_line(log_text: str) -> str:
    """A failed job's log's last line that says something (said_lines). Gemma 3's aborted LAMBADA
    jobs printed "python3(_start+0x25)[0x657a05]", the last of 25 frames, for the line that named
    the failure ("ggml-cuda.cu:109: CUDA error", and with our log callback llama.cpp's message)."""
    said = said_lines(log_text)
    return said[-1] if said else ""


def _stage_cmd(args, name: str, out: Path, device: str | None = None, **kw) -> list[str]:
    cmd = [sys.executable, "-m", "silentzone.cli", "stage", name, "--study", args.study,
           "--profile", args.profile, "--device", device or args.device, "--out", str(out)]
    for k, v in kw.items():
        cmd += [f"--{k.replace('_', '-')}"] + ([] if v is True else [str(v)])  # True: a flag
    return cmd


class Runner:
    def __init__(self, args, sd: Path):
        self.args, self.sd, self.t0 = args, sd, time.time()
        self.logs = sd / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.timing: dict = {"stages": {}, "jobs": {}, "skipped": []}

    def left(self) -> float:
        return self.args.deadline - (time.time() - self.t0)

    def job(self, label: str, cmd: list[str], marker: Path, env_extra: dict | None = None) -> bool:
        if marker.is_file():
            return True
        if self.left() <= 0:
            self.timing["skipped"].append(label)
            return False
        t = time.time()
        env = {**os.environ, "SILENTZONE_THREADS": str(self.args.job_threads), **(env_extra or {})}
        with open(self.logs / f"{label.replace('/', '_')}.log", "w") as log:
            try:  # killed at the hard deadline: its finished (model, task) files stay, the rest reruns
                rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                    timeout=max(5.0, self.args.hard - (time.time() - self.t0))).returncode
            except subprocess.TimeoutExpired:
                rc = "killed at the hard deadline"
        self.timing["jobs"][label] = {"s": round(time.time() - t, 2), "rc": rc}
        tail = last_line((self.logs / f"{label.replace('/', '_')}.log").read_text(errors="replace"))
        print(f"[{time.time() - self.t0:6.0f}s] {label}: exit {rc} in {time.time() - t:.0f}s"
              f"{'' if rc == 0 else ' | ' + tail[:300]}", flush=True)
        return rc == 0 and marker.is_file()

    def stage(self, name: str, jobs: list[tuple[str, list[str], Path]], parallel: int) -> None:
        if name not in self.args.stages:
            return
        t = time.time()
        with ThreadPoolExecutor(max_workers=max(1, parallel)) as ex:
            done = list(ex.map(lambda j: self.job(*j), jobs))
        prev = self.timing["stages"].get(name, {"s": 0.0, "jobs": 0, "ok": 0})  # a stage run in parts
        self.timing["stages"][name] = {"s": round(prev["s"] + time.time() - t, 2),
                                       "jobs": prev["jobs"] + len(jobs), "ok": prev["ok"] + int(sum(done))}
        print(f"== {name}: {sum(done)}/{len(jobs)} finished, {time.time() - t:.0f}s", flush=True)


def bench_jobs(tasks, quants, wf: Path, per_task: bool) -> list[list[tuple[str, dict, Path]]]:
    """The quants' bench as (label, `stage bench` options, marker) jobs, in rounds run one after the
    other: one job per quant; or (per_task) first one job per (quant, task), so that a slow quant's
    tasks run side by side (bnb-int8 scores about 2 items/s on the H100, the others 8-13), then the
    per-quant jobs, which find every (quant, task) table finished and reuse it."""
    def one(q, **extra):
        return {"quant": q, "quant_marker": wf / "quants" / f"{q}.json", **extra}
    whole = [(f"bench/{q}", one(q), wf / "bench" / f"{q}.json") for q in quants]
    if not per_task:
        return [whole]
    split = [(f"bench/{q}-{t}", one(q, tasks=t), wf / "bench" / f"{q}-{t}.json")
             for q in quants if not (wf / "bench" / f"{q}.json").is_file() for t in tasks]
    return [split, whole]


def mirror_home(home: Path, home2: Path) -> None:
    """Make `home2` a SILENTZONE_HOME whose every top-level entry of `home` but studies/ is a link
    there (the models, the llama.cpp builds, the caches), so that a job run with it finds the
    reference model and writes its tables, markers and store apart from `home`'s. Idempotent."""
    home2.mkdir(parents=True, exist_ok=True)
    for p in sorted(home.iterdir()):
        link = home2 / p.name
        if p.name != "studies" and not link.exists() and not link.is_symlink():
            link.symlink_to(p.resolve())


def float_reference_jobs(args, tasks: list[str], sd2: Path, home2: Path, cores: int,
                         parallel: int | None = None) -> list[tuple]:
    """The float reference's bench (module doc): (label, command, marker, environment) per task, on
    the CPU (`--device cpu`, CUDA_VISIBLE_DEVICES empty: the CUDA build sees no card), in the home
    `home2` whose study directory is `sd2`, `cores` shared evenly among the `parallel` jobs that run
    at once (default: every task at once); `--no-store`: its tables only, resumable across calls
    (Gemma 3's tasks take longer than one call on 16 cores)."""
    at_once = max(1, min(len(tasks), parallel or len(tasks)))
    env = {"CUDA_VISIBLE_DEVICES": "", "SILENTZONE_HOME": str(home2),
           "SILENTZONE_THREADS": str(max(1, cores // at_once))}
    out = []
    for t in tasks:
        marker = sd2 / "wf" / "bench" / f"reference-{t}.json"
        out.append((f"float-reference/{t}",
                    _stage_cmd(args, "bench", marker, device="cpu", quant="reference", tasks=t, no_store=True),
                    marker, env))
    return out


def pack_float_reference(sd2: Path, home2: Path, tasks: list[str], dest: Path) -> Path | None:
    """Pack the float reference's tables (samples/reference/<task>.csv and their provenance, paths
    relative to `home2`, the layout of a lease's tar) into `dest` once every task has its table;
    None (nothing written) before."""
    tables = [sd2 / "samples" / "reference" / f"{t}.csv" for t in tasks]
    if not all(p.is_file() for p in tables):
        return None
    with tarfile.open(dest, "w:xz", preset=6) as tar:
        for p in tables:
            for f in (p, p.with_name(p.name + ".provenance.json")):
                if f.is_file():
                    tar.add(f, arcname=str(f.relative_to(home2)))
    return dest


def pack_list(sd: Path, quants: list[str] | None = None, tasks: list[str] = ()) -> list[Path]:
    """The finished files of the study directory `sd` that travel back: markers, bench and fidelity
    tables, logs (no reference store, no arrays, nothing of 64 MiB or more). With `quants` (a run
    that finishes some quants of a cohort, `--quants`), only those quants' markers and tables: the
    reference that such a run scores again on its own machine stays there, so that its tables, which
    another machine's reference tables already give, are not sent as a second, slightly different
    version (silentzone gather-leases refuses tables that differ between leases)."""
    def ours(rel: Path) -> bool:
        if quants is None or rel.parts[0] == "logs":
            return True
        if rel.parts[0] in ("samples", "fidelity"):
            return len(rel.parts) > 2 and rel.parts[1] in quants
        stem = rel.name.removesuffix(".json")  # wf/<stage>/<quant>.json or wf/bench/<quant>-<task>.json
        per_task = {f"{q}-{t}" for q in quants for t in tasks} if rel.parts[1:2] == ("bench",) else set()
        return len(rel.parts) == 3 and (stem in quants or stem in per_task)
    keep = []
    for p in sorted(sd.rglob("*")):
        rel = p.relative_to(sd)
        if not p.is_file() or rel.parts[0] in ("bench_ref",) or p.suffix in (".npz", ".npy"):
            continue
        if rel.parts[0] in ("wf", "samples", "fidelity", "logs") and p.stat().st_size < 64 << 20 and ours(rel):
            keep.append(p)
    return keep


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", required=True)
    ap.add_argument("--profile", default="power")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--jobs", type=int, default=12)
    ap.add_argument("--job-threads", type=int, default=1)
    ap.add_argument("--methods", nargs="*", default=None, help="quant methods to run (default: all)")
    ap.add_argument("--quants", nargs="*", default=None,
                    help="quant ids to run (default: all of --methods); an id not in the profile is an error")
    ap.add_argument("--stages", nargs="*", default=list(STAGES), choices=STAGES,
                    help="stages to run; none (`--stages` alone): only pack what is finished")
    ap.add_argument("--per-task", action="store_true",
                    help="the quants' bench as one job per (quant, task) first (see bench_jobs)")
    ap.add_argument("--deadline", type=float, default=520.0, help="seconds after which no job starts")
    ap.add_argument("--hard", type=float, default=None,
                    help="seconds at which running jobs are killed (default: deadline + 60)")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/power-out")))
    ap.add_argument("--skip-tasks", nargs="*", default=[],
                    help="tasks left out of the bench stages (e.g. one whose reference bench fails): the "
                         "quants' bench runs per (quant, task) on the others, no whole-quant marker")
    ap.add_argument("--tag", default="", help="suffix of the timing file (one per call)")
    ap.add_argument("--float-home", type=Path, default=None,
                    help="the float reference's home (stage float-reference; default: <SILENTZONE_HOME>-f32)")
    ap.add_argument("--build-wait", type=float, default=None,
                    help="seconds the call waited for the CUDA build before this (power_run.sh), recorded")
    args = ap.parse_args(argv)
    args.hard = args.deadline + 60 if args.hard is None else args.hard

    from silentzone.config import load_study
    from silentzone.paths import cache_home
    study = load_study(args.study, args.profile)
    from silentzone.workflow.stages import sd as study_root
    sd = study_root(study)
    wf = sd / "wf"
    quants = [q.id for q in study.quants if args.methods is None or q.method in args.methods]
    if args.quants is not None:
        bad = sorted(set(args.quants) - set(quants))
        if bad:
            ap.error(f"--quants: {', '.join(bad)} not among the quants of {args.study}/{args.profile}"
                     + (f" with --methods {' '.join(args.methods)}" if args.methods else ""))
        quants = [q for q in quants if q in args.quants]
    bad = sorted(set(args.skip_tasks) - set(study.tasks))
    if bad:
        ap.error(f"--skip-tasks: {', '.join(bad)} not among the tasks of {args.study}/{args.profile}")
    r = Runner(args, sd)
    print(f"{args.study}/{args.profile} on {args.device}: {len(quants)} quants, {len(study.tasks)} tasks, "
          f"{study.profile.n_items} items per task at most; deadline {args.deadline:.0f}s", flush=True)

    # the reference's export and check are the CPU's work: with the card hidden, llama.cpp's CUDA build
    # cannot move the check's F32 products to it (TF32; Gemma 3's first lease: refused at 5.4e-2 nats)
    r.stage("reference", [("reference", _stage_cmd(args, "reference", wf / "reference.json"),
                           wf / "reference.json", {"CUDA_VISIBLE_DEVICES": ""})], 1)
    if not (wf / "reference.json").is_file() and set(args.stages) - {"reference", "float-reference"}:
        # every later stage needs the checked reference: without it each job would export and check
        # it again, and fail the same way (lease 1 of Gemma 3: 32 quant jobs, 370 s)
        print("no reference marker (its stage failed or was not run): the later GPU stages are skipped",
              flush=True)
        args.stages = [s for s in args.stages if s in ("reference", "float-reference")]
    r.stage("quant", [(f"quant/{q}", _stage_cmd(args, "quant", wf / "quants" / f"{q}.json", quant=q),
                       wf / "quants" / f"{q}.json") for q in quants], args.jobs)
    r.stage("capture", [(f"capture/{c}-{x}", _stage_cmd(args, "capture", wf / "capture" / f"{c}-{x}.json",
                                                         corpus=c, ctx=x),
                         wf / "capture" / f"{c}-{x}.json")
                        for c in study.corpora for x in study.contexts], args.jobs)
    made = [q for q in quants if (wf / "quants" / f"{q}.json").is_file()]
    r.stage("score", [(f"score/{q}", _stage_cmd(args, "score", wf / "fidelity" / f"{q}.json", quant=q,
                                                quant_marker=wf / "quants" / f"{q}.json"),
                       wf / "fidelity" / f"{q}.json") for q in made], args.jobs)
    # the reference's tasks as parallel jobs (`stage bench --tasks`), then its marker: a job over every
    # task that finds each (reference, task) pair finished and reuses it
    tasks = [t for t in study.tasks if t not in args.skip_tasks]
    per_task = [(f"bench/reference-{t}", _stage_cmd(args, "bench", wf / "bench" / f"reference-{t}.json",
                                                    quant="reference", tasks=t),
                 wf / "bench" / f"reference-{t}.json") for t in tasks]
    r.stage("bench-reference", per_task, args.jobs)
    whole_ref = wf / "bench" / "reference.json"
    if not args.skip_tasks and all(m.is_file() for _, _, m in per_task):
        r.stage("bench-reference", [("bench/reference", _stage_cmd(args, "bench", whole_ref, quant="reference"),
                                     whole_ref)], 1)
    # --skip-tasks: no model's every task is benched, so no whole-model job; the quants' bench runs per
    # (quant, task) on the other tasks once the reference has each of them
    if all(m.is_file() for _, _, m in per_task) if args.skip_tasks else whole_ref.is_file():
        rounds = bench_jobs(tasks, made, wf, args.per_task or bool(args.skip_tasks))
        for jobs in rounds[:1] if args.skip_tasks else rounds:
            r.stage("bench", [(label, _stage_cmd(args, "bench", marker, **kw), marker) for label, kw, marker in jobs],
                    args.jobs)

    # the float reference on the host's CPU cores (module doc)
    home = cache_home()
    home2 = args.float_home or home.with_name(home.name + "-f32")
    sd2 = home2 / sd.relative_to(home)
    if "float-reference" in args.stages:
        mirror_home(home, home2)
        (sd2 / "wf" / "bench").mkdir(parents=True, exist_ok=True)
        # every task at once, or --jobs of them (a 2-core machine: two jobs of one thread each)
        at_once = min(len(study.tasks), args.jobs)
        r.stage("float-reference", float_reference_jobs(args, study.tasks, sd2, home2, os.cpu_count() or 1,
                                                        at_once), at_once)

    # pack what is finished (paths relative to $SILENTZONE_HOME)
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"{args.study}-{args.profile}"
    if sd2.is_dir():
        pack_float_reference(sd2, home2, study.tasks, args.out / f"{name}-reference-f32.tar.xz")
    keep = pack_list(sd, args.quants, study.tasks)
    with tarfile.open(args.out / f"{name}-results.tar.xz", "w:xz", preset=6) as tar:
        for p in keep:
            tar.add(p, arcname=str(p.relative_to(home)))
    import torch
    r.timing.update({"study": args.study, "profile": args.profile, "device": args.device,
                     "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                     "cpu_cores": os.cpu_count(), "parallel": args.jobs, "job_threads": args.job_threads,
                     "methods": args.methods, "wall_s": round(time.time() - r.t0, 2), "build_wait_s": args.build_wait,
                     "files_packed": len(keep), "torch": torch.__version__})
    (args.out / f"{name}-timing{args.tag}.json").write_text(json.dumps(r.timing, indent=1))
    print(f"packed {len(keep)} files into {args.out / (name + '-results.tar.xz')}; "
          f"wall {time.time() - r.t0:.0f}s; skipped {len(r.timing['skipped'])} jobs", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
