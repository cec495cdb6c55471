"""The task-selection rule of the powered profiles (silentzone.bench.selection, issue 19)."""

from __future__ import annotations

import pandas as pd
import pytest
from statsmodels.stats.proportion import proportion_confint

from silentzone.bench import selection as S
from silentzone.bench.tasks import TASKS, TaskError
from silentzone.config import load_study
from silentzone.paths import DATA


@pytest.mark.parametrize("correct,n,chance", [(60, 200, 0.25), (58, 200, 0.25), (110, 200, 0.5),
                                              (113, 200, 0.5), (0, 200, 0.25), (200, 200, 0.5),
                                              (1, 200, 0.0)])
def test_decide_is_the_wilson_lower_bound_above_chance(correct, n, chance):
    """Against statsmodels' Wilson interval (a second implementation)."""
    lo, hi = proportion_confint(correct, n, alpha=0.05, method="wilson")
    got = S.decide(correct, n, chance)
    assert got[0] == pytest.approx(lo, abs=1e-12) and got[1] == pytest.approx(hi, abs=1e-12)
    assert got[2] is (lo > chance)


def test_by_hand():
    # 60/200 at chance 1/4: p = 0.3, z^2 = 3.8415; low = (0.3 + 0.0096 - 1.96 * sqrt(0.00105 + 0.000024))
    # / 1.019208 = (0.3096 - 0.064233) / 1.019208 = 0.24075, not above 0.25; 75/200 is
    assert not S.decide(60, 200, 0.25)[2]
    assert S.decide(60, 200, 0.25)[0] == pytest.approx(0.24075, abs=1e-4)
    assert S.decide(75, 200, 0.25)[2]


@pytest.mark.parametrize("name", ["sciq", "arc_challenge", "piqa", "bfcl"])
def test_held_back_items_are_the_last_and_disjoint_from_the_study_items(name):
    task = TASKS[name]
    every = task.items()
    held = task.held_back_items(200)
    study = task.items(None, held_back=200)
    assert [i.id for i in held] == [i.id for i in every[-200:]]
    assert [i.id for i in study] + [i.id for i in held] == [i.id for i in every]
    assert [i.id for i in task.items(50, held_back=200)] == [i.id for i in every[:50]]
    with pytest.raises(TaskError, match=f"{name}: held-back items need k > 0"):
        task.held_back_items(0)
    with pytest.raises(TaskError, match="leave none"):
        task.held_back_items(len(every))


@pytest.mark.parametrize("name", ["sciq", "hellaswag", "bfcl"])
def test_a_seeded_held_back_sample_is_disjoint_reproducible_and_spread(name):
    """selection_sample: random: k items of the whole source order, fixed by the seed, disjoint
    from the study's items, which keep their source order; another seed, another sample."""
    task = TASKS[name]
    every = [i.id for i in task.items()]
    held = [i.id for i in task.held_back_items(200, 7)]
    study = [i.id for i in task.items(None, held_back=200, held_seed=7)]
    assert len(set(held)) == 200 and not set(held) & set(study)
    assert sorted(held + study, key=every.index) == every
    assert study == [i for i in every if i not in set(held)]  # source order kept
    assert held == sorted(held, key=every.index)
    assert held == [i.id for i in task.held_back_items(200, 7)]
    assert held != [i.id for i in task.held_back_items(200, 8)]
    assert held != every[-200:]
    pos = sorted(every.index(i) for i in held)
    assert pos[0] < len(every) // 4 and pos[-1] > 3 * len(every) // 4  # drawn from the whole order
    assert [i.id for i in task.items(50, held_back=200, held_seed=7)] == study[:50]


def test_the_random_sample_reaches_both_halves_of_hellaswag():
    """The first rule's flaw: HellaSwag's source order runs ActivityNet first, WikiHow last, so the
    last 200 were all WikiHow; the seeded sample draws from both."""
    task = TASKS["hellaswag"]
    src = lambda items: {i.content["source_id"].split("~")[0] for i in items}  # noqa: E731
    assert src(task.held_back_items(200)) == {"wikihow"}
    assert src(task.held_back_items(200, load_study("smollm2", "power").held_seed)) == {"activitynet", "wikihow"}


def test_candidates_are_the_likelihood_scored_tasks():
    assert set(S.candidates()) == {t for t, v in TASKS.items() if v.kind in ("mc", "lastword")}
    assert {"sciq", "piqa", "hellaswag", "mmlu", "lambada"} <= set(S.candidates())


