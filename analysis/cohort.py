"""Scores, degradation, fidelity metrics and the silent zone, per quant of one study.

Inputs are the tidy tables of `analysis.contracts`: SAMPLES (per-prompt rows; the reference has
model == "reference"), FIDELITY (long: quant x corpus x ctx x metric) and QUANTS (the manifest).
Scores are accuracies in [0, 1]; degradation vs the reference is given in percentage points
(`deg_pts`, 100 x (ref - score)) and relative (`deg_rel`, (ref - score) / ref; 0.02 means 2%).
Positive degradation means worse than the reference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

REFERENCE = "reference"
DEFAULT_DEFINITION = "relative"
DEFAULT_THRESHOLD = 0.02  # pre-specified: relative composite degradation <= 2% (PAPER.md)
_TOL = 1e-12  # a quant exactly on the threshold is in the zone; absorbs float rounding of k/N sums

# definition -> (rule, unit of the threshold); larger threshold = larger zone, except bpw (smaller = larger)
ZONE_DEFINITIONS = {
    "relative": "relative composite degradation <= {t:.4g}%",
    "absolute": "composite degradation <= {t:.4g} percentage points",
    "kld_quantile": "{metric} <= its {t:.4g}% cohort quantile",
    "bpw": "bits per weight >= {t:.4g}",
}

Weights = None | str | Mapping[str, float]


@dataclass(frozen=True, eq=False)
class ItemMatrix:
    """Correctness of every model on every item of a study, items sorted by (task, item_id).

    models: (M,) model names, sorted, "reference" included. tasks: (T,) sorted task names.
    items: frame (I rows) task, item_id, item_hash. task_code: (I,) index into tasks.
    correct: bool (M, I).
    """

    models: tuple[str, ...]
    tasks: tuple[str, ...]
    items: pd.DataFrame
    task_code: np.ndarray
    correct: np.ndarray

    def row(self, model: str) -> int:
        """Row index of `model`; KeyError naming the model if absent."""
        try:
            return self.models.index(model)
        except ValueError:
            raise KeyError(f"model {model!r} not in samples") from None


def one_study(frame: pd.DataFrame, what: str) -> str:
    """The single study name of `frame` ('' if it has no study column); ValueError if several."""
    if "study" not in frame or frame.empty:
        return ""
    studies = sorted(frame["study"].astype(str).unique())
    if len(studies) != 1:
        raise ValueError(f"{what} mixes studies {studies}; pass one study at a time")
    return studies[0]


def item_matrix(samples: pd.DataFrame) -> ItemMatrix:
    """Build the model x item correctness matrix of one study from SAMPLES rows.

    Refuses (ValueError) mixed studies, a missing reference, an item whose item_hash differs between
    models, and a model that lacks items of the reference or has extra ones.
    """
    one_study(samples, "samples")
    if not (samples["model"] == REFERENCE).any():
        raise ValueError("samples have no 'reference' rows")
    hashes = samples.groupby(["task", "item_id"], sort=True)["item_hash"].nunique()
    if (hashes > 1).any():
        bad = hashes[hashes > 1].index[0]
        raise ValueError(f"item {bad} has different item_hash across models; refusing to join")
    wide = samples.pivot(index=["task", "item_id"], columns="model", values="correct").sort_index()
    ref_items = samples.loc[samples["model"] == REFERENCE, ["task", "item_id"]]
    ref_index = pd.MultiIndex.from_frame(ref_items).sort_values()
    if not wide.index.equals(ref_index):
        extra = len(wide.index.difference(ref_index))
        raise ValueError(f"{extra} item(s) in samples are not in the reference")
    missing = wide.isna().sum()
    if missing.any():
        m = missing[missing > 0].index[0]
        raise ValueError(f"model {m!r} lacks {int(missing[m])} item(s) of the reference")
    models = tuple(sorted(wide.columns.astype(str)))
    wide = wide[list(models)]
    items = wide.index.to_frame(index=False)
    first_hash = samples.drop_duplicates(["task", "item_id"]).set_index(["task", "item_id"])["item_hash"]
    items["item_hash"] = first_hash.reindex(wide.index).to_numpy()
    tasks = tuple(sorted(items["task"].astype(str).unique()))
    code = items["task"].astype(str).map({t: i for i, t in enumerate(tasks)}).to_numpy()
    return ItemMatrix(models, tasks, items, code, wide.to_numpy(dtype=bool).T.copy())


def task_weights(tasks: tuple[str, ...], n_items: np.ndarray, weights: Weights = None) -> np.ndarray:
    """Normalised task weights (T,) summing to 1.

    weights: None = equal weight per task (the default composite: mean of task accuracies);
    "items" = proportional to the number of items (pooled accuracy); a mapping task -> weight
    (every task needed; normalised here). n_items: (T,) items per task.
    """
    if weights is None:
        w = np.ones(len(tasks))
    elif isinstance(weights, str):
        if weights != "items":
            raise ValueError(f"weights must be None, 'items' or a mapping, got {weights!r}")
        w = np.asarray(n_items, float)
    else:
        missing = [t for t in tasks if t not in weights]
        if missing:
            raise ValueError(f"weights lack task(s) {missing}")
        w = np.array([float(weights[t]) for t in tasks])
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError("task weights must be non-negative with a positive sum")
    return w / w.sum()


def scores_from(m: ItemMatrix, weights: Weights = None,
                cols: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Task accuracies (M, T) and composite scores (M,) on the items selected by `cols`.

    cols: bool (I,) item mask (None = all items). The composite is task accuracies @ task weights.
    """
    onehot = (m.task_code[:, None] == np.arange(len(m.tasks))[None, :]).astype(np.int64)
    if cols is not None:
        onehot = onehot * cols[:, None]
    n_t = onehot.sum(axis=0)
    acc = (m.correct.astype(np.int64) @ onehot) / n_t
    return acc, acc @ task_weights(m.tasks, n_t, weights)


