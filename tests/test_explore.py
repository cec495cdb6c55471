"""The read-only explorer (silentzone.report.explore, notebooks/00_explore.ipynb): its numbers against
an exact recomputation done here, nothing written, and the notebook running headless with widgets."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from silentzone.paths import DATA, FIGURES, NOTEBOOKS
from silentzone.report import explore as E


def _snapshot():
    """(path, size, mtime_ns) of every shipped results file: what exploring must never touch."""
    return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for d in (DATA, FIGURES)
                  for p in d.rglob("*") if p.is_file())


def _by_hand(study: str, task: str, corpus: str, ctx: int, metric: str, t: Fraction):
    """n_zone, rho full, rho zone for one task's accuracy (exact counts), zone = relative loss <= t."""
    s = pd.read_csv(DATA / study / "samples.csv")
    q = pd.read_csv(DATA / study / "quants.csv")
    f = pd.read_csv(DATA / study / "fidelity.csv")
    ok = sorted(q.loc[q["status"] == "ok", "quant_id"])
    s = s[s["task"] == task]
    acc = {m: Fraction(int(g["correct"].sum()), len(g)) for m, g in s.groupby("model")}
    x = f[(f.corpus == corpus) & (f.ctx == ctx) & (f.metric == metric)].set_index("quant_id")["value"]
    ref = acc["reference"]
    zone = [(ref - acc[m]) / ref <= t for m in ok]
    xs, ys = np.array([x[m] for m in ok]), np.array([float(acc[m]) for m in ok])
    z = np.array(zone)
    return int(z.sum()), st.spearmanr(xs, ys).statistic, st.spearmanr(xs[z], ys[z]).statistic


def test_one_task_equals_exact_recomputation():
    tables = E.tables("smollm2")
    before = _snapshot()
    res = E.explore(*tables, corpus="code", ctx=256, metric="kld_p99", task="sciq", n_resamples=200,
                    holdout_splits=20, ceiling_sims=50)
    n_zone, rho_full, rho_zone = _by_hand("smollm2", "sciq", "code", 256, "kld_p99", Fraction(2, 100))
    assert res.stats["n_zone"] == n_zone
    assert abs(res.stats["rho_full"] - rho_full) < 1e-9 and abs(res.stats["rho_zone"] - rho_zone) < 1e-9
    assert res.choice["task"] == "sciq" and "task sciq" in E.summary(res)
    assert _snapshot() == before  # nothing written


def test_default_choice_is_the_shipped_headline():
    shipped = json.loads((DATA / "gemma3" / "stats.json").read_text())
    res = E.explore(*E.tables("gemma3"), corpus=shipped["corpus"], ctx=shipped["ctx"], n_resamples=200,
                    holdout_splits=20, ceiling_sims=50)
    for k in ("n_zone", "rho_full", "rho_zone"):
        assert res.stats[k] == pytest.approx(shipped[k], abs=1e-12), k
    assert 0 <= res.cohort["p_in_zone"].min() and res.cohort["p_in_zone"].max() <= 1


def test_bad_choices_are_one_line_errors():
    tables = E.tables("smollm2")
    with pytest.raises(ValueError, match="task 'mmlu' not in the samples"):
        E.explore(*tables, corpus="wiki", ctx=512, task="mmlu")
    with pytest.raises(ValueError, match="no fidelity rows for corpus='c4' ctx=512"):
        E.explore(*tables, corpus="c4", ctx=512)


def test_explorer_notebook_runs_headless_and_writes_nothing(tmp_path, run_notebook):
    before = _snapshot()
    out = tmp_path / "explore.ipynb"
    run_notebook(NOTEBOOKS / "00_explore.ipynb", out, cwd=str(NOTEBOOKS),
                 parameters={"study": "gemma3", "definition": "absolute", "threshold": 1.0, "task": "sciq"})
    nb = json.loads(out.read_text())
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    state = nb["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    shown = [o for v in state.values() if v["model_name"] == "OutputModel" for o in v["state"].get("outputs", [])]
    kinds = [k for o in shown for k in o.get("data", {})]
    assert "image/png" in kinds and "text/html" in kinds, kinds
    values = {v["state"].get("description"): v["state"].get("value") for v in state.values()
              if v["model_name"] in ("DropdownModel", "FloatTextModel")}
    assert values["threshold"] == 1.0
    assert _snapshot() == before


def test_notebooks_are_committed_as_jupyterlab_keeps_them():
    """Opening a notebook must not mark it modified: the kernelspec JupyterLab writes back, no outputs
    (the executed copies live under data/<study>/notebooks/), a parameters cell."""
    for path in sorted(NOTEBOOKS.glob("0*.ipynb")):
        nb = json.loads(path.read_text())
        assert nb["metadata"]["kernelspec"] == {"display_name": "Python 3 (ipykernel)", "language": "python",
                                                "name": "python3"}, path.name
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), path.name
        assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in code), path.name
