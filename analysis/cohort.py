"""Scores, degradation, fidelity metrics and the silent zone, per quant of one study.

Inputs are the tidy tables of `analysis.contracts`: SAMPLES (per-prompt rows; the reference has
model == "reference"), FIDELITY (long: quant x corpus x ctx x metric) and QUANTS (the manifest).
Scores are accuracies in [0, 1]; degradation vs the reference is given in percentage points
(`deg_pts`, 100 x (ref - score)) and relative (`deg_rel`, (ref - score) / ref; 0.02 means 2%).
Positive degradation means worse than the reference.

Exactness: every score is a ratio of integers. Composites are computed as integer numerators over one
common denominator (`IntScores`), zone membership is decided by integer comparisons, and each float
column is `float(Fraction)` of the exact value, converted once (correctly rounded), so equal counts give
bit-identical floats that tie in ranks, and distinct rationals keep their order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pandas as pd

REFERENCE = "reference"
DEFAULT_DEFINITION = "relative"
DEFAULT_THRESHOLD = 0.02  # pre-specified: relative composite degradation <= 2% (docs/paper.md)
_MAX_DEN = 1 << 53  # common denominators above this would not convert to float exactly

# definition -> (rule, unit of the threshold); larger threshold = larger zone, except bpw (smaller = larger)
ZONE_DEFINITIONS = {
    "relative": "relative composite degradation <= {t:.4g}%",
    "absolute": "composite degradation <= {t:.4g} percentage points",
    "kld_quantile": "{metric} <= its {t:.4g}% cohort quantile",
    "bpw": "bits per weight >= {t:.4g}",
}

Weights = None | str | Mapping[str, float | str | int | Fraction]
# fidelity metrics whose larger values mean closer to the reference (fdt_: first divergent token)
HIGHER_IS_BETTER = ("top1_agreement", "fdt_")


def oriented(metric: str) -> int:
    """-1 for metrics where higher means closer to the reference (figures flip their rho, so that a
    negative rho always reads 'further from the reference, lower score'; the noise ceiling ranks them
    reversed), else +1."""
    return -1 if any(metric.startswith(m) for m in HIGHER_IS_BETTER) else 1


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


def exact(value) -> Fraction:
    """A number as an exact Fraction: ints and Fractions as they are, floats and strings through their
    decimal text (Fraction(str(0.1)) == 1/10, not the binary float 3602879701896397/2**55)."""
    if isinstance(value, (int, np.integer, Fraction)):
        return Fraction(int(value)) if not isinstance(value, Fraction) else value
    return Fraction(str(value).strip())


def exact_task_weights(tasks: tuple[str, ...], n_items: np.ndarray, weights: Weights = None) -> tuple[Fraction, ...]:
    """Normalised task weights (T,) as exact Fractions summing to exactly 1.

    weights: None = equal weight per task (the default composite: mean of task accuracies);
    "items" = proportional to the number of items (pooled accuracy); a mapping task -> weight
    (every task needed; floats and strings read through `exact`, so 0.1 is 1/10; normalised here).
    n_items: (T,) items per task.
    """
    if weights is None:
        w = [Fraction(1)] * len(tasks)
    elif isinstance(weights, str):
        if weights != "items":
            raise ValueError(f"weights must be None, 'items' or a mapping, got {weights!r}")
        w = [Fraction(int(n)) for n in n_items]
    else:
        missing = [t for t in tasks if t not in weights]
        if missing:
            raise ValueError(f"weights lack task(s) {missing}")
        w = [exact(weights[t]) for t in tasks]
    total = sum(w, Fraction(0))
    if any(x < 0 for x in w) or total <= 0:
        raise ValueError("task weights must be non-negative with a positive sum")
    return tuple(x / total for x in w)


def task_weights(tasks: tuple[str, ...], n_items: np.ndarray, weights: Weights = None) -> np.ndarray:
    """`exact_task_weights` as floats (T,), each converted once from its Fraction (for display)."""
    return np.array([float(x) for x in exact_task_weights(tasks, n_items, weights)])


@dataclass(frozen=True)
class IntScores:
    """Composite scores as integers over one common denominator: score = num / den exactly.

    coef: int64 (T,) with score numerator = task counts @ coef; den: the common denominator
    (lcm of the denominators of w_t / n_t; coef_t = den w_t / n_t). Valid for any count array whose
    task totals are n_items (a stratified resample of the items keeps them).
    """

    coef: np.ndarray
    den: int

    @classmethod
    def of(cls, n_items: np.ndarray, w: tuple[Fraction, ...]) -> "IntScores":
        """The integer form of the composite for items per task n_items (T,) and exact weights w (T,)."""
        per = [wt / int(n) if int(n) else Fraction(0) for wt, n in zip(w, n_items)]
        den = math.lcm(*(f.denominator for f in per)) if per else 1
        if den >= _MAX_DEN:
            raise ValueError(f"common denominator {den} of the composite is too large for exact floats")
        return cls(np.array([int(f * den) for f in per], dtype=np.int64), den)

    def num(self, counts: np.ndarray) -> np.ndarray:
        """Score numerators of task counts (..., T) int -> (...,) int64."""
        return np.asarray(counts, np.int64) @ self.coef

    def fractions(self, counts: np.ndarray) -> list[Fraction]:
        """Exact scores of task counts (M, T) as M Fractions."""
        return [Fraction(int(v), self.den) for v in self.num(counts)]


def task_counts(m: "ItemMatrix", cols: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Correct counts per model and task, int64 (M, T), and items per task (T,) on the items `cols`
    (bool (I,) mask or int (I,) item multiplicities; None = every item once)."""
    onehot = (m.task_code[:, None] == np.arange(len(m.tasks))[None, :]).astype(np.int64)
    if cols is not None:
        onehot = onehot * np.asarray(cols, np.int64)[:, None]
    return m.correct.astype(np.int64) @ onehot, onehot.sum(axis=0)


