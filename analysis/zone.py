"""The silent zone: full cohort vs zone, threshold sweeps, robustness across fidelity variants,
held-out zone boundaries, and the headline numbers of stats.json.

The default zone is pre-specified (relative composite degradation <= 2%). Because choosing the zone
with the same scores that are then correlated can attenuate a correlation by itself (selection on the
outcome), `holdout` decides membership on one half of the items and correlates on the other half.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .cohort import (DEFAULT_DEFINITION, DEFAULT_THRESHOLD, REFERENCE, ItemMatrix, Weights, cohort_quants,
                     cohort_table, cohorts, describe_zone, distinct_quants, exact_scores, identical_quants,
                     item_matrix, metric_columns, one_study, zone_mask, zone_rule_int)
from .decompose import COMPOSITE, decomposition
from .stats import DEFAULT_RESAMPLES, LEVEL, correlate, holm, min_detectable_rho, spearman, tost_rho


def full_vs_zone(cohort: pd.DataFrame, metric: str = "kld_mean", target: str = "score",
                 definition: str = DEFAULT_DEFINITION, threshold: float = DEFAULT_THRESHOLD,
                 rng: np.random.Generator | None = None,
                 n_resamples: int = DEFAULT_RESAMPLES) -> pd.DataFrame:
    """Spearman rho(metric, target) over the full cohort and inside the zone.

    cohort: `cohort_table` frame; metric: a fidelity column; target: a score column (default the
    composite score). rng: None skips bootstrap and permutation. Returns two rows, scope full and
    zone, with columns scope, metric, target, definition, threshold and CORR_COLUMNS (full first,
    so the generator is consumed in that order).
    """
    zone = zone_mask(cohort, definition, threshold, metric).to_numpy()
    x, y = cohort[metric].to_numpy(float), cohort[target].to_numpy(float)
    rows = [dict(scope=s, metric=metric, target=target, definition=definition, threshold=threshold,
                 **correlate(x[sel], y[sel], rng, n_resamples))
            for s, sel in (("full", np.ones(len(x), bool)), ("zone", zone))]
    return pd.DataFrame(rows)


def zone_id(members: Sequence[str]) -> str:
    """Identifier of a set of quant ids: sha256[:12] of the sorted ids joined by newlines ('' for none
    would collide with nothing: the empty set gets the hash of the empty string)."""
    return hashlib.sha256("\n".join(sorted(map(str, members))).encode()).hexdigest()[:12]


def sweep(samples: pd.DataFrame, fidelity: pd.DataFrame, quants: pd.DataFrame, thresholds: Sequence[float],
          definition: str = DEFAULT_DEFINITION, metrics: Sequence[str] | None = None,
          rng: np.random.Generator | None = None, n_resamples: int = DEFAULT_RESAMPLES,
          weights: Weights = None) -> pd.DataFrame:
    """Zone correlation over a grid of thresholds, for every fidelity variant, as one tidy frame.

    For each corpus and ctx of FIDELITY (sorted), each metric (sorted; or `metrics`) and each
    threshold (in the given order): the zone under `definition` (exact, `zone_mask`) and
    rho(metric, composite score) inside it. Returns columns corpus, ctx, metric, definition,
    threshold, n_cohort, n_members (quants in the zone, with or without the metric), zone_id
    (`zone_id` of the members), same_as_threshold (the smallest threshold of this variant's grid that
    selects the same members; equals threshold for the first of a distinct zone), then CORR_COLUMNS
    (n = quants in the zone with a finite metric). See `distinct_zones`.
    """
    rows = []
    for (corpus, ctx), cohort in cohorts(samples, fidelity, quants, weights):
        for metric in metrics or metric_columns(cohort):
            x, y = cohort[metric].to_numpy(float), cohort["score"].to_numpy(float)
            first: dict[str, float] = {}
            for t in sorted(thresholds):
                members = cohort.loc[zone_mask(cohort, definition, t, metric).to_numpy(), "quant_id"]
                first.setdefault(zone_id(members), t)
            for t in thresholds:
                sel = zone_mask(cohort, definition, t, metric).to_numpy()
                zid = zone_id(cohort.loc[sel, "quant_id"])
                rows.append(dict(corpus=corpus, ctx=ctx, metric=metric, definition=definition, threshold=t,
                                 n_cohort=len(cohort), n_members=int(sel.sum()), zone_id=zid,
                                 same_as_threshold=first[zid], **correlate(x[sel], y[sel], rng, n_resamples)))
    return pd.DataFrame(rows)


def distinct_zones(sweep_frame: pd.DataFrame) -> pd.DataFrame:
    """The distinct zones of a `sweep` frame: one row per (corpus, ctx, metric, zone_id), in the order
    of their smallest threshold, with thresholds (comma-joined, ascending, as given), threshold_min,
    threshold_max, n_thresholds, and the sweep's columns from the row of the smallest threshold
    (n_members, n, rho, p, ...)."""
    keys = ["corpus", "ctx", "metric", "zone_id"]
    rows = []
    for _, g in sweep_frame.groupby(keys, sort=False):
        g = g.sort_values("threshold", kind="stable")
        rec = g.iloc[0].to_dict()
        ts = sorted(dict.fromkeys(g["threshold"].astype(float)))
        rec.update(thresholds=",".join(f"{t:g}" for t in ts), threshold_min=ts[0], threshold_max=ts[-1],
                   n_thresholds=len(ts))
        rows.append(rec)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    return out.sort_values(["corpus", "ctx", "metric", "threshold_min"], kind="stable").reset_index(drop=True)


def robustness_table(samples: pd.DataFrame, fidelity: pd.DataFrame, quants: pd.DataFrame,
                     definition: str = DEFAULT_DEFINITION, threshold: float = DEFAULT_THRESHOLD,
                     rng: np.random.Generator | None = None, n_resamples: int = DEFAULT_RESAMPLES,
                     weights: Weights = None, margin: float | None = None,
                     alpha: float = 0.05, holdout_rng: np.random.Generator | None = None,
                     holdout_splits: int = 0) -> pd.DataFrame:
    """rho(metric, composite score), full cohort and zone, for every variant (corpus x ctx x metric).

    Returns one row per variant: corpus, ctx, metric, then CORR_COLUMNS suffixed _full and _zone,
    p_holm_full and p_holm_zone (Holm over all variants, each scope its own family), mdr_zone (the
    minimum |rho| detectable in the zone at `alpha`, power 0.8) and, when `margin` is given,
    tost_p_zone and equivalent_zone (TOST of |rho_zone| < margin). With `holdout_rng` and
    holdout_splits > 0 (score-based zone definitions), the `holdout_variants` columns are joined:
    the held-out zone rho of every variant on the same splits (the consolidated variants table).
    """
    rows = []
    for (corpus, ctx), cohort in cohorts(samples, fidelity, quants, weights):
        for metric in metric_columns(cohort):
            fz = full_vs_zone(cohort, metric, "score", definition, threshold, rng, n_resamples)
            row = dict(corpus=corpus, ctx=ctx, metric=metric)
            for rec in fz.to_dict("records"):
                row.update({f"{k}_{rec['scope']}": rec[k] for k in fz.columns
                            if k not in ("scope", "metric", "target", "definition", "threshold")})
            row["mdr_zone"] = min_detectable_rho(row["n_zone"], alpha)
            if margin is not None:
                tost = tost_rho(row["rho_zone"], row["n_zone"], margin, alpha)
                row.update(tost_p_zone=tost["p"], equivalent_zone=tost["equivalent"])
            rows.append(row)
    out = pd.DataFrame(rows)
    out["p_holm_full"] = holm(out["p_full"])
    out["p_holm_zone"] = holm(out["p_zone"])
    if holdout_rng is not None and holdout_splits > 0:
        held = holdout_variants(samples, fidelity, quants, holdout_rng, holdout_splits, definition, threshold,
                                weights)
        out = out.merge(held, on=["corpus", "ctx", "metric"], how="left", validate="one_to_one")
    return out


def split_mask(m: ItemMatrix, rng: np.random.Generator) -> np.ndarray:
    """One random half of the items of every task: bool (I,) True for half A.

    Items are taken in their sorted (task, item_id) order and permuted within each task with `rng`
    (one permutation per task, tasks in sorted order); half A gets floor(n_task / 2) items, half B
    the rest. Disjoint and covering by construction; the same generator state gives the same split.
    """
    a = np.zeros(len(m.task_code), bool)
    for t in range(len(m.tasks)):
        idx = np.flatnonzero(m.task_code == t)
        a[idx[rng.permutation(len(idx))[: len(idx) // 2]]] = True
    return a


def holdout_splits(samples: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """One stratified split of the items into halves: frame task, item_id, item_hash, half ('A' | 'B'),
    rows sorted by task and item_id (see `split_mask`)."""
    m = item_matrix(samples)
    out = m.items.copy()
    out["half"] = np.where(split_mask(m, rng), "A", "B")
    return out


def _rho(x: np.ndarray, y: np.ndarray) -> tuple[int, float, float]:
    """(n finite pairs, Spearman rho, p) of x and y."""
    ok = np.isfinite(x) & np.isfinite(y)
    return (int(ok.sum()), *spearman(x[ok], y[ok]))


def holdout(samples: pd.DataFrame, fidelity: pd.DataFrame, quants: pd.DataFrame, corpus: str, ctx: int,
            rng: np.random.Generator, metric: str = "kld_mean", n_splits: int = 1000,
            definition: str = DEFAULT_DEFINITION, threshold: float = DEFAULT_THRESHOLD,
            weights: Weights = None) -> pd.DataFrame:
    """Held-out zone boundaries: per split, zone decided on item half A, correlation on half B.

    For each of n_splits splits (`split_mask`, stratified by task): exact composite scores on A and on
    B (integers over a common denominator); zone membership from A's degradation (`zone_rule_int`);
    rho(metric, B score) inside that zone (held out), inside the zone B itself would pick (in sample:
    selection on the outcome) and over all quants. Returns one row per split: split, n_heldout,
    rho_heldout, p_heldout, n_insample, rho_insample, p_insample, n_full, rho_full, p_full.
    """
    m = item_matrix(samples)
    cohort = cohort_table(samples, fidelity, quants, corpus, ctx, weights)
    rows = [m.row(q) for q in cohort["quant_id"]]
    x, bpw = cohort[metric].to_numpy(float), cohort["bpw"].to_numpy(float)
    ref = m.row(REFERENCE)

    def scores_and_zone(half: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cohort composite scores (n,) on the items of `half` (exact ratios rounded once) and the
        zone they imply (bool (n,))."""
        num, den = exact_scores(m, weights, half)
        return num[rows] / den, zone_rule_int(num[rows], num[ref], den, x, bpw, definition, threshold)

    out = []
    for s in range(n_splits):
        a = split_mask(m, rng)
        _, zone_a = scores_and_zone(a)
        score_b, zone_b = scores_and_zone(~a)
        rec = dict(split=s)
        for name, sel in (("heldout", zone_a), ("insample", zone_b), ("full", np.ones(len(x), bool))):
            rec[f"n_{name}"], rec[f"rho_{name}"], rec[f"p_{name}"] = _rho(x[sel], score_b[sel])
        out.append(rec)
    return pd.DataFrame(out)


