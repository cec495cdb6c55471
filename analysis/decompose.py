"""Volume-direction decomposition of score changes against the reference, prompt by prompt.

For one task with N items, quant Q against reference R: leapfrogs = #(Q right, R wrong), drops =
#(R right, Q wrong) (the paper's words, after Dutta et al.; "gains" and "losses" elsewhere), vol =
leapfrogs + drops, f = leapfrogs / vol (NaN when vol = 0), and the exact identity
    score_Q = score_R + vol (2 f - 1) / N        (= score_R + (leapfrogs - drops) / N)
which `check_identity` verifies in rational arithmetic on every row. KLD is expected to track vol
(how much answers move) but not f (which way they move).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pandas as pd

from .cohort import (DEFAULT_DEFINITION, DEFAULT_THRESHOLD, REFERENCE, Weights, cohort_table, exact_task_weights,
                     item_matrix, metric_columns, zone_mask)
from .stats import DEFAULT_RESAMPLES, correlate

COMPOSITE = "composite"  # task label of the rows that pool all tasks
EXACT_BELOW = 25  # McNemar: exact binomial test when gains + losses < 25, chi-square otherwise
DECOMP_COLUMNS = ("model", "task", "n", "ref_correct", "correct", "leapfrogs", "drops", "vol", "f", "delta",
                  "vol_rate", "mcnemar_p", "mcnemar_exact")
TARGETS = {"vol": "vol_rate", "f": "f", "delta": "delta"}  # what fidelity metrics are correlated with


def mcnemar(gains: int, losses: int, exact_below: int = EXACT_BELOW) -> tuple[float, float, bool]:
    """McNemar test of H0: a discordant prompt is equally likely a gain or a loss.

    gains, losses: discordant counts. Exact two-sided binomial test when gains + losses < exact_below,
    else chi-square with continuity correction (statsmodels `mcnemar`). Returns (statistic, p, exact);
    p = 1 when there are no discordant prompts.
    """
    from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

    exact = gains + losses < exact_below
    if gains + losses == 0:
        return 0.0, 1.0, exact
    res = sm_mcnemar(np.array([[0, losses], [gains, 0]]), exact=exact, correction=True)
    return float(res.statistic), float(min(1.0, res.pvalue)), exact


def decomposition(samples: pd.DataFrame, weights: Weights = None) -> pd.DataFrame:
    """Leapfrogs, drops, volume and direction of every quant against the reference, per task and pooled.

    samples: SAMPLES rows of one study (reference included). weights: task weights of the composite
    (see `cohort.task_weights`). Returns one row per (model, task) with task sorted and then a row
    task == "composite" per model; columns DECOMP_COLUMNS:
      n, ref_correct, correct, leapfrogs, drops, vol: integer counts (composite rows: sums over tasks);
      f = leapfrogs / vol (NaN when vol == 0); delta = score change as a fraction (task rows: (leapfrogs -
      drops) / n; composite rows: weighted sum of task deltas = change of the composite score);
      vol_rate = vol / n (composite: weighted sum of task rates); mcnemar_p, mcnemar_exact (`mcnemar`).
    delta and vol_rate are summed as exact Fractions (weights from `exact_task_weights`) and rounded
    once, so quants with equal counts tie exactly and composite delta ranks like the composite score.
    The identity is checked on every row (`check_identity`) before returning.
    """
    m = item_matrix(samples)
    if COMPOSITE in m.tasks:
        raise ValueError(f"a task is named {COMPOSITE!r}, which labels the pooled rows")
    ref = m.correct[m.row(REFERENCE)]
    n_t = np.bincount(m.task_code, minlength=len(m.tasks))
    w = exact_task_weights(m.tasks, n_t, weights)
    rows = []
    for i, model in enumerate(m.models):
        if model == REFERENCE:
            continue
        q = m.correct[i]
        per = []
        for t, task in enumerate(m.tasks):
            sel = m.task_code == t
            r_, q_ = ref[sel], q[sel]
            g, l = int((q_ & ~r_).sum()), int((~q_ & r_).sum())
            per.append((task, int(sel.sum()), int(r_.sum()), int(q_.sum()), g, l))
        for task, n, rc, qc, g, l in per:
            rows.append(_row(model, task, n, rc, qc, g, l, (g - l) / n, (g + l) / n))
        tot = [sum(p[k] for p in per) for k in range(1, 6)]
        delta = float(sum((wt * Fraction(p[4] - p[5], p[1]) for wt, p in zip(w, per)), Fraction(0)))
        rate = float(sum((wt * Fraction(p[4] + p[5], p[1]) for wt, p in zip(w, per)), Fraction(0)))
        rows.append(_row(model, COMPOSITE, *tot, delta, rate))
    out = pd.DataFrame(rows, columns=list(DECOMP_COLUMNS))
    check_identity(out)
    return out


def _row(model, task, n, rc, qc, g, l, delta, rate) -> tuple:
    """One DECOMP_COLUMNS row from counts (n items, reference/quant correct, leapfrogs g, drops l)."""
    vol = g + l
    stat_p = mcnemar(g, l)
    f = g / vol if vol else math.nan
    return (model, task, n, rc, qc, g, l, vol, f, delta, rate, stat_p[1], stat_p[2])


def check_identity(table: pd.DataFrame) -> None:
    """Raise AssertionError unless every row of a `decomposition` table satisfies, in exact arithmetic,
    correct / n == ref_correct / n + vol (2 f - 1) / n with vol == leapfrogs + drops and f == leapfrogs / vol;
    f must be NaN exactly when vol == 0, and then correct == ref_correct and (task rows) delta == 0.
    Task rows also need delta == (leapfrogs - drops) / n to the last bit."""
    for r in table.itertuples(index=False):
        n, g, l, vol = int(r.n), int(r.leapfrogs), int(r.drops), int(r.vol)
        if vol != g + l:
            raise AssertionError(f"{r.model}/{r.task}: vol {vol} != leapfrogs {g} + drops {l}")
        lhs = Fraction(int(r.correct), n)
        if vol == 0:
            moved = int(r.correct) != int(r.ref_correct) or (r.task != COMPOSITE and r.delta != 0)
            if not math.isnan(r.f) or moved:
                raise AssertionError(f"{r.model}/{r.task}: vol == 0 needs f NaN, equal scores, delta 0")
            continue
        f = Fraction(g, vol)
        if float(f) != r.f:
            raise AssertionError(f"{r.model}/{r.task}: f {r.f} != leapfrogs/vol {f}")
        if lhs != Fraction(int(r.ref_correct), n) + vol * (2 * f - 1) / n:
            raise AssertionError(f"{r.model}/{r.task}: score identity fails: {lhs} != "
                                 f"{Fraction(int(r.ref_correct), n)} + {vol} (2 {f} - 1) / {n}")
        if r.task != COMPOSITE and r.delta != float(Fraction(g - l, n)):
            raise AssertionError(f"{r.model}/{r.task}: delta {r.delta} != (leapfrogs - drops) / n")


def decomposition_correlations(samples: pd.DataFrame, fidelity: pd.DataFrame, quants: pd.DataFrame,
                               corpus: str, ctx: int, metrics: list[str] | None = None,
                               definition: str = DEFAULT_DEFINITION, threshold: float = DEFAULT_THRESHOLD,
                               rng: np.random.Generator | None = None, n_resamples: int = DEFAULT_RESAMPLES,
                               weights: Weights = None) -> pd.DataFrame:
    """Spearman rho of each fidelity metric with vol (as vol_rate), f and delta, over the cohort and
    inside the silent zone (zone from the composite degradation), per task and composite.

    Inputs: the three contract tables, the (corpus, ctx) of the fidelity metrics, metric names (None:
    all of them), the zone rule, a generator for bootstrap/permutation (None: skip them).
    Returns a tidy frame: task, metric, target (vol | f | delta), scope (full | zone) and CORR_COLUMNS.
    Quants with f NaN (no flips) drop out of the f correlations; `n` says how many remain.
    """
    cohort = cohort_table(samples, fidelity, quants, corpus, ctx, weights)
    dec = decomposition(samples, weights)
    tasks = sorted(t for t in dec["task"].unique() if t != COMPOSITE) + [COMPOSITE]
    rows = []
    for metric in metrics or metric_columns(cohort):
        zone = zone_mask(cohort, definition, threshold, metric).to_numpy()
        x = cohort[metric].to_numpy(float)
        for task in tasks:
            d = dec[dec["task"] == task].set_index("model").reindex(cohort["quant_id"])
            for target, col in TARGETS.items():
                y = d[col].to_numpy(float)
                for scope, sel in (("full", np.ones(len(x), bool)), ("zone", zone)):
                    rows.append(dict(task=task, metric=metric, target=target, scope=scope,
                                     **correlate(x[sel], y[sel], rng, n_resamples)))
    return pd.DataFrame(rows)
