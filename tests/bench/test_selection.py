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


@pytest.mark.parametrize("name", ["sciq", "arc_challenge", "piqa"])
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


def test_candidates_are_the_likelihood_scored_tasks():
    assert set(S.candidates()) == {t for t, v in TASKS.items() if v.kind in ("mc", "lastword")}
    assert {"sciq", "piqa", "hellaswag", "mmlu", "lambada"} <= set(S.candidates())


@pytest.mark.parametrize("study", ["smollm2", "gemma3"])
def test_power_profile_lists_exactly_the_selected_tasks(study):
    """The profile's tasks are the rule's outcome in the shipped table, recomputed here from its
    counts (not from its `selected` column)."""
    table = pd.read_csv(DATA / study / "task_selection.csv")
    assert set(table["task"]) == set(S.candidates())
    prof = load_study(study, "power")
    assert (table["n"] == prof.profile.selection_items).all()
    chosen = [t for t, c, n in zip(table["task"], table["correct"], table["n"])
              if proportion_confint(int(c), int(n), alpha=0.05, method="wilson")[0] > TASKS[t].chance]
    assert list(table.loc[table["selected"], "task"]) == chosen
    assert set(prof.tasks) == set(chosen)
    assert prof.kv_cache == "f32"
    default = {q.id for q in load_study(study).quants}
    assert {q.id for q in prof.quants} == default | {"awq-w4g64"}