def holdout_variants(samples: pd.DataFrame, fidelity: pd.DataFrame, quants: pd.DataFrame,
                     rng: np.random.Generator, n_splits: int = 1000, definition: str = DEFAULT_DEFINITION,
                     threshold: float = DEFAULT_THRESHOLD, weights: Weights = None,
                     level: float = LEVEL) -> pd.DataFrame:
    """The held-out zone rho of every fidelity variant (corpus x ctx x metric), on shared splits.

    Each split (`split_mask`, drawn once and used for every variant, so variants are compared on the
    same halves) decides the zone from half A's exact scores and correlates each variant's metric with
    half B's scores inside it, as `holdout` does for one variant. Score-based zone definitions only
    (relative, absolute): the zone does not depend on the metric. Returns one row per variant (sorted):
    corpus, ctx, metric, n_splits_valid (splits with a defined rho), rho_heldout (median over splits),
    rho_heldout_lo, rho_heldout_hi (central `level` interval over splits), frac_significant_heldout
    (share of valid splits with p < 0.05), n_zone_heldout (median zone size with a finite metric).
    """
    if definition not in ("relative", "absolute"):
        raise ValueError(f"holdout_variants needs a score-based zone definition, got {definition!r}")
    m = item_matrix(samples)
    ref = m.row(REFERENCE)
    ids = cohort_quants(quants)
    rows = [m.row(q) for q in ids]
    variants_ = []  # (corpus, ctx, metric, x (n,))
    for (corpus, ctx), cohort in cohorts(samples, fidelity, quants, weights):
        assert list(cohort["quant_id"]) == ids
        for metric in metric_columns(cohort):
            variants_.append((corpus, ctx, metric, cohort[metric].to_numpy(float)))
    rho = np.full((len(variants_), n_splits), np.nan)
    p = np.full_like(rho, np.nan)
    nz = np.zeros_like(rho)
    for s in range(n_splits):
        a = split_mask(m, rng)
        num_a, den_a = exact_scores(m, weights, a)
        zone = zone_rule_int(num_a[rows], num_a[ref], den_a, None, None, definition, threshold)
        num_b, den_b = exact_scores(m, weights, ~a)
        score_b = num_b[rows] / den_b
        for v, (_, _, _, x) in enumerate(variants_):
            nz[v, s], rho[v, s], p[v, s] = _rho(x[zone], score_b[zone])
    q = (1 - level) / 2
    out = []
    for v, (corpus, ctx, metric, _) in enumerate(variants_):
        ok = np.isfinite(rho[v])
        lo, med, hi = np.quantile(rho[v, ok], [q, 0.5, 1 - q]) if ok.any() else (math.nan,) * 3
        out.append(dict(corpus=corpus, ctx=int(ctx), metric=metric, n_splits_valid=int(ok.sum()),
                        rho_heldout=float(med), rho_heldout_lo=float(lo), rho_heldout_hi=float(hi),
                        frac_significant_heldout=float((p[v, ok] < 0.05).mean()) if ok.any() else math.nan,
                        n_zone_heldout=float(np.median(nz[v]))))
    return pd.DataFrame(out)


