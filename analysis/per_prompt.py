"""Per-prompt questions: does a prompt's KLD predict that the quant fails it, and can KLD route a
prompt to the better of several models?

Inputs are SAMPLES rows (per-prompt `correct` and `kld_mean`, nats; the reference has KLD 0 and is
left out of failure prediction).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import numpy as np
import pandas as pd
from scipy import stats as st

from .cohort import REFERENCE, item_matrix
from .stats import DEFAULT_RESAMPLES, LEVEL, bootstrap_ci, rank_rows

FLOOR = 1e-10  # nats: per-prompt KLD below this counts as this in geometric means (log 0 is -inf)


def auroc_rows(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """AUROC of `scores` for the positive class, row by row, from the Mann-Whitney U statistic.

    scores: float (b, n); positive: bool (b, n). AUROC = P(S+ > S-) + P(S+ = S-) / 2 (ties via
    average ranks). Returns (b,) floats; NaN for rows with no positives or no negatives.
    """
    r = rank_rows(scores)
    n1 = positive.sum(axis=-1)
    n0 = positive.shape[-1] - n1
    u = (r * positive).sum(axis=-1) - n1 * (n1 + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        out = u / (n1 * n0)
    return np.where((n1 > 0) & (n0 > 0), out, np.nan)


def auroc_codes_rows(codes: np.ndarray, positive: np.ndarray, n_values: int) -> np.ndarray:
    """`auroc_rows` in linear time, for bootstrap resamples of one sample.

    codes: int (b, n) order-preserving value codes in 0..n_values-1 (equal values share a code), e.g.
    `np.unique(scores, return_inverse=True)[1]` resampled; positive: bool (b, n). Counts positives and
    negatives per code and row; U = sum over codes of positives x (negatives below + negatives equal / 2).
    Returns (b,) floats, equal to `auroc_rows` on the scores (U is exact in both); NaN as there.
    """
    b = codes.shape[0]
    flat = (np.arange(b)[:, None] * n_values + codes).ravel()
    pos = np.bincount(flat, weights=positive.ravel(), minlength=b * n_values).reshape(b, n_values)
    neg = np.bincount(flat, minlength=b * n_values).reshape(b, n_values) - pos
    u = (pos * (np.cumsum(neg, axis=1) - neg / 2)).sum(axis=1)
    n1, n0 = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = u / (n1 * n0)
    return np.where((n1 > 0) & (n0 > 0), out, np.nan)


def auroc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """AUROC of 1-D `scores` for the 1-D bool labels `positive` (see `auroc_rows`)."""
    return float(auroc_rows(np.asarray(scores, float)[None], np.asarray(positive, bool)[None])[0])


def log_gm_ratio_rows(log_kld: np.ndarray, failed: np.ndarray) -> np.ndarray:
    """Log of geometric-mean KLD of failed prompts over that of passed prompts, row by row.

    log_kld: float (b, n) natural logs of floored KLD; failed: bool (b, n). Returns (b,) floats,
    NaN for rows without failed or without passed prompts.
    """
    nf = failed.sum(axis=-1)
    npass = failed.shape[-1] - nf
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (log_kld * failed).sum(axis=-1) / nf - (log_kld * ~failed).sum(axis=-1) / npass
    return np.where((nf > 0) & (npass > 0), out, np.nan)


def _quant_rows(samples: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Quant rows of SAMPLES with the reference's `correct` joined as ref_correct (items checked)."""
    item_matrix(samples)  # refuses mismatched items and missing reference rows
    ref = samples.loc[samples["model"] == REFERENCE, ["task", "item_id", "correct"]]
    q = samples[samples["model"] != REFERENCE]
    q = q.merge(ref.rename(columns={"correct": "ref_correct"}), on=["task", "item_id"], how="left")
    return q[np.isfinite(q[metric].to_numpy(float))]


