"""Round trip through the paths owner: what `silentzone quantize` writes, `silentzone bench` and
`silentzone score` find with no --models / --artifacts (issue 21: bench used to look under
<study_dir>/quants/<id>/ while quantize writes <cache>/quants/<ref>/<id>-<hash>/, and silently
benchmarked the reference alone).

A real, cheap quant (GGUF Q8_0 of the embedded SmolLM2 reference, ~1 s of llama-quantize) is written
into a private SILENTZONE_HOME that shares the user's llama.cpp build, exported models and token
caches (read-mostly), exactly as the smoke DAG test does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from silentzone.testing import private_home
from silentzone.paths import REPO

CLI = [sys.executable, "-m", "silentzone.cli"]
SMOKE = ["--study", "smollm2", "--profile", "smoke"]



def _run(home: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "SILENTZONE_HOME": str(home), "PYTHONWARNINGS": "ignore", "HF_HUB_OFFLINE": "1",
           "SILENTZONE_THREADS": "2"}
    r = subprocess.run(CLI + list(args), env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert r.returncode == 0, (args, r.stdout[-2000:], r.stderr[-3000:])
    return r


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    home = private_home(tmp_path_factory.mktemp("roundtrip"))
    _run(home, "quantize", *SMOKE, "--only", "Q8_0", "--quiet")
    return home


def test_quantize_writes_where_paths_says(quantized, monkeypatch):
    from silentzone import paths
    from silentzone.config import load_study
    from silentzone.models import resolve
    from silentzone.quantize import artifact_of
    from silentzone.tables import QUANTS, read_table
    monkeypatch.setenv("SILENTZONE_HOME", str(quantized))
    study = load_study("smollm2", "smoke")
    ref = resolve(study.reference.model, study.reference.dtype)
    q8 = artifact_of(study, study.quant("Q8_0"), ref)
    row = read_table(paths.study_dir("smollm2", "smoke") / "quants.csv", QUANTS).set_index("quant_id")
    # the writer's directory is the paths owner's, under the (private) cache root
    assert q8 == paths.quant_artifact_dir(ref.name, "Q8_0", row.loc["Q8_0", "recipe_hash"])
    assert q8.parent.parent == quantized / "quants"
    assert json.loads((q8 / "artifact.json").read_text())["format"] == "gguf"
    assert (q8 / "model.gguf").is_file()
    assert artifact_of(study, study.quant("Q4_0"), ref) is None  # not built


def test_bench_without_models_finds_the_quant_and_names_the_missing(quantized):
    r = _run(quantized, "bench", *SMOKE, "--tasks", "sciq", "--n-items", "3")
    from silentzone.bench.run import read_samples
    samples = read_samples(quantized / "studies" / "smollm2" / "smoke" / "samples.csv")
    assert sorted(samples["model"].unique()) == ["Q8_0", "reference"]
    assert (samples.groupby("model").size() == 3).all()
    # the profile's other quants have no artifact: one line says so, naming them
    lines = [ln for ln in r.stderr.splitlines() if "no finished artifact" in ln]
    assert len(lines) == 1, r.stderr[-2000:]
    for q in ("Q4_0", "Q2_K", "bnb-nf4", "IQ2_XXS-noimat"):
        assert q in lines[0]


def test_score_without_artifacts_finds_the_quant(quantized):
    _run(quantized, "capture", *SMOKE)
    _run(quantized, "score", *SMOKE)
    from silentzone.tables import FIDELITY, read_table
    fid = read_table(quantized / "studies" / "smollm2" / "smoke" / "fidelity.csv", FIDELITY)
    assert sorted(fid["quant_id"].unique()) == ["Q8_0"]
    kld = fid[(fid["metric"] == "kld_mean")]["value"]
    assert len(kld) and (kld > 0).all() and (kld < 0.05).all()