def holdout_summary(table: pd.DataFrame, level: float = LEVEL, alpha: float = 0.05) -> pd.DataFrame:
    """Distribution of a `holdout` table over splits: one row per scope (heldout, insample, full) with
    n_splits_valid (finite rho), rho_median, rho_mean, rho_lo, rho_hi (central `level` interval of the
    split distribution), frac_significant (share of valid splits with p < alpha), n_median."""
    q = (1 - level) / 2
    rows = []
    for scope in ("heldout", "insample", "full"):
        rho, p = table[f"rho_{scope}"].to_numpy(float), table[f"p_{scope}"].to_numpy(float)
        ok = np.isfinite(rho)
        lo, med, hi = np.quantile(rho[ok], [q, 0.5, 1 - q]) if ok.any() else (math.nan,) * 3
        rows.append(dict(scope=scope, n_splits_valid=int(ok.sum()), rho_median=float(med),
                         rho_mean=float(rho[ok].mean()) if ok.any() else math.nan, rho_lo=float(lo),
                         rho_hi=float(hi),
                         frac_significant=float((p[ok] < alpha).mean()) if ok.any() else math.nan,
                         n_median=float(np.median(table[f"n_{scope}"]))))
    return pd.DataFrame(rows)


def holdout_headline(summary: pd.DataFrame) -> dict:
    """The hold-out numbers for stats.json from a `holdout_summary` frame: the primary zone estimate.

    Returns a flat dict: rho_zone_heldout (median over splits), rho_zone_heldout_lo/_hi (central
    interval of the split distribution), frac_significant_heldout, n_zone_heldout (median zone size),
    n_splits_heldout, and the same median/interval for the in-sample zone on the same halves
    (rho_zone_insample, rho_zone_insample_lo/_hi). Undefined numbers are None.
    """
    s = summary.set_index("scope")
    out = dict(rho_zone_heldout=s.loc["heldout", "rho_median"], rho_zone_heldout_lo=s.loc["heldout", "rho_lo"],
               rho_zone_heldout_hi=s.loc["heldout", "rho_hi"],
               frac_significant_heldout=s.loc["heldout", "frac_significant"],
               n_zone_heldout=s.loc["heldout", "n_median"], n_splits_heldout=int(s.loc["heldout", "n_splits_valid"]),
               rho_zone_insample=s.loc["insample", "rho_median"], rho_zone_insample_lo=s.loc["insample", "rho_lo"],
               rho_zone_insample_hi=s.loc["insample", "rho_hi"])
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else
                (float(v) if isinstance(v, (float, np.floating)) else v)) for k, v in out.items()}