def exact_scores(m: "ItemMatrix", weights: Weights = None, cols: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Composite score numerators int64 (M,) and their common denominator on the items `cols`
    (see `task_counts`): model i scores exactly num[i] / den."""
    k, n_t = task_counts(m, cols)
    ints = IntScores.of(n_t, exact_task_weights(m.tasks, n_t, weights))
    return ints.num(k), ints.den


def scores_from(m: ItemMatrix, weights: Weights = None,
                cols: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Task accuracies (M, T) and composite scores (M,) as floats on the items selected by `cols`.

    cols: bool (I,) item mask (None = all items). Every float is the correctly rounded value of the
    exact ratio (one division of integers below 2**53), so equal counts give equal floats.
    """
    k, n_t = task_counts(m, cols)
    num, den = exact_scores(m, weights, cols)
    return k / n_t, num / den


def degradation(score, ref) -> tuple[np.ndarray, np.ndarray]:
    """Degradation vs the reference score: (percentage points 100 (ref - s), relative (ref - s) / ref).

    score: (n,) floats or Fractions; ref: a float or a Fraction. Fractions in give object arrays of
    exact Fractions out (relative NaN when ref == 0); floats in give floats.
    """
    vals = list(np.atleast_1d(np.asarray(score, dtype=object)))
    if isinstance(ref, Fraction) and all(isinstance(v, Fraction) for v in vals):
        pts = np.array([100 * (ref - v) for v in vals] + [None], dtype=object)[:-1]
        rel = np.array([(ref - v) / ref if ref else math.nan for v in vals] + [None], dtype=object)[:-1]
        return pts, rel
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


def degradation_floats(num: np.ndarray, ref_num: int, den: int) -> tuple[np.ndarray, np.ndarray]:
    """deg_pts and deg_rel (floats (n,)) of exact scores num / den against ref_num / den, each the
    correctly rounded value of its exact ratio (Python integer true division); deg_rel NaN if ref 0."""
    pts = np.array([100 * (int(ref_num) - int(v)) / den for v in num], float)
    rel = np.array([(int(ref_num) - int(v)) / int(ref_num) if ref_num else math.nan for v in num], float)
    return pts, rel


def composite_scores(samples: pd.DataFrame, weights: Weights = None) -> pd.DataFrame:
    """Composite score per model and its degradation vs the reference.

    samples: SAMPLES rows of one study. weights: see `exact_task_weights` (default: mean of task
    accuracies). Returns one row per model (sorted, reference included): model, score (fraction),
    deg_pts (percentage points), deg_rel (fraction of the reference score), score_num, score_den
    (ints: score == score_num / score_den exactly; one denominator for all rows). The floats are the
    exact values rounded once.
    """
    m = item_matrix(samples)
    num, den = exact_scores(m, weights)
    ref = int(num[m.row(REFERENCE)])
    deg_pts, deg_rel = degradation_floats(num, ref, den)
    return pd.DataFrame({"model": list(m.models), "score": num / den, "deg_pts": deg_pts, "deg_rel": deg_rel,
                         "score_num": num.astype(np.int64), "score_den": np.int64(den)})


def exact_values(frame: pd.DataFrame, column: str = "score") -> list[Fraction]:
    """Exact Fractions behind a float column of a `composite_scores` or `cohort_table` frame.

    column: "score", "ref_score", "deg_pts" or "deg_rel" (needs score_num, score_den and, except for
    "score", ref_num or the reference row). deg_rel is NaN (a float) where the reference scores 0.
    """
    num, den = frame["score_num"].astype(int).tolist(), frame["score_den"].astype(int).tolist()
    if column == "score":
        return [Fraction(a, d) for a, d in zip(num, den)]
    if "ref_num" in frame:
        ref = frame["ref_num"].astype(int).tolist()
    else:
        ref = [int(frame.loc[frame["model"] == REFERENCE, "score_num"].iloc[0])] * len(frame)
    if column == "ref_score":
        return [Fraction(r, d) for r, d in zip(ref, den)]
    if column == "deg_pts":
        return [Fraction(100 * (r - a), d) for a, r, d in zip(num, ref, den)]
    if column == "deg_rel":
        return [Fraction(r - a, r) if r else math.nan for a, r in zip(num, ref)]
    raise ValueError(f"no exact values for column {column!r}")


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


def identical_quants(quants: pd.DataFrame, fidelity: pd.DataFrame, samples: pd.DataFrame) -> list[tuple[str, ...]]:
    """Groups of cohort quants that are one model under two ids: the same artifact (quants.csv
    sha256), or every fidelity value and every per-item answer and margin exactly equal (the same
    weights in a file labelled differently: for SmolLM2-135M llama.cpp's Q2_K and Q3_K_S pick the same
    tensor types). A cohort that holds one model twice counts it twice in every correlation; see
    `distinct_quants`. Each group sorted, groups sorted by their first id; empty when none.
    """
    ids = cohort_quants(quants)
    parent = {q: q for q in ids}

    def root(q: str) -> str:
        while parent[q] != q:
            q = parent[q]
        return q

    def join(group) -> None:
        group = sorted(group)
        for q in group[1:]:
            parent[root(q)] = root(group[0])

    man = quants.drop_duplicates("quant_id").set_index("quant_id").loc[ids]
    for _, g in man.groupby(man["sha256"].astype(str)):
        join(list(g.index))
    fid = fidelity[fidelity["quant_id"].isin(ids)].sort_values(["quant_id", "corpus", "ctx", "metric"])
    smp = samples[samples["model"].isin(ids)].sort_values(["model", "task", "item_hash"])
    prints: dict[bytes, list[str]] = {}
    for q in ids:
        f, s = fid[fid["quant_id"] == q], smp[smp["model"] == q]
        key = b"|".join([
            "\x1f".join(f"{c}/{x}/{m}" for c, x, m in zip(f["corpus"], f["ctx"], f["metric"])).encode(),
            np.ascontiguousarray(f["value"].to_numpy(np.float64)).tobytes(),
            "\x1f".join(f"{t}/{h}" for t, h in zip(s["task"], s["item_hash"])).encode(),
            np.ascontiguousarray(s["correct"].astype(str).str.lower().eq("true").to_numpy()).tobytes(),
            np.ascontiguousarray(s["margin"].to_numpy(np.float64)).tobytes()])
        prints.setdefault(key, []).append(q)
    for group in prints.values():
        join(group)
    groups: dict[str, list[str]] = {}
    for q in ids:
        groups.setdefault(root(q), []).append(q)
    return sorted(tuple(sorted(g)) for g in groups.values() if len(g) > 1)


def distinct_quants(ids, groups: list[tuple[str, ...]]) -> np.ndarray:
    """Boolean mask over `ids`: False for every member of an `identical_quants` group but its first."""
    later = {q for g in groups for q in g[1:]}
    return np.array([q not in later for q in ids], dtype=bool)


def cohort_table(samples: pd.DataFrame, fidelity: pd.DataFrame, quants: pd.DataFrame, corpus: str, ctx: int,
                 weights: Weights = None) -> pd.DataFrame:
    """One row per quant of the cohort (status ok), sorted by quant_id.

    Columns: quant_id, method, bpw (bits per weight), score, deg_pts, deg_rel (see module doc),
    ref_score (the reference composite, same on every row), score_num, score_den, ref_num (ints:
    score == score_num / score_den and ref_score == ref_num / score_den exactly), then one float column
    per fidelity metric of (corpus, ctx) (NaN where a quant lacks it). ValueError if a cohort quant
    has no samples.
    """
    ids = cohort_quants(quants)
    comp = composite_scores(samples, weights).set_index("model")
    lacking = [q for q in ids if q not in comp.index]
    if lacking:
        raise ValueError(f"quant(s) {lacking} have status ok but no samples")
    man = quants.drop_duplicates("quant_id").set_index("quant_id")
    out = pd.DataFrame({"quant_id": ids, "method": man.loc[ids, "method"].astype(str).to_numpy(),
                        "bpw": man.loc[ids, "bpw"].astype(float).to_numpy()})
    for col in ("score", "deg_pts", "deg_rel"):
        out[col] = comp.loc[ids, col].to_numpy(float)
    out["ref_score"] = float(comp.loc[REFERENCE, "score"])
    out["score_num"] = comp.loc[ids, "score_num"].to_numpy(np.int64)
    out["score_den"] = np.full(len(ids), int(comp.loc[REFERENCE, "score_den"]), np.int64)
    out["ref_num"] = np.full(len(ids), int(comp.loc[REFERENCE, "score_num"]), np.int64)
    wide = fidelity_wide(fidelity, corpus, ctx).reindex(ids)
    for col in wide.columns:
        out[col] = wide[col].to_numpy()
    return out


COHORT_COLUMNS = ("quant_id", "method", "bpw", "score", "deg_pts", "deg_rel", "ref_score", "score_num",
                  "score_den", "ref_num")


def metric_columns(cohort: pd.DataFrame) -> list[str]:
    """The fidelity metric columns of a `cohort_table` frame (every column after COHORT_COLUMNS)."""
    return [c for c in cohort.columns if c not in COHORT_COLUMNS]


def cohorts(samples: pd.DataFrame, fidelity: pd.DataFrame, quants: pd.DataFrame, weights: Weights = None):
    """Yield ((corpus, ctx), cohort_table) for every corpus and context length of FIDELITY, sorted."""
    pairs = fidelity[["corpus", "ctx"]].drop_duplicates().sort_values(["corpus", "ctx"])
    for corpus, ctx in pairs.itertuples(index=False):
        yield (str(corpus), int(ctx)), cohort_table(samples, fidelity, quants, corpus, int(ctx), weights)


def quantile_member(metric: np.ndarray, q) -> np.ndarray:
    """metric <= its q quantile over the finite values (numpy's default linear interpolation), bool (n,).

    Exact: with n finite values sorted x_0 <= ... <= x_{n-1}, the linear quantile lies in
    [x_k, x_{k+1}] for k = floor((n - 1) q) (computed in rationals, q read through `exact`), and no
    value lies strictly between, so membership is metric <= x_k; no float interpolation is compared.
    """
    metric = np.asarray(metric, float)
    fin = np.isfinite(metric)
    q = exact(q)
    if not fin.any() or q < 0:
        return np.zeros(metric.shape, bool)
    vals = np.sort(metric[fin])
    k = min(math.floor((len(vals) - 1) * min(q, Fraction(1))), len(vals) - 1)
    return fin & (metric <= vals[k])


def zone_rule_int(num: np.ndarray, ref_num, den: int, metric: np.ndarray | None, bpw: np.ndarray | None,
                  definition: str = DEFAULT_DEFINITION, threshold=DEFAULT_THRESHOLD) -> np.ndarray:
    """Silent-zone membership from exact scores num / den (int (..., n)) against ref_num / den (int or
    int (..., 1)), in integer arithmetic; bool (..., n).

    relative: (ref - s) / ref <= t  <=>  (ref_num - num) q_t <= p_t ref_num with t = p_t / q_t
    (`exact(threshold)`); a reference scoring 0 leaves the zone empty (relative degradation undefined).
    absolute: 100 (ref - s) <= t  <=>  100 q_t (ref_num - num) <= p_t den. kld_quantile and bpw do not
    depend on the scores (see `zone_rule`).
    """
    num = np.asarray(num, np.int64)
    if definition in ("kld_quantile", "bpw"):
        return np.broadcast_to(zone_rule(None, None, metric, bpw, definition, threshold), num.shape).copy()
    t = exact(threshold)
    p, q = t.numerator, t.denominator
    ref = np.asarray(ref_num, np.int64)
    lost = ref - num
    if int(np.abs(lost).max(initial=0)) * 100 * max(abs(p), q) >= 1 << 62 or den * abs(p) >= 1 << 62:
        raise ValueError("zone comparison would overflow int64; use a simpler threshold")
    if definition == "relative":
        return (lost * q <= p * ref) & (ref > 0)
    if definition == "absolute":
        return 100 * q * lost <= p * int(den)
    raise ValueError(f"unknown zone definition {definition!r}; one of {sorted(ZONE_DEFINITIONS)}")


def zone_rule(deg_rel: np.ndarray, deg_pts: np.ndarray, metric: np.ndarray, bpw: np.ndarray,
              definition: str = DEFAULT_DEFINITION, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Silent-zone membership from arrays (all (n,)); returns bool (n,). NaN inputs are never in the zone.

    relative: deg_rel <= threshold (fraction, 0.02 = 2%); absolute: deg_pts <= threshold (points);
    kld_quantile: metric <= its `threshold` quantile over the cohort (threshold in (0, 1];
    `quantile_member`); bpw: bpw >= threshold (floats of the manifest). A larger threshold never
    shrinks the zone, except for bpw (a smaller one). Degradations given as Fractions (object arrays,
    from `degradation` on Fractions) are compared exactly with `exact(threshold)`; floats are compared
    as they are, without tolerance (use `zone_rule_int` or `zone_mask` on a cohort table for exactness).
    """
    if definition in ("relative", "absolute"):
        deg = np.atleast_1d(np.asarray(deg_rel if definition == "relative" else deg_pts, dtype=object))
        if all(isinstance(v, Fraction) for v in deg):
            t = exact(threshold)
            return np.array([v <= t for v in deg], bool)
        deg = np.asarray(deg, float)
        return np.isfinite(deg) & (deg <= threshold)
    if definition == "kld_quantile":
        return quantile_member(metric, threshold)
    if definition == "bpw":
        return np.asarray(bpw, float) >= threshold
    raise ValueError(f"unknown zone definition {definition!r}; one of {sorted(ZONE_DEFINITIONS)}")


def zone_mask(cohort: pd.DataFrame, definition: str = DEFAULT_DEFINITION,
              threshold: float = DEFAULT_THRESHOLD, metric: str = "kld_mean") -> pd.Series:
    """Silent-zone membership of each cohort row (bool Series on cohort's index).

    cohort: `cohort_table` output. With its exact columns (score_num, score_den, ref_num) the
    score-based rules are decided in integers (`zone_rule_int`); without them on the float columns
    (`zone_rule`). kld_quantile needs `metric`, bpw the bpw column.
    """
    col = cohort[metric].to_numpy(float) if metric in cohort else np.full(len(cohort), np.nan)
    if {"score_num", "score_den", "ref_num"} <= set(cohort.columns) and len(cohort):
        rule = zone_rule_int(cohort["score_num"].to_numpy(np.int64), cohort["ref_num"].to_numpy(np.int64),
                             int(cohort["score_den"].iloc[0]), col, cohort["bpw"].to_numpy(float),
                             definition, threshold)
    else:
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
