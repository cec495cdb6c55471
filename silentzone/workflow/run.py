"""Run the study's DAG with Snakemake: `reproduce(study, cores=2)`.

The working directory of Snakemake is the study's cache directory (products and .snakemake/
metadata live there, outside git); results (tables, stats.json, executed notebooks with their HTML)
go to `results` and figures to `figures`. Snakemake reruns only what changed: a missing or
incomplete output, changed parameters (each rule's params carry the config it depends on) or a
changed notebook. After a hard kill (SIGKILL) a rerun completes the DAG: Snakemake's stale lock is
cleared (only when no other `reproduce` holds our own lock on the study) and incomplete outputs are
rerun, while every finished product is reused.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import yaml

from ..io import atomic_write_text
from ..paths import DATA, FIGURES, study_dir
from ..errors import SilentzoneError

HERE = Path(__file__).resolve().parent
SNAKEFILE = HERE / "Snakefile"
PROFILES = HERE / "profiles"


class WorkflowError(SilentzoneError, RuntimeError):
    """The workflow cannot start (another run holds the study, bad profile)."""


def default_dirs(study, results=None, figures=None) -> tuple[Path, Path]:
    """data/<study> and figures/<study> for the default profile (what the repo ships), else
    <study cache>/results and <results>/figures (smoke and other profiles never touch the repo)."""
    if results is None:
        results = DATA / study.study if study.profile_name == "default" else \
            study_dir(study.study, study.profile_name) / "results"
    if figures is None:
        figures = FIGURES / study.study if study.profile_name == "default" else Path(results) / "figures"
    return Path(results).resolve(), Path(figures).resolve()


def write_config(study, results: Path, figures: Path, device: str = "cpu", job_threads: int = 1) -> Path:
    """The Snakemake config of this run (wf/config.yaml in the study directory)."""
    wd = study_dir(study.study, study.profile_name)
    cfg = {"study": study.study, "profile": study.profile_name, "config": str(Path(study.source).resolve()),
           "results": str(results), "figures": str(figures), "device": device,
           "job_threads": int(job_threads), "python": sys.executable}
    return atomic_write_text(wd / "wf" / "config.yaml", yaml.safe_dump(cfg, sort_keys=True))


def snakemake_cmd(study, configfile: Path, cores: int | None = None, dry_run: bool = False,
                  forcerun=None, until=None, executor_profile: str | None = None, extra=()) -> list[str]:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE),
           "--directory", str(study_dir(study.study, study.profile_name)), "--configfile", str(configfile),
           "--cores", str(cores or os.cpu_count() or 1), "--rerun-incomplete", "--keep-going",
           "--printshellcmds", "--show-failed-logs"]
    if dry_run:
        cmd += ["--dry-run", "--quiet", "rules"]
    if forcerun:
        cmd += ["--forcerun", *forcerun]
    if until:
        cmd += ["--until", *until]
    if executor_profile:
        prof = Path(executor_profile)
        if not prof.is_dir():
            prof = PROFILES / executor_profile
        if not (prof / "config.yaml").is_file():
            raise WorkflowError(f"{executor_profile}: no Snakemake profile (config.yaml) there or under "
                                f"{PROFILES}")
        cmd += ["--workflow-profile", str(prof)]
    return cmd + list(extra)


def reproduce(study, cores: int | None = None, results=None, figures=None, dry_run: bool = False,
              forcerun=None, until=None, executor_profile: str | None = None, device: str = "cpu",
              job_threads: int = 1, extra=()) -> int:
    """Run (or resume) the whole DAG of `study` (a loaded config); return Snakemake's exit status."""
    results, figures = default_dirs(study, results, figures)
    wd = study_dir(study.study, study.profile_name)
    wd.mkdir(parents=True, exist_ok=True)
    configfile = write_config(study, results, figures, device, job_threads)
    cmd = snakemake_cmd(study, configfile, cores, dry_run, forcerun, until, executor_profile, extra)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TOKENIZERS_PARALLELISM": "false"}
    with open(wd / "wf" / "reproduce.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkflowError(f"{wd}: another `silentzone reproduce` is running on this study/profile") from None
        # We hold the study: a Snakemake lock left there is stale (its process was killed).
        if any((wd / ".snakemake" / "locks").glob("*")):
            subprocess.run(cmd[:cmd.index("--cores")] + ["--unlock"], env=env, check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(f"[reproduce] {study.study}/{study.profile_name}: {len(study.quants)} quants, "
              f"{len(study.tasks)} tasks; work dir {wd}; results {results}; figures {figures}", flush=True)
        return subprocess.run(cmd, env=env).returncode