def headline_stats(samples: pd.DataFrame, fidelity: pd.DataFrame, quants: pd.DataFrame, corpus: str, ctx: int,
                   metric: str = "kld_mean", definition: str = DEFAULT_DEFINITION,
                   threshold: float = DEFAULT_THRESHOLD, weights: Weights = None) -> dict:
    """The numeric keys of stats.json (contracts.STATS_KEYS; the pipeline adds label and provenance).

    Returns a flat dict: study, n_quants, zone_definition, n_zone, rho_full, p_full, rho_zone, p_zone,
    rho_vol_zone (rho(metric, composite vol_rate) in the zone), p_vol_zone, rho_delta_zone, p_delta_zone
    (rho(metric, composite delta) in the zone; equals rho_zone, delta being score minus a constant),
    mdr_zone (minimum detectable |rho| at n_zone, Bonett-Wright), ref_score, corpus, ctx, metric;
    identical_quants (groups of ids that are one model, "A = B"; cohort.identical_quants), n_distinct,
    rho_full_distinct, p_full_distinct, n_zone_distinct, rho_zone_distinct, p_zone_distinct (the same
    correlations with each such model counted once).
    Scores, vol_rate, delta and the zone are exact (see `cohort`). Undefined numbers are None.
    """
    cohort = cohort_table(samples, fidelity, quants, corpus, ctx, weights)
    zone = zone_mask(cohort, definition, threshold, metric).to_numpy()
    x, y = cohort[metric].to_numpy(float), cohort["score"].to_numpy(float)
    dec = decomposition(samples, weights)
    comp = dec[dec["task"] == COMPOSITE].set_index("model").reindex(cohort["quant_id"])
    vol, delta = comp["vol_rate"].to_numpy(float), comp["delta"].to_numpy(float)
    _, rho_full, p_full = _rho(x, y)
    n_zone, rho_zone, p_zone = _rho(x[zone], y[zone])
    _, rho_vol, p_vol = _rho(x[zone], vol[zone])
    _, rho_delta, p_delta = _rho(x[zone], delta[zone])
    out = dict(study=one_study(samples, "samples"), n_quants=len(cohort_quants(quants)),
               zone_definition=describe_zone(definition, threshold, metric), n_zone=int(zone.sum()),
               rho_full=rho_full, p_full=p_full, rho_zone=rho_zone, p_zone=p_zone, rho_vol_zone=rho_vol,
               p_vol_zone=p_vol, rho_delta_zone=rho_delta, p_delta_zone=p_delta,
               mdr_zone=min_detectable_rho(n_zone),
               ref_score=float(cohort["ref_score"].iloc[0]) if len(cohort) else math.nan,
               corpus=corpus, ctx=int(ctx), metric=metric)
    # sensitivity: one model under two ids (identical_quants) counted once, the zone kept as decided above
    groups = identical_quants(quants, fidelity, samples)
    keep = distinct_quants(cohort["quant_id"], groups)
    _, rho_full_d, p_full_d = _rho(x[keep], y[keep])
    _, rho_zone_d, p_zone_d = _rho(x[zone & keep], y[zone & keep])
    out.update(identical_quants=[" = ".join(g) for g in groups], n_distinct=int(keep.sum()),
               rho_full_distinct=rho_full_d, p_full_distinct=p_full_d, n_zone_distinct=int((zone & keep).sum()),
               rho_zone_distinct=rho_zone_d, p_zone_distinct=p_zone_d)
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}