def failure_prediction(samples: pd.DataFrame, rng: np.random.Generator | None = None,
                       n_resamples: int = DEFAULT_RESAMPLES, metric: str = "kld_mean",
                       by: Sequence[str] = ("model", "task"), subset: str = "all",
                       floor: float = FLOOR, level: float = LEVEL) -> pd.DataFrame:
    """How well per-prompt KLD separates prompts a quant fails from prompts it passes.

    samples: SAMPLES of one study. metric: per-prompt column (kld_mean or kld_max, nats).
    by: grouping columns (("model",) pools tasks). subset: "all" prompts, or "ref_correct" (only
    prompts the reference answers correctly, so every failure is a quantization-induced drop).
    floor: KLD values below it count as `floor` in the geometric means (n_floored says how many).
    rng: generator for the bootstrap over prompts (ratio first, then AUROC); None skips CIs.
    Returns one row per group (sorted): the `by` columns, n, n_failed, gm_failed, gm_passed (nats),
    gm_ratio = gm_failed / gm_passed, ratio_lo, ratio_hi, auroc (failure predicted by higher KLD),
    auroc_lo, auroc_hi, p_mw (two-sided Mann-Whitney p, scipy), n_floored, subset, and the counts
    n_drops (= n_failed) and n_kept (= n - n_failed): with subset "ref_correct" these are the prompts
    the quantization dropped and kept. Prompts with NaN metric are left out. The CIs resample prompts
    (items) within the group.
    """
    if subset not in ("all", "ref_correct"):
        raise ValueError(f"subset must be 'all' or 'ref_correct', got {subset!r}")
    q = _quant_rows(samples, metric)
    if subset == "ref_correct":
        q = q[q["ref_correct"].astype(bool)]
    rows = []
    for key, g in q.groupby(list(by), sort=True):
        kld = g[metric].to_numpy(float)
        failed = ~g["correct"].to_numpy(bool)
        logk = np.log(np.maximum(kld, floor))
        log_ratio = log_gm_ratio_rows(logk[None], failed[None])[0]
        rec = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        nf = int(failed.sum())
        rec.update(n=len(kld), n_failed=nf,
                   gm_failed=float(np.exp(logk[failed].mean())) if nf else math.nan,
                   gm_passed=float(np.exp(logk[~failed].mean())) if nf < len(kld) else math.nan,
                   gm_ratio=float(np.exp(log_ratio)), ratio_lo=math.nan, ratio_hi=math.nan,
                   auroc=auroc(kld, failed), auroc_lo=math.nan, auroc_hi=math.nan, p_mw=math.nan,
                   n_floored=int((kld < floor).sum()), subset=subset, n_drops=nf, n_kept=len(kld) - nf)
        if 0 < nf < len(kld):
            rec["p_mw"] = float(st.mannwhitneyu(kld[failed], kld[~failed], alternative="two-sided").pvalue)
        if rng is not None:
            ci = bootstrap_ci((logk, failed), log_gm_ratio_rows, rng, n_resamples, level)
            rec.update(ratio_lo=math.exp(ci.lo), ratio_hi=math.exp(ci.hi))
            codes = np.unique(kld, return_inverse=True)[1]
            stat = partial(auroc_codes_rows, n_values=int(codes.max()) + 1)
            ci = bootstrap_ci((codes, failed), stat, rng, n_resamples, level)
            rec.update(auroc_lo=ci.lo, auroc_hi=ci.hi)
        rows.append(rec)
    return pd.DataFrame(rows)


DROP_COLUMNS = ("model", "task", "n_kept", "n_drops", "gm_ratio", "ratio_lo", "ratio_hi", "auroc", "auroc_lo",
                "auroc_hi", "p_mw", "gm_failed", "gm_passed", "n_floored")


def drop_prediction(samples: pd.DataFrame, rng: np.random.Generator | None = None,
                    n_resamples: int = DEFAULT_RESAMPLES, metric: str = "kld_mean", floor: float = FLOOR,
                    level: float = LEVEL) -> pd.DataFrame:
    """Does per-prompt KLD predict which of the reference's correct answers a quant drops?

    `failure_prediction` with subset "ref_correct" (a prompt the reference fails says nothing about
    quantization), for every quant pooled over tasks (task "all", drawn first from `rng`) and per task
    (every task family of the study). Returns DROP_COLUMNS: model, task, n_kept, n_drops, gm_ratio
    (geometric-mean KLD of drops over kept), ratio_lo/_hi and auroc (drops predicted by higher KLD)
    with auroc_lo/_hi (percentile bootstrap over items; NaN without rng or without both drops and
    kept prompts), p_mw, gm_failed, gm_passed (nats), n_floored. Rows: pooled first, then per task.
    """
    kw = dict(n_resamples=n_resamples, metric=metric, subset="ref_correct", floor=floor, level=level)
    pooled = failure_prediction(samples, rng, by=("model",), **kw).assign(task="all")
    per_task = failure_prediction(samples, rng, by=("model", "task"), **kw)
    frames = [f.reindex(columns=list(DROP_COLUMNS)) for f in (pooled, per_task) if len(f)]
    if not frames:
        return pd.DataFrame(columns=list(DROP_COLUMNS))
    return pd.concat(frames, ignore_index=True)


