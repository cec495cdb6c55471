"""Exploring never changes the shipped results (issue 23): a notebook run with its default parameters,
as a user running it by hand in JupyterLab would, writes to a scratch copy in the cache."""

from __future__ import annotations

import hashlib
import json

import pytest

from silentzone.paths import DATA, FIGURES, NOTEBOOKS


def _digest(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", ["04_decomposition", "07_figures"])
def test_notebook_with_default_parameters_leaves_data_and_figures_alone(name, tmp_path, monkeypatch, run_notebook):
    monkeypatch.setenv("SILENTZONE_HOME", str(tmp_path / "home"))
    before = {"data": _digest(DATA / "smollm2"), "figures": _digest(FIGURES / "smollm2")}
    run_notebook(NOTEBOOKS / f"{name}.ipynb", tmp_path / f"{name}.ipynb", parameters={"study": "smollm2"},
                 cwd=str(NOTEBOOKS))
    assert {"data": _digest(DATA / "smollm2"), "figures": _digest(FIGURES / "smollm2")} == before
    scratch = tmp_path / "home" / "scratch" / "smollm2-default"
    if name == "04_decomposition":  # it recomputed the headline in the scratch copy: same numbers
        new = json.loads((scratch / "results" / "stats.json").read_text())
        old = json.loads((DATA / "smollm2" / "stats.json").read_text())
        drop = lambda d: {k: v for k, v in d.items() if k != "provenance"}  # noqa: E731
        assert drop(new) == drop(old)
    else:  # it drew every figure into the scratch figures
        assert sorted(p.name for p in (scratch / "figures").glob("*.png")) == \
            sorted(p.name for p in (FIGURES / "smollm2").glob("*.png"))


def test_scratch_copy_keeps_notebook_products_until_the_inputs_change(tmp_path):
    from silentzone.report.products import scratch_copy
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    for n in ("quants.csv", "fidelity.csv", "samples.csv", "stats.json"):
        (src / n).write_text(n)
    (src / "notebooks").mkdir()
    scratch_copy(src, dst)
    assert sorted(p.name for p in dst.iterdir()) == ["fidelity.csv", "quants.csv", "samples.csv", "stats.json"]
    (dst / "stats.json").write_text("made by a notebook")
    scratch_copy(src, dst)
    assert (dst / "stats.json").read_text() == "made by a notebook"
    (src / "samples.csv").write_text("a newer shipped table")
    scratch_copy(src, dst)
    assert (dst / "stats.json").read_text() == "stats.json"
    assert (dst / "samples.csv").read_text() == "a newer shipped table"
