"""The workflow: dry runs of every shipped config, and the smoke DAG run end to end on the real
SmolLM2 reference, killed (SIGKILL) at a random point and rerun.

The smoke run uses a private SILENTZONE_HOME (the llama.cpp build, exported models and token caches
are linked in from the user's cache, so only the study itself is recomputed)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from silentzone.testing import private_home
from silentzone.paths import CONFIGS, REPO, cache_home

CLI = [sys.executable, "-m", "silentzone.cli"]
SMOKE_QUANTS = ["Q8_0", "Q4_0", "Q2_K", "bnb-nf4", "IQ2_XXS-noimat"]


def _env(home: Path) -> dict:
    return {**os.environ, "SILENTZONE_HOME": str(home), "PYTHONWARNINGS": "ignore", "HF_HUB_OFFLINE": "1"}


@pytest.mark.parametrize("config", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_dry_run_of_every_config_lists_the_whole_dag(config, tmp_path):
    """Offline, no model: the DAG of each shipped study builds and lists one job per quant and stage."""
    from silentzone.config import load
    study = load(CONFIGS / config, "default")
    r = subprocess.run(CLI + ["reproduce", "--config", str(CONFIGS / config), "--dry-run",
                              "--results", str(tmp_path / "r"), "--figures", str(tmp_path / "f")],
                       env=_env(tmp_path / "home"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout + r.stderr
    n = len(study.quants)
    counts = {rule: int(c) for rule, c in
              (line.split()[:2] for line in out.splitlines()
               if len(line.split()) == 2 and line.split()[1].isdigit())}
    assert counts["quant"] == n and counts["score"] == n and counts["bench"] == n, counts
    assert counts["capture"] == len(study.corpora) * len(study.contexts), counts
    for rule in ("reference", "bench_reference", "nb01_quants", "nb02_fidelity", "nb03_samples",
                 "nb04_decomposition", "nb05_sensitivity", "nb06_per_prompt", "nb07_figures", "all"):
        assert counts[rule] == 1, (rule, counts)
    assert not (tmp_path / "r").exists(), "a dry run must not write results"


def test_reproduce_refuses_a_bad_config_in_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((CONFIGS / "smollm2.yaml").read_text().replace("n_items: 20", "n_items: twenty"))
    r = subprocess.run(CLI + ["reproduce", "--config", str(bad), "--profile", "smoke", "--dry-run"],
                       env=_env(tmp_path / "home"), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert "profiles.smoke.n_items: must be int" in r.stderr


# ----------------------------------------------------------------------------- the smoke DAG


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _reproduce(home: Path, *extra: str, timeout: int = 1500) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + ["reproduce", "--study", "smollm2", "--profile", "smoke", "--cores", "2",
                                 *extra], env=_env(home), capture_output=True, text=True, timeout=timeout,
                          cwd=REPO)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """Start the smoke DAG, SIGKILL its whole process group at a random moment while it runs, rerun
    it to completion. Returns a dict with the home, study dir, results and what existed at the kill."""
    home = private_home(tmp_path_factory.mktemp("smoke"))
    sd = home / "studies" / "smollm2" / "smoke"
    seed = int(os.environ.get("SILENTZONE_KILL_SEED", random.SystemRandom().randrange(10**6)))
    delay = random.Random(seed).uniform(30, 90)
    print(f"kill-and-resume: SIGKILL after {delay:.1f} s (SILENTZONE_KILL_SEED={seed})")
    p = subprocess.Popen(CLI + ["reproduce", "--study", "smollm2", "--profile", "smoke", "--cores", "2"],
                         env=_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True, cwd=REPO)
    time.sleep(delay)
    still_running = p.poll() is None
    killed_at = time.time()
    os.killpg(p.pid, signal.SIGKILL)
    # Markers written more than 10 s before the kill belong to jobs Snakemake had seen finish (a job
    # killed between writing its marker and exiting is rightly rerun as incomplete).
    markers = {str(m.relative_to(sd)): m.stat().st_mtime_ns for m in (sd / "wf").rglob("*.json")
               if m.stat().st_mtime < killed_at - 10} if (sd / "wf").exists() else {}
    p.wait()
    t0 = time.time()
    r = _reproduce(home)
    return {"home": home, "sd": sd, "results": sd / "results", "run": r, "rerun_s": time.time() - t0,
            "killed_while_running": still_running, "markers_at_kill": markers, "seed": seed}


@pytest.mark.slow
def test_smoke_dag_completes_after_sigkill(smoke):
    r = smoke["run"]
    assert smoke["killed_while_running"], "the kill came after the DAG had finished: lower the delay"
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    res = smoke["results"]
    for name in ("quants.csv", "fidelity.csv", "samples.csv", "stats.json"):
        assert (res / name).is_file(), name
    for nb in ("01_generate_quants", "02_capture_logits", "03_run_benchmarks", "04_decomposition",
               "05_sensitivity", "06_per_prompt", "07_figures"):
        assert (res / "notebooks" / f"{nb}.ipynb").is_file() and (res / "notebooks" / f"{nb}.html").is_file()
    assert list((res / "figures").glob("*.pdf")) and list((res / "figures").glob("*.png"))
    # no half-written file anywhere: temporaries are renamed when complete or cleaned on rerun
    leftovers = [p for root in (smoke["sd"], smoke["home"] / "quants") if root.exists()
                 for p in root.rglob("*") if ".tmp" in p.name or p.name.endswith(".part")]
    assert not leftovers, leftovers


@pytest.mark.slow
def test_smoke_rerun_reused_every_product_finished_before_the_kill(smoke):
    sd = smoke["sd"]
    assert smoke["markers_at_kill"], "nothing had finished before the kill: raise the delay"
    for rel, mtime in smoke["markers_at_kill"].items():
        assert (sd / rel).stat().st_mtime_ns == mtime, f"{rel} was redone after the kill"


@pytest.mark.slow
def test_smoke_failed_quant_is_recorded_and_the_others_go_on(smoke):
    from silentzone.tables import FIDELITY, QUANTS, SAMPLES, read_table
    res = smoke["results"]
    quants = read_table(res / "quants.csv", QUANTS).set_index("quant_id")
    assert sorted(quants.index) == sorted(SMOKE_QUANTS)
    assert quants.loc["IQ2_XXS-noimat", "status"] == "failed"
    assert "llama-quantize" in quants.loc["IQ2_XXS-noimat", "reason"] or \
        "imatrix" in quants.loc["IQ2_XXS-noimat", "reason"].lower()
    ok = sorted(quants.index[quants["status"] == "ok"])
    assert ok == sorted(q for q in SMOKE_QUANTS if q != "IQ2_XXS-noimat")
    fid = read_table(res / "fidelity.csv", FIDELITY)
    assert sorted(fid["quant_id"].unique()) == ok
    samples = read_table(res / "samples.csv", SAMPLES)
    assert sorted(samples["model"].unique()) == sorted(ok + ["reference"])
    assert (samples.groupby("model").size() == 40).all()  # 2 tasks x 20 items
    assert not any(str(cache_home()) in v for v in quants["artifact"].astype(str)), "host paths shipped"
    stats = json.loads((res / "stats.json").read_text())
    assert stats["n_quants"] == len(ok)


@pytest.mark.slow
def test_smoke_third_run_has_nothing_to_do(smoke):
    r = _reproduce(smoke["home"], "--dry-run", timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Nothing to be done" in r.stdout + r.stderr


@pytest.mark.slow
def test_smoke_analysis_outputs_are_byte_identical_when_rerun(smoke):
    res = smoke["results"]
    analysis = lambda: {k: v for k, v in _files(res).items()  # noqa: E731
                        if not k.startswith("notebooks/")}
    before = analysis()
    r = _reproduce(smoke["home"], "--forcerun", "nb04_decomposition", "nb05_sensitivity",
                   "nb06_per_prompt", "nb07_figures")
    assert r.returncode == 0, r.stderr[-3000:]
    after = analysis()
    assert before.keys() == after.keys()
    changed = sorted(k for k in before if before[k] != after[k])
    assert not changed, changed