def poisson_binomial_pvalue(k: int, probs: Sequence[float]) -> float:
    """Two-sided exact p-value of k successes among independent Bernoulli(probs[i]) trials: the total
    probability of counts no more likely than k (relative tolerance 1e-7, as scipy.stats.binomtest).
    With equal probs this is the binomial test. probs: 1-D in [0, 1]."""
    pmf = np.ones(1)
    for p in np.asarray(probs, float):
        pmf = np.convolve(pmf, [1 - p, p])
    if not 0 <= k < len(pmf):
        return 0.0
    return float(min(1.0, pmf[pmf <= pmf[k] * (1 + 1e-7)].sum()))


def _mean_rows(x: np.ndarray) -> np.ndarray:
    """Row means of a (b, n) array (the routing accuracy of each bootstrap resample)."""
    return x.mean(axis=-1)


def routing(samples: pd.DataFrame, models: Sequence[str], rng: np.random.Generator | None = None,
            n_resamples: int = DEFAULT_RESAMPLES, metric: str = "kld_mean",
            level: float = LEVEL) -> pd.DataFrame:
    """Route each prompt to the model with the lowest per-prompt KLD; score it where models disagree.

    samples: SAMPLES holding every model in `models` (>= 2) on the same items (checked by item_hash);
    metric: per-prompt column (nats). Prompts where any model lacks the metric are left out.
    A disagreement prompt has some models right and some wrong. Ties for the lowest KLD earn the mean
    correctness of the tied models (random tie-breaking in expectation).
    Returns one row per task (sorted) and a row task == "all" pooling them: task, n (prompts), n_disagree,
    route_acc (routing accuracy on disagreement prompts), ci_lo, ci_hi (percentile bootstrap over those
    prompts; NaN without rng), chance (expected accuracy of a uniformly random pick there; 0.5 for two
    models), p_chance (exact two-sided Poisson-binomial test of the routed count, rounded to an integer,
    vs random picks), and on all prompts: routed_acc, random_acc, best_single_acc, best_single_model,
    oracle_acc (some model right), models ('+'-joined).
    """
    if len(models) < 2:
        raise ValueError("routing needs at least two models")
    m = item_matrix(samples)
    rows = [m.row(x) for x in models]
    kld = (samples.pivot(index=["task", "item_id"], columns="model", values=metric).sort_index()
           [list(models)].to_numpy(float).T)
    ok = np.isfinite(kld).all(axis=0)
    c, kld, task = m.correct[rows][:, ok], kld[:, ok], np.asarray(m.tasks)[m.task_code[ok]]
    best = kld == kld.min(axis=0)
    credit = (c & best).sum(axis=0) / best.sum(axis=0)
    chance_i = c.mean(axis=0)
    disagree = c.any(axis=0) & ~c.all(axis=0)
    out = []
    for name in [*m.tasks, "all"]:
        sel = np.ones(len(task), bool) if name == "all" else task == name
        d = sel & disagree
        acc_single = c[:, sel].mean(axis=1) if sel.any() else np.full(len(models), np.nan)
        rec = dict(task=name, n=int(sel.sum()), n_disagree=int(d.sum()),
                   route_acc=float(credit[d].mean()) if d.any() else math.nan, ci_lo=math.nan, ci_hi=math.nan,
                   chance=float(chance_i[d].mean()) if d.any() else math.nan,
                   p_chance=poisson_binomial_pvalue(int(np.floor(credit[d].sum() + 0.5)), chance_i[d])
                   if d.any() else math.nan,
                   routed_acc=float(credit[sel].mean()) if sel.any() else math.nan,
                   random_acc=float(chance_i[sel].mean()) if sel.any() else math.nan,
                   best_single_acc=float(np.max(acc_single)),
                   best_single_model=str(models[int(np.argmax(acc_single))]),
                   oracle_acc=float(c[:, sel].any(axis=0).mean()) if sel.any() else math.nan,
                   models="+".join(models))
        if rng is not None and d.any():
            ci = bootstrap_ci((credit[d],), _mean_rows, rng, n_resamples, level)
            rec.update(ci_lo=ci.lo, ci_hi=ci.hi)
        out.append(rec)
    return pd.DataFrame(out)