def degradation(score: np.ndarray, ref: float) -> tuple[np.ndarray, np.ndarray]:
    """Degradation vs the reference score: (percentage points 100 (ref - s), relative (ref - s) / ref)."""
    score = np.asarray(score, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 100 * (ref - score), (ref - score) / ref


def task_scores(samples: pd.DataFrame) -> pd.DataFrame:
    """Per model and task: n (items), n_correct, accuracy (fraction). Rows sorted by model, task."""
    m = item_matrix(samples)
    rows = []
    for i, model in enumerate(m.models):
        for t, task in enumerate(m.tasks):
            sel = m.task_code == t
            k = int(m.correct[i, sel].sum())
            rows.append((model, task, int(sel.sum()), k, k / int(sel.sum())))
    return pd.DataFrame(rows, columns=["model", "task", "n", "n_correct", "accuracy"])


def composite_scores(samples: pd.DataFrame, weights: Weights = None) -> pd.DataFrame:
    """Composite score per model and its degradation vs the reference.

    samples: SAMPLES rows of one study. weights: see `task_weights` (default: mean of task accuracies).
    Returns one row per model (sorted, reference included): model, score (fraction), deg_pts
    (percentage points), deg_rel (fraction of the reference score).
    """
    m = item_matrix(samples)
    _, score = scores_from(m, weights)
    deg_pts, deg_rel = degradation(score, score[m.row(REFERENCE)])
    return pd.DataFrame({"model": list(m.models), "score": score, "deg_pts": deg_pts, "deg_rel": deg_rel})


def fidelity_wide(fidelity: pd.DataFrame, corpus: str, ctx: int) -> pd.DataFrame:
    """Fidelity metrics of one corpus and context length as a wide frame: index quant_id, one column
    per metric (sorted). Refuses (ValueError) rows whose tokens_hash differs between quants, since
    then they did not score the same tokens."""
    one_study(fidelity, "fidelity")
    sub = fidelity[(fidelity["corpus"] == corpus) & (fidelity["ctx"] == int(ctx))]
    if sub.empty:
        raise ValueError(f"no fidelity rows for corpus={corpus!r} ctx={ctx}")
    if sub["tokens_hash"].nunique() > 1:
        raise ValueError(f"fidelity rows for corpus={corpus!r} ctx={ctx} have different tokens_hash")
    wide = sub.pivot(index="quant_id", columns="metric", values="value").sort_index()
    wide = wide[sorted(wide.columns)].astype(float)
    wide.columns.name = None
    return wide


def variants(fidelity: pd.DataFrame) -> pd.DataFrame:
    """The measurement variants of a FIDELITY table: sorted unique (corpus, ctx, metric) rows."""
    return (fidelity[["corpus", "ctx", "metric"]].drop_duplicates()
            .sort_values(["corpus", "ctx", "metric"]).reset_index(drop=True))


def cohort_quants(quants: pd.DataFrame) -> list[str]:
    """Sorted quant ids of the cohort: status 'ok', excluding any reference row of the manifest."""
    one_study(quants, "quants")
    ok = quants[(quants["status"] == "ok") & (quants["method"] != REFERENCE)
                & (quants["quant_id"] != REFERENCE)]
    return sorted(ok["quant_id"].astype(str))


def cohort_table(samples: pd.DataFrame, fidelity: pd.DataFrame, quants: pd.DataFrame, corpus: str, ctx: int,
                 weights: Weights = None) -> pd.DataFrame:
    """One row per quant of the cohort (status ok), sorted by quant_id.

    Columns: quant_id, method, bpw (bits per weight), score, deg_pts, deg_rel (see module doc),
    ref_score (the reference composite, same on every row), then one float column per fidelity
    metric of (corpus, ctx) (NaN where a quant lacks it). ValueError if a cohort quant has no samples.
    """
    ids = cohort_quants(quants)
    comp = composite_scores(samples, weights).set_index("model")
    lacking = [q for q in ids if q not in comp.index]
    if lacking:
        raise ValueError(f"quant(s) {lacking} have status ok but no samples")
    man = quants.drop_duplicates("quant_id").set_index("quant_id")
    out = pd.DataFrame({"quant_id": ids, "method": man.loc[ids, "method"].astype(str).to_numpy(),
                        "bpw": man.loc[ids, "bpw"].astype(float).to_numpy()})
    out[["score", "deg_pts", "deg_rel"]] = comp.loc[ids, ["score", "deg_pts", "deg_rel"]].to_numpy()
    out["ref_score"] = float(comp.loc[REFERENCE, "score"])
    wide = fidelity_wide(fidelity, corpus, ctx).reindex(ids)
    for col in wide.columns:
        out[col] = wide[col].to_numpy()
    return out


COHORT_COLUMNS = ("quant_id", "method", "bpw", "score", "deg_pts", "deg_rel", "ref_score")


def metric_columns(cohort: pd.DataFrame) -> list[str]:
    """The fidelity metric columns of a `cohort_table` frame (every column after COHORT_COLUMNS)."""
    return [c for c in cohort.columns if c not in COHORT_COLUMNS]


def cohorts(samples: pd.DataFrame, fidelity: pd.DataFrame, quants: pd.DataFrame, weights: Weights = None):
    """Yield ((corpus, ctx), cohort_table) for every corpus and context length of FIDELITY, sorted."""
    pairs = fidelity[["corpus", "ctx"]].drop_duplicates().sort_values(["corpus", "ctx"])
    for corpus, ctx in pairs.itertuples(index=False):
        yield (str(corpus), int(ctx)), cohort_table(samples, fidelity, quants, corpus, int(ctx), weights)


def zone_rule(deg_rel: np.ndarray, deg_pts: np.ndarray, metric: np.ndarray, bpw: np.ndarray,
              definition: str = DEFAULT_DEFINITION, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Silent-zone membership from arrays (all (n,)); returns bool (n,). NaN inputs are never in the zone.

    relative: deg_rel <= threshold (fraction, 0.02 = 2%); absolute: deg_pts <= threshold (points);
    kld_quantile: metric <= its `threshold` quantile over the cohort (threshold in (0, 1]);
    bpw: bpw >= threshold. A larger threshold never shrinks the zone, except for bpw (a smaller one).
    """
    if definition == "relative":
        return np.asarray(deg_rel, float) <= threshold + _TOL
    if definition == "absolute":
        return np.asarray(deg_pts, float) <= threshold + _TOL
    if definition == "kld_quantile":
        metric = np.asarray(metric, float)
        fin = np.isfinite(metric)
        if not fin.any():
            return np.zeros(metric.shape, bool)
        return fin & (metric <= np.quantile(metric[fin], threshold) + _TOL)
    if definition == "bpw":
        return np.asarray(bpw, float) >= threshold - _TOL
    raise ValueError(f"unknown zone definition {definition!r}; one of {sorted(ZONE_DEFINITIONS)}")


def zone_mask(cohort: pd.DataFrame, definition: str = DEFAULT_DEFINITION,
              threshold: float = DEFAULT_THRESHOLD, metric: str = "kld_mean") -> pd.Series:
    """Silent-zone membership of each cohort row (bool Series on cohort's index); see `zone_rule`.

    cohort: `cohort_table` output (needs deg_rel, deg_pts, bpw and, for kld_quantile, `metric`).
    """
    col = cohort[metric] if metric in cohort else pd.Series(np.nan, index=cohort.index)
    rule = zone_rule(cohort["deg_rel"], cohort["deg_pts"], col, cohort["bpw"], definition, threshold)
    return pd.Series(rule, index=cohort.index, name="in_zone")


def describe_zone(definition: str = DEFAULT_DEFINITION, threshold: float = DEFAULT_THRESHOLD,
                  metric: str = "kld_mean") -> str:
    """Human-readable zone rule, e.g. 'relative composite degradation <= 2%' (for stats.json)."""
    t = 100 * threshold if definition in ("relative", "kld_quantile") else threshold
    return ZONE_DEFINITIONS[definition].format(t=t, metric=metric)


def zone_floor(ref_score: float, definition: str = DEFAULT_DEFINITION,
               threshold: float = DEFAULT_THRESHOLD) -> float:
    """Lowest composite score inside a score-based zone (relative or absolute), for shading a plot;
    NaN for definitions not based on the score."""
    if definition == "relative":
        return ref_score * (1 - threshold)
    if definition == "absolute":
        return ref_score - threshold / 100
    return math.nan