@pytest.mark.parametrize("study", ["smollm2", "gemma3"])
def test_power_profile_lists_exactly_the_selected_tasks(study):
    """The profile's tasks are the rule's outcome in the shipped table, recomputed here from its
    counts (not from its `selected` column)."""
    table = pd.read_csv(DATA / study / "task_selection.csv")
    assert set(table["task"]) == set(S.candidates()) | {"bfcl"}
    prof = load_study(study, "power")
    assert (table["n"] == prof.profile.selection_items).all()
    # the likelihood rows come from the seeded sample; the bfcl row is the first rule's (last 200)
    assert prof.held_seed == 20261122
    assert set(table.loc[table["task"] != "bfcl", "held_back"]) == {"random:20261122"}
    assert list(table.loc[table["task"] == "bfcl", "held_back"]) == ["last"]
    n_all = {t: len(TASKS[t].items()) for t in table["task"]}
    assert (table["n_study"] == table["task"].map(n_all) - 200).all()
    chosen = [t for t, c, n in zip(table["task"], table["correct"], table["n"])
              if proportion_confint(int(c), int(n), alpha=0.05, method="wilson")[0] > TASKS[t].chance]
    assert list(table.loc[table["selected"], "task"]) == chosen
    assert set(prof.tasks) == set(chosen)
    assert prof.kv_cache == "f32"
    default = {q.id for q in load_study(study).quants}
    assert {q.id for q in prof.quants} == default | {"awq-w4g64"}


# BFCL v4 single-turn, counted from its files: simple_python 400, multiple 200, parallel 200,
# parallel_multiple 200, irrelevance 240; a model that never calls is right on irrelevance alone
NO_CALL_FLOOR = 240 / (400 + 200 + 200 + 200 + 240)


def test_the_bfcl_chance_level_is_the_no_call_floor():
    every = TASKS["bfcl"].items()
    assert len(every) == 1240 and sum(i.meta["category"] == "irrelevance" for i in every) == 240
    assert TASKS["bfcl"].chance == pytest.approx(NO_CALL_FLOOR, abs=1e-15)
    assert "bfcl" not in S.candidates() and "bfcl" in S.OPT_IN


@pytest.mark.parametrize("study", ["smollm2", "gemma3"])
def test_the_shipped_bfcl_row_follows_the_rule(study):
    """The bfcl row: 200 held-back items, Wilson interval as statsmodels computes it from the
    counts, selected iff its lower end is above the no-call floor, and the power profile lists bfcl
    iff selected; the per-category file adds up to it."""
    table = pd.read_csv(DATA / study / "task_selection.csv")
    (r,) = table[table["task"] == "bfcl"].itertuples(index=False)
    lo, hi = proportion_confint(int(r.correct), int(r.n), alpha=0.05, method="wilson")
    assert r.n == 200 and r.kind == "gen" and r.chance == pytest.approx(NO_CALL_FLOOR, rel=1e-9)
    assert r.acc == pytest.approx(r.correct / 200, rel=1e-9)
    assert (r.acc_ci_low, r.acc_ci_high) == (pytest.approx(lo, abs=1e-9), pytest.approx(hi, abs=1e-9))
    assert bool(r.selected) is bool(lo > NO_CALL_FLOOR)
    assert r.n_study == 1240 - 200
    assert ("bfcl" in load_study(study, "power").tasks) is bool(lo > NO_CALL_FLOOR)
    cats = pd.read_csv(DATA / study / "task_selection_bfcl.csv").set_index("category")
    parts = cats.drop(index="all")
    assert parts["n"].sum() == 200 and parts["correct"].sum() == r.correct
    assert cats.loc["all", "correct"] == r.correct and cats.loc["all", "n"] == 200
    held = [i.meta["category"] for i in TASKS["bfcl"].held_back_items(200)]
    assert {c: held.count(c) for c in set(held)} == parts["n"].to_dict()
    assert cats.loc["all", "no_call_floor"] == pytest.approx(held.count("irrelevance") / 200, abs=1e-9)
    assert list(parts["no_call_floor"]) == [float(c == "irrelevance") for c in parts.index]
    for c in cats.itertuples():
        lo, hi = proportion_confint(int(c.correct), int(c.n), alpha=0.05, method="wilson")
        assert (c.acc_ci_low, c.acc_ci_high) == (pytest.approx(lo, abs=1e-9), pytest.approx(hi, abs=1e-9))


