"""What a fresh clone gets: the shipped results of both embedded studies, consistent with each other,
and every notebook running top to bottom from them (as `make lab` users open them)."""

from __future__ import annotations

import json
import shutil

import pytest

from silentzone.paths import CONFIGS, DATA, FIGURES, NOTEBOOKS

STUDIES = ("smollm2", "gemma3")
NOTEBOOK_NAMES = sorted(p.stem for p in NOTEBOOKS.glob("0*.ipynb"))


@pytest.mark.parametrize("study", STUDIES)
def test_shipped_tables_are_valid_and_agree(study):
    from analysis.contracts import STATS_KEYS
    from silentzone.analyze import load
    from silentzone.config import load as load_config
    cfg = load_config(CONFIGS / f"{study}.yaml", "default")
    samples, fidelity, quants = load(DATA / study)  # validates the three contract tables
    assert sorted(quants["quant_id"]) == sorted(q.id for q in cfg.quants)
    ok = sorted(quants.loc[quants["status"] == "ok", "quant_id"])
    assert len(ok) >= 28, f"{study}: only {len(ok)} quants ok"
    assert sorted(set(samples["model"])) == sorted(ok + ["reference"])
    per_model = samples.groupby("model").size()
    assert (per_model == len(cfg.tasks) * cfg.profile.n_items).all(), per_model
    assert set(fidelity["corpus"]) == set(cfg.corpora) and set(fidelity["ctx"]) == set(cfg.contexts)
    stats = json.loads((DATA / study / "stats.json").read_text())
    assert set(STATS_KEYS) <= set(stats)
    assert stats["n_quants"] == len(ok) and "small-model replication" in stats["label"]
    assert stats["provenance"]["config_hash"] == cfg.config_hash
    for fig in ("kld_vs_score", "sweep", "holdout", "decomposition", "per_prompt_kld", "routing"):
        assert (FIGURES / study / f"{fig}.pdf").is_file() and (FIGURES / study / f"{fig}.png").is_file()


@pytest.mark.parametrize("name", NOTEBOOK_NAMES)
def test_notebook_runs_from_the_shipped_data(name, tmp_path, run_notebook):
    """Each notebook, default parameters except where it writes: a copy of data/smollm2."""
    results = tmp_path / "smollm2"
    shutil.copytree(DATA / "smollm2", results)
    run_notebook(NOTEBOOKS / f"{name}.ipynb", tmp_path / f"{name}.ipynb",
                 parameters={"study": "smollm2", "results": str(results), "figures": str(tmp_path / "figures")},
                 cwd=str(NOTEBOOKS))
    nb = json.loads((tmp_path / f"{name}.ipynb").read_text())
    errors = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    shown = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert shown, f"{name} displayed nothing"
    if name == "04_decomposition":  # the shipped headline numbers come back exactly from the tables
        new = json.loads((results / "stats.json").read_text())
        old = json.loads((DATA / "smollm2" / "stats.json").read_text())
        drop = lambda d: {k: v for k, v in d.items() if k != "provenance"}  # noqa: E731
        assert drop(new) == drop(old)


@pytest.mark.parametrize("study", STUDIES)
def test_reference_accuracy_is_clearly_above_chance(study):
    """Issue 6's bar: the float reference, alone with more items than the cohort runs
    (`silentzone bench-accuracy`), clears chance on every task of the default suite: the lower end of
    the Wilson 95% interval of acc lies above the task's chance level. The intervals are recomputed."""
    import pandas as pd
    from silentzone.bench.report import wilson
    from silentzone.bench.tasks import TASKS
    from silentzone.config import load as load_config
    cfg = load_config(CONFIGS / f"{study}.yaml", "default")
    table = pd.read_csv(DATA / study / "reference_accuracy.csv")
    prov = json.loads((DATA / study / "reference_accuracy.csv.provenance.json").read_text())
    assert prov["config_hash"] == cfg.config_hash and prov["stage"] == "reference_accuracy"
    assert set(cfg.tasks) <= set(table["task"]), f"{study}: tasks missing from the accuracy table"
    for _, r in table.iterrows():
        assert r["n"] == prov["n_items"][r["task"]] and r["n"] >= 50
        assert r["chance"] == TASKS[r["task"]].chance
        for col in ("acc", "acc_norm"):
            lo, hi = wilson(round(r[col] * r["n"]), int(r["n"]))
            assert (r[f"{col}_ci_low"], r[f"{col}_ci_high"]) == pytest.approx((lo, hi), abs=1e-6)
        assert r["above_chance"] == (r["acc_ci_low"] > r["chance"])
    default = table[table["task"].isin(cfg.tasks)]
    assert (default["n"] >= 200).all() and default["above_chance"].all(), \
        default[["task", "n", "acc", "acc_ci_low", "chance"]].to_string()
