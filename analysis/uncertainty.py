"""Uncertainty over benchmark items: score SEs (paired against the reference), the item bootstrap of
the zone correlation, and the noise ceiling (what a perfect metric would show at these item counts).

Every quant answers the same items as the reference, so the item-level noise is paired. Scores are
handled as integers over a common denominator (`cohort.IntScores`) in every resample and simulation,
so zone membership is decided exactly and equal counts tie exactly in ranks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .cohort import (DEFAULT_DEFINITION, DEFAULT_THRESHOLD, REFERENCE, IntScores, Weights, cohort_table,
                     exact_task_weights, item_matrix, task_counts, zone_rule_int)
from .stats import DEFAULT_RESAMPLES, LEVEL, masked_spearman_rows

POWER_GRID = (30, 100, 300, 1000, 3000, 10_000)  # items per task searched by `items_for_power`
DEFAULT_SIMS = 2000


def score_se(samples: pd.DataFrame, weights: Weights = None) -> pd.DataFrame:
    """Per model: composite score, its SE over items, and the paired SE of (model - reference).

    The composite is sum_t w_t p_t (task accuracy p_t over n_t items, weights `exact_task_weights`);
    items are independent draws within a task, so var = sum_t w_t^2 v_t / n_t with the item variance
    v_t = p_t (1 - p_t) (population form, as sqrt(p (1 - p) / n) for one task). Paired: per item
    d = quant - reference in {-1, 0, 1}, v_t(d) = (gains + losses) / n_t - ((gains - losses) / n_t)^2.
    Returns one row per model (sorted, reference included): model, score, se, delta (score - ref),
    se_paired (0 for the reference), se_unpaired = sqrt(se^2 + se_ref^2) (what ignoring the pairing
    would give). All in score units (fractions; x100 for points).
    """
    m = item_matrix(samples)
    k, n_t = task_counts(m)
    w = np.array([float(x) for x in exact_task_weights(m.tasks, n_t, weights)])
    p = k / n_t
    score = p @ w
    se = np.sqrt((p * (1 - p) / n_t) @ (w * w))
    ref = m.correct[m.row(REFERENCE)]
    onehot = (m.task_code[:, None] == np.arange(len(m.tasks))[None, :]).astype(np.int64)
    gains = (m.correct & ~ref).astype(np.int64) @ onehot
    losses = (~m.correct & ref).astype(np.int64) @ onehot
    var_d = (gains + losses) / n_t - ((gains - losses) / n_t) ** 2
    r = m.row(REFERENCE)
    return pd.DataFrame({"model": list(m.models), "score": score, "se": se, "delta": score - score[r],
                         "se_paired": np.sqrt((var_d / n_t) @ (w * w)),
                         "se_unpaired": np.sqrt(se ** 2 + se[r] ** 2)})


def item_resample_counts(task_code: np.ndarray, rng: np.random.Generator, n_resamples: int) -> np.ndarray:
    """Stratified bootstrap of items as multiplicities: int64 (n_resamples, I), row b giving how often
    each item is drawn in resample b; each task's n_t items are drawn n_t times with replacement (one
    multinomial per task, tasks in index order), so task sizes are kept."""
    task_code = np.asarray(task_code)
    out = np.zeros((n_resamples, len(task_code)), np.int64)
    for t in np.unique(task_code):
        idx = np.flatnonzero(task_code == t)
        out[:, idx] = rng.multinomial(len(idx), np.full(len(idx), 1 / len(idx)), size=n_resamples)
    return out


@dataclass(frozen=True, eq=False)
class ItemBootstrap:
    """Item-bootstrap replicates of one cohort (see `item_bootstrap`).

    quant_ids: (n,) cohort order. in_zone: bool (B, n). score: float (B, n) composite scores.
    rho_zone, p_zone, rho_full: (B,) (NaN where undefined). n_zone: int (B,) zone members with a
    finite metric. rho_zone_obs, rho_full_obs, n_zone_obs: the same on the observed items.
    """

    quant_ids: tuple[str, ...]
    in_zone: np.ndarray
    score: np.ndarray
    rho_zone: np.ndarray
    p_zone: np.ndarray
    rho_full: np.ndarray
    n_zone: np.ndarray
    rho_zone_obs: float
    rho_full_obs: float
    n_zone_obs: int


def _cohort_arrays(samples, fidelity, quants, corpus, ctx, metric, weights):
    """(item matrix, cohort frame, model rows of the cohort (n,), metric (n,), bpw (n,), weights (T,))."""
    m = item_matrix(samples)
    cohort = cohort_table(samples, fidelity, quants, corpus, ctx, weights)
    rows = np.array([m.row(q) for q in cohort["quant_id"]], int)
    n_t = np.bincount(m.task_code, minlength=len(m.tasks))
    return (m, cohort, rows, cohort[metric].to_numpy(float), cohort["bpw"].to_numpy(float),
            exact_task_weights(m.tasks, n_t, weights))


def item_bootstrap(samples: pd.DataFrame, fidelity: pd.DataFrame, quants: pd.DataFrame, corpus: str, ctx: int,
                   rng: np.random.Generator, metric: str = "kld_mean", definition: str = DEFAULT_DEFINITION,
                   threshold: float = DEFAULT_THRESHOLD, weights: Weights = None,
                   n_resamples: int = DEFAULT_RESAMPLES) -> ItemBootstrap:
    """Resample items (stratified by task, `item_resample_counts`) and recompute, on every resample,
    every model's composite score (exact integers), the zone (`zone_rule_int`, same rule) and Spearman
    rho(metric, score) in the zone and over the full cohort. The metric (a per-quant fidelity value of
    (corpus, ctx)) is held fixed: this is the uncertainty from the benchmark items only, beside the
    quant-resampling CI of `stats.correlate`. Returns an `ItemBootstrap`.
    """
    m, cohort, rows, x, bpw, w = _cohort_arrays(samples, fidelity, quants, corpus, ctx, metric, weights)
    ref = m.row(REFERENCE)
    counts = item_resample_counts(m.task_code, rng, n_resamples)
    ints = IntScores.of(np.bincount(m.task_code, minlength=len(m.tasks)), w)
    corr = m.correct.astype(np.int64)
    k = np.stack([counts[:, m.task_code == t] @ corr[:, m.task_code == t].T for t in range(len(m.tasks))],
                 axis=-1)  # (B, M, T)
    num = ints.num(k)
    zone = zone_rule_int(num[:, rows], num[:, [ref]], ints.den, x, bpw, definition, threshold)
    fin = np.isfinite(x)
    rho_zone, p_zone = masked_spearman_rows(x, num[:, rows], zone & fin)
    rho_full, _ = masked_spearman_rows(x, num[:, rows], np.broadcast_to(fin, zone.shape))
    obs_num = np.asarray(cohort["score_num"], np.int64)
    obs_zone = zone_rule_int(obs_num, int(cohort["ref_num"].iloc[0]), int(cohort["score_den"].iloc[0]), x, bpw,
                             definition, threshold) & fin
    rz, _ = masked_spearman_rows(x, obs_num[None], obs_zone[None])
    rf, _ = masked_spearman_rows(x, obs_num[None], fin[None])
    return ItemBootstrap(tuple(cohort["quant_id"]), zone, num[:, rows] / ints.den, rho_zone, p_zone, rho_full,
                         (zone & fin).sum(axis=1), float(rz[0]), float(rf[0]), int(obs_zone.sum()))


def _interval(values: np.ndarray, level: float) -> tuple[float, float, float, int]:
    """(lo, median, hi, n finite) of the finite values; NaNs when none."""
    ok = values[np.isfinite(values)]
    if not ok.size:
        return math.nan, math.nan, math.nan, 0
    q = (1 - level) / 2
    lo, med, hi = np.quantile(ok, [q, 0.5, 1 - q])
    return float(lo), float(med), float(hi), int(ok.size)


def item_bootstrap_summary(boot: ItemBootstrap, level: float = LEVEL) -> dict:
    """Flat dict for stats.json from an `ItemBootstrap` (the "items" CIs; percentile intervals):
    rho_zone_items_lo/_median/_hi and n_boot_items_zone (resamples with a defined zone rho; resamples
    whose zone has < 3 members or constant scores are left out), rho_full_items_lo/_hi,
    n_zone_items_lo/_median/_hi (zone size over resamples), frac_zone_items_significant (share of
    all resamples with p < 0.05 in the zone), n_item_resamples, and the observed rho_zone, rho_full,
    n_zone. Undefined numbers are None.
    """
    zlo, zmed, zhi, zn = _interval(boot.rho_zone, level)
    flo, _, fhi, _ = _interval(boot.rho_full, level)
    nlo, nmed, nhi, _ = _interval(boot.n_zone.astype(float), level)
    out = dict(rho_zone_items_lo=zlo, rho_zone_items_median=zmed, rho_zone_items_hi=zhi, n_boot_items_zone=zn,
               rho_full_items_lo=flo, rho_full_items_hi=fhi, n_zone_items_lo=nlo, n_zone_items_median=nmed,
               n_zone_items_hi=nhi,
               frac_zone_items_significant=float(np.mean(np.nan_to_num(boot.p_zone, nan=1.0) < 0.05)),
               n_item_resamples=int(len(boot.rho_zone)), rho_zone=boot.rho_zone_obs,
               rho_full=boot.rho_full_obs, n_zone=boot.n_zone_obs)
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


def zone_probability(boot: ItemBootstrap) -> pd.DataFrame:
    """Each quant's probability of being in the zone under item resampling: quant_id, p_in_zone
    (share of resamples; the zone membership ignores whether the metric is finite)."""
    return pd.DataFrame({"quant_id": list(boot.quant_ids), "p_in_zone": boot.in_zone.mean(axis=0)})


TRUTHS = ("conservative", "optimistic")


def true_accuracies(task_acc: np.ndarray, ref_acc: np.ndarray, score: np.ndarray, ref_score: float,
                    metric: np.ndarray, w: np.ndarray, truth: str = "conservative") -> np.ndarray:
    """True per-task accuracies (n, T) of the quants under a truth model in which quality is a strictly
    monotone (decreasing) function of the metric.

    task_acc: observed (n, T); ref_acc: reference (T,); score: observed composites (n,); ref_score;
    metric: (n,) finite and positive; w: task weights (T,).
    conservative: the cohort-wide trend. OLS fit of the observed composite on log(metric) over all
      quants, s_hat = a + b log(metric); each quant's truth is the reference's task profile shifted by
      its fitted composite change: p_qt = clip(ref_acc_t + s_hat_q - ref_score, 0, 1). Strictly
      monotone when b < 0 (the fit decides the sign; a positive b gives a rising truth).
    optimistic: the observed spread. The observed task-accuracy rows, sorted by composite (best
      first, ties by row order), are handed out in order of increasing metric (ties by row order):
      the lowest metric gets the best observed row.
    """
    if truth == "conservative":
        lx = np.log(metric)
        b, a = np.polyfit(lx, score, 1)
        return np.clip(ref_acc[None, :] + (a + b * lx - ref_score)[:, None], 0.0, 1.0)
    if truth == "optimistic":
        best_first = np.argsort(-score, kind="stable")
        out = np.empty_like(task_acc, dtype=float)
        out[np.argsort(metric, kind="stable")] = task_acc[best_first]
        return out
    raise ValueError(f"truth must be one of {TRUTHS}, got {truth!r}")


COUPLINGS = ("independent", "shared", "flips")


def task_flip_rates(m) -> np.ndarray:
    """Observed disagreement (volume) rate of every model with the reference per task, float (M, T):
    (gains + losses) / n_t with gains = #(model right, reference wrong), losses = #(reference right,
    model wrong) (`decompose.decomposition`'s vol_rate; 0 for the reference itself). m: ItemMatrix."""
    ref = m.correct[m.row(REFERENCE)]
    onehot = (m.task_code[:, None] == np.arange(len(m.tasks))[None, :]).astype(np.int64)
    vol = (m.correct != ref[None, :]).astype(np.int64) @ onehot
    return vol / onehot.sum(axis=0)


def flip_rates(p_ref: np.ndarray, p_true: np.ndarray, vol: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-item flip probabilities against the reference: (d, g, vol_used), broadcast shapes.

    d: probability that a reference-correct item is dropped (quant wrong); g: probability that a
    reference-wrong item is leapfrogged (quant right). Chosen so that (a) the quant's expected accuracy
    is p_true, p_ref (1 - d) + (1 - p_ref) g = p_true, and (b) its expected disagreement rate with the
    reference is vol, p_ref d + (1 - p_ref) g = vol:
        d = (vol + (p_ref - p_true)) / (2 p_ref),   g = (vol - (p_ref - p_true)) / (2 (1 - p_ref)).
    Feasibility: vol is clipped into [|p_ref - p_true|, min(p_ref + p_true, 2 - p_ref - p_true)] (the
    range a 2x2 table with these margins allows; never empty) BEFORE solving, so (a) always holds
    exactly and (b) holds for the clipped vol_used: a vol below |p_ref - p_true| (too little churn to
    move the accuracy that far) is raised to it, i.e. the quant only drops (p_true < p_ref) or only
    gains (p_true > p_ref). With p_ref = 0 there are no reference-correct items (d = 0, g = p_true);
    with p_ref = 1 no reference-wrong ones (g = 0, d = 1 - p_true). d, g are finally clipped to [0, 1]
    against rounding.
    """
    p_ref, p_true = np.asarray(p_ref, float), np.clip(np.asarray(p_true, float), 0.0, 1.0)
    p_ref = np.clip(p_ref, 0.0, 1.0)
    diff = p_ref - p_true
    lo = np.abs(diff)
    hi = np.minimum(p_ref + p_true, 2.0 - p_ref - p_true)
    v = np.clip(np.asarray(vol, float), lo, np.maximum(lo, hi))
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where(p_ref > 0, (v + diff) / (2 * np.where(p_ref > 0, p_ref, 1.0)), 0.0)
        g = np.where(p_ref < 1, (v - diff) / (2 * np.where(p_ref < 1, 1.0 - p_ref, 1.0)), 0.0)
    return np.clip(d, 0.0, 1.0), np.clip(g, 0.0, 1.0), v


def simulate_flips(p_ref: np.ndarray, p_true: np.ndarray, vol: np.ndarray, n_items: np.ndarray,
                   rng: np.random.Generator, n_sims: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The "flips" coupling as counts: (k_ref (S, T), drops (S, M, T), gains (S, M, T)).

    p_ref: (T,) reference accuracies; p_true, vol: (M, T) quants' true accuracies and disagreement
    rates with the reference; n_items: (T,). Per simulation and task the reference gets K_ref ~
    Binomial(n_t, p_ref) items right, shared by every quant of that simulation; each quant independently
    drops each of those with probability d and gains each of the n_t - K_ref others with probability g
    (`flip_rates`): drops ~ Binomial(K_ref, d), gains ~ Binomial(n_t - K_ref, g) (flips are independent
    across items, so only the counts are needed). The quant's count is K_ref - drops + gains.
    """
    n_items = np.asarray(n_items, np.int64)
    d, g, _ = flip_rates(np.asarray(p_ref)[None, :], p_true, vol)
    k_ref = rng.binomial(n_items, np.clip(p_ref, 0.0, 1.0), size=(n_sims, len(n_items)))
    drops = rng.binomial(k_ref[:, None, :], d[None], size=(n_sims, *d.shape))
    gains = rng.binomial((n_items - k_ref)[:, None, :], g[None], size=(n_sims, *g.shape))
    return k_ref, drops, gains


def simulate_counts(p: np.ndarray, n_items: np.ndarray, rng: np.random.Generator, n_sims: int,
                    coupling: str = "independent", vol: np.ndarray | None = None, ref: int = -1) -> np.ndarray:
    """Correct counts (n_sims, M, T) of M models with true task accuracies p (M, T) on n_items (T,).

    independent: every model's items are fresh draws, k ~ Binomial(n_t, p) per model and task (no
      pairing between models: the most item noise in differences).
    shared: the models answer the same items and the answers are comonotone: item i of task t has one
      uniform u_i, and a model is right iff u_i < p_mt (a better model answers a superset of items:
      the fewest flips the accuracies allow, the least noise in differences). Drawn as one multinomial
      per task over the intervals between the sorted accuracies.
    flips: the realistic middle. Row `ref` of p is the reference; it answers n_t items (count K_ref ~
      Binomial(n_t, p_ref)) and every other model answers the same items as the reference except for
      independent per-item flips (`simulate_flips`): its expected accuracy is its p and its expected
      disagreement rate with the reference is vol (M, T) (required; the `ref` row of vol is ignored;
      clipped to what the accuracies allow, see `flip_rates`). Models are conditionally independent
      given the reference's answers.
    """
    n_items = np.asarray(n_items, np.int64)
    if coupling == "independent":
        return rng.binomial(n_items, p, size=(n_sims, *p.shape))
    if coupling == "flips":
        if vol is None:
            raise ValueError('coupling "flips" needs vol (M, T): disagreement rates with the reference')
        r = range(p.shape[0])[ref]
        others = np.array([i for i in range(p.shape[0]) if i != r], int)
        k_ref, drops, gains = simulate_flips(p[r], p[others], np.asarray(vol, float)[others], n_items, rng,
                                             n_sims)
        out = np.empty((n_sims, *p.shape), np.int64)
        out[:, r] = k_ref
        out[:, others] = k_ref[:, None, :] - drops + gains
        return out
    if coupling != "shared":
        raise ValueError(f"coupling must be one of {COUPLINGS}, got {coupling!r}")
    out = np.empty((n_sims, *p.shape), np.int64)
    for t in range(p.shape[1]):
        cuts = np.unique(np.clip(p[:, t], 0.0, 1.0))
        probs = np.diff(np.concatenate([[0.0], cuts, [1.0]]))
        cells = rng.multinomial(int(n_items[t]), np.clip(probs, 0, None) / probs.sum(), size=n_sims)
        below = np.cumsum(cells, axis=1)  # (S, len(cuts) + 1): items with u below each cut
        out[:, :, t] = below[:, np.searchsorted(cuts, p[:, t])]
    return out


def simulate_zone_rho(p_true: np.ndarray, p_ref: np.ndarray, metric: np.ndarray, bpw: np.ndarray,
                      n_items: np.ndarray, w: tuple, rng: np.random.Generator, n_sims: int = DEFAULT_SIMS,
                      definition: str = DEFAULT_DEFINITION, threshold: float = DEFAULT_THRESHOLD,
                      coupling: str = "independent",
                      vol: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Simulated zone rho of a metric against scores drawn from true accuracies.

    p_true: (n, T) quants' true task accuracies; p_ref: (T,) the reference's; metric, bpw: (n,);
    n_items: (T,) items per task; w: exact task weights (T,) (Fractions). Each simulation draws the
    task counts of the quants and the reference together (`simulate_counts`, `coupling`), forms the
    exact composites, applies the zone rule, and takes Spearman rho(metric, score) over the zone
    members. vol: (n, T) the quants' disagreement rates with the reference, needed by coupling "flips"
    (the reference is the simulated reference row). Returns (rho (n_sims,), p (n_sims,) t-approximation, n_zone (n_sims,)); NaN rho/p where
    the zone has < 3 members or constant scores.
    """
    n_items = np.asarray(n_items, np.int64)
    ints = IntScores.of(n_items, tuple(w))
    v = None if vol is None else np.vstack([np.asarray(vol, float), np.zeros((1, len(p_ref)))])
    k = simulate_counts(np.vstack([p_true, p_ref[None]]), n_items, rng, n_sims, coupling, vol=v, ref=-1)
    num = ints.num(k)
    num, num_ref = num[:, :-1], num[:, -1]
    zone = zone_rule_int(num, num_ref[:, None], ints.den, metric, bpw, definition, threshold)
    rho, p = masked_spearman_rows(metric, num, zone)
    return rho, p, zone.sum(axis=1)


def noise_ceiling(samples: pd.DataFrame, fidelity: pd.DataFrame, quants: pd.DataFrame, corpus: str, ctx: int,
                  rng: np.random.Generator, metric: str = "kld_mean", truth: str = "conservative",
                  n_items: int | Mapping[str, int] | None = None, definition: str = DEFAULT_DEFINITION,
                  threshold: float = DEFAULT_THRESHOLD, weights: Weights = None, n_sims: int = DEFAULT_SIMS,
                  alpha: float = 0.05, level: float = LEVEL, coupling: str = "independent") -> dict:
    """The distribution of zone rho that a metric ranking true quality perfectly would show here.

    True accuracies from `true_accuracies(truth)` (quants with a finite positive metric; the reference
    keeps its observed task accuracies as truth); per-item outcomes simulated at n_items items per
    task (None: the study's own counts; a mapping: per task, e.g. every item a task's split holds)
    by `simulate_zone_rho`, with the study's zone rule and the
    observed metric; coupling "independent" (default: fresh items per model) or "shared" (the same
    items, comonotone answers) brackets how strongly the quants' answers follow the reference's;
    "flips" is the realistic middle: the same items as the reference, each quant flipping reference
    answers independently per item at its OBSERVED per-task disagreement rate with the reference
    (`task_flip_rates`, kept as a rate at any n_items; `flip_rates` raises it where the truth model's
    accuracy shift needs more churn). power = share of all simulations with p < alpha AND rho < 0 (the expected sign:
    higher KLD, lower score; an undefined rho counts as not significant). Returns a flat dict:
    truth, coupling, n_items (per task; the smallest when they differ), n_sims, rho_median, rho_lo, rho_hi
    (central `level` interval over simulations with a defined rho), n_valid, power, n_zone_median,
    slope (conservative: the fitted composite change per unit log metric; None otherwise).
    """
    m, cohort, rows, x, bpw, w = _cohort_arrays(samples, fidelity, quants, corpus, ctx, metric, weights)
    keep = np.isfinite(x) & (x > 0)
    k, n_t = task_counts(m)
    acc = k / n_t
    wf = np.array([float(v) for v in w])
    ref = m.row(REFERENCE)
    score = cohort["score"].to_numpy(float)[keep]
    p_true = true_accuracies(acc[rows][keep], acc[ref], score, float(acc[ref] @ wf), x[keep], wf, truth)
    if isinstance(n_items, Mapping):
        missing = [t for t in m.tasks if t not in n_items]
        if missing:
            raise ValueError(f"noise_ceiling: n_items names no count for task(s) {', '.join(map(str, missing))}")
        items = np.array([int(n_items[t]) for t in m.tasks])
    else:
        items = n_t if n_items is None else np.full(len(n_t), int(n_items))
    vol = task_flip_rates(m)[rows][keep] if coupling == "flips" else None
    rho, p, nz = simulate_zone_rho(p_true, acc[ref], x[keep], bpw[keep], items, w, rng, n_sims,
                                   definition, threshold, coupling, vol)
    lo, med, hi, n_valid = _interval(rho, level)
    slope = float(np.polyfit(np.log(x[keep]), score, 1)[0]) if truth == "conservative" else None
    power = float(np.mean((np.nan_to_num(p, nan=1.0) < alpha) & (np.nan_to_num(rho, nan=0.0) < 0)))
    out = dict(truth=truth, coupling=coupling, n_items=int(items.min()), n_sims=int(n_sims), rho_median=med, rho_lo=lo,
               rho_hi=hi, n_valid=n_valid, power=power, n_zone_median=float(np.median(nz)), slope=slope)
    return {k_: (None if isinstance(v, float) and not math.isfinite(v) else v) for k_, v in out.items()}


def items_for_power(samples: pd.DataFrame, fidelity: pd.DataFrame, quants: pd.DataFrame, corpus: str, ctx: int,
                    rng: np.random.Generator, metric: str = "kld_mean", truth: str = "conservative",
                    grid: tuple[int, ...] = POWER_GRID, target: float = 0.8, **kw) -> tuple[pd.DataFrame, int | None]:
    """Power of the zone test for a perfect metric over a grid of items per task (`noise_ceiling` at
    each grid value, in order, one generator). Returns (frame: one row per grid value with
    noise_ceiling's keys, the smallest grid value whose power >= target or None when none reaches it
    ("more than max(grid)")). kw: definition, threshold, weights, n_sims, alpha, level, coupling."""
    rows = [noise_ceiling(samples, fidelity, quants, corpus, ctx, rng, metric, truth, int(n), **kw) for n in grid]
    frame = pd.DataFrame(rows)
    hit = frame.loc[frame["power"] >= target, "n_items"]
    return frame, (int(hit.iloc[0]) if len(hit) else None)