@pytest.mark.parametrize("study", ["smollm2", "gemma3"])
def test_livecodebench_is_stated_as_not_measured(study):
    """No release file offline: bench-select refuses it before running anything, the table has
    no row for it, and docs/power.md says so (not the fixture's score)."""
    from silentzone.errors import SilentzoneError
    with pytest.raises(SilentzoneError, match="livecodebench: not measured: no release file offline"):
        S.select_tasks(load_study(study, "power"), ["livecodebench"])
    assert "livecodebench" not in set(pd.read_csv(DATA / study / "task_selection.csv")["task"])
    from silentzone.report.numbers import power_page
    assert power_page().count("**LiveCodeBench** (`livecodebench`): not measured: no release file offline") == 2


def test_an_opt_in_run_adds_its_rows_and_keeps_the_others(tmp_path, monkeypatch):
    """select_tasks on bfcl alone (the reference's run replaced by made-up rows: 50 of 200 right,
    the first 50 held-back items) rewrites no other row of an existing table, adds bfcl in registry
    order, and lists both runs in the provenance."""
    import json
    from silentzone.bench import run as R
    import silentzone.models as M
    study = load_study("smollm2", "power")
    out = tmp_path / "task_selection.csv"
    shipped = DATA / "smollm2" / "task_selection.csv"
    # the table before tool calling joined it: the likelihood rows, a provenance without runs
    old = "".join(line for line in shipped.read_text().splitlines(keepends=True) if ",bfcl," not in line)
    out.write_text(old)
    prov = json.loads(shipped.with_name(shipped.name + ".provenance.json").read_text())
    prov.pop("runs", None)
    (tmp_path / "task_selection.csv.provenance.json").write_text(json.dumps(prov))
    held = TASKS["bfcl"].held_back_items(200, study.held_seed)
    seen = {}

    def fake_run(study_, models, tasks=None, part="study", **kw):
        seen.update(tasks=tasks, part=part, models=set(models))
        return pd.DataFrame({"study": "smollm2", "task": "bfcl", "item_id": [i.id for i in held],
                             "correct": [j < 50 for j in range(200)]})

    monkeypatch.setattr(R, "run_benchmarks", fake_run)
    monkeypatch.setattr(M, "resolve", lambda *a, **k: type("Ref", (), {"gguf": "ref.gguf"})())
    table = S.select_tasks(study, ["bfcl"], out=out)
    assert seen == {"tasks": ["bfcl"], "part": "selection", "models": {"reference"}}
    new = out.read_text().splitlines()
    assert new[:-1] == old.splitlines()  # every earlier row, byte for byte, then bfcl (registry order)
    lo, hi = proportion_confint(50, 200, alpha=0.05, method="wilson")
    assert new[-1].startswith("smollm2,bfcl,gen,0.1935483871,200,50,0.25,")
    assert table.iloc[-1]["selected"] == bool(lo > NO_CALL_FLOOR)
    # 50/200: centre (0.25 + 0.0096037) / 1.0192073 = 0.254711, half 1.96 * sqrt(0.0009375 + 0.0000240)
    # / 1.0192073 = 0.059631; low 0.195080 > 240/1240 = 0.193548: selected, by a hair
    assert lo == pytest.approx(0.19508, abs=1e-5) and bool(table.iloc[-1]["selected"])
    prov = json.loads((tmp_path / "task_selection.csv.provenance.json").read_text())
    assert [r["tasks"] for r in prov["runs"]] == [S.candidates(), ["bfcl"]]
    cats = pd.read_csv(tmp_path / "task_selection_bfcl.csv").set_index("category")
    assert cats.loc["all", "correct"] == 50 and cats["n"].drop(index="all").sum() == 200
    S.select_tasks(study, ["bfcl"], out=out)  # again: the same table, bfcl's run listed once
    assert out.read_text().splitlines() == new
    prov = json.loads((tmp_path / "task_selection.csv.provenance.json").read_text())
    assert [r["tasks"] for r in prov["runs"]] == [S.candidates(), ["bfcl"]]


def test_the_selection_part_runs_the_reference_alone():
    from silentzone.bench.run import run_benchmarks
    with pytest.raises(ValueError, match="reference alone"):
        run_benchmarks(load_study("smollm2", "power"), {"reference": "r.gguf", "Q4_0": "q"}, tasks=["bfcl"],
                       part="selection")
