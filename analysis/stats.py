"""Correlation with uncertainty: Spearman rho, percentile bootstrap, permutation test, Fisher-z interval,
power (minimum detectable |rho|), equivalence test (TOST) and Holm adjustment.

Arrays in, numbers out. Every random step takes an explicit `numpy.random.Generator`; the same
generator state gives the same bytes. The bootstrap and the permutation test are vectorised over
resamples (ranks of an index matrix), so 10,000 resamples of ~30 models take tens of milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
from scipy import stats as st

DEFAULT_RESAMPLES = 10_000
LEVEL = 0.95
# The columns `correlate` returns; every correlation table of the package carries them.
CORR_COLUMNS = ("n", "rho", "p", "ci_lo", "ci_hi", "n_boot", "p_perm", "fz_lo", "fz_hi")
_CELLS = 1 << 21  # resample block size in cells (rows x n); fixed, so results never depend on memory
_TIE = 1e-12      # |rho_perm| >= |rho_obs| - _TIE counts as "as extreme" (float noise on exact ties)


class Interval(NamedTuple):
    """A percentile bootstrap interval: bounds and the number of finite resampled statistics."""

    lo: float
    hi: float
    n_valid: int


def rank_rows(a: np.ndarray) -> np.ndarray:
    """Average ranks (1..n; tied values share their mean rank) along the last axis.

    a: float array (..., n). Returns float array of the same shape.
    """
    return st.rankdata(a, axis=-1)


def pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of `a` with the same row of `b`.

    a, b: arrays (m, n). Returns (m,) floats; NaN where a row of either is constant.
    """
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=-1) * (b * b).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(axis=-1) / den
    r[~(den > 0)] = np.nan
    return np.clip(r, -1.0, 1.0)


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman rho (Pearson correlation of average ranks) of each row pair.

    x, y: arrays (m, n). Returns (m,) floats; NaN for rows where x or y is constant.
    Equals `scipy.stats.spearmanr` row by row.
    """
    return pearson_rows(rank_rows(x), rank_rows(y))


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Spearman rho and its two-sided p-value (t approximation, as scipy.stats.spearmanr).

    x, y: 1-D, equal length n, finite. Returns (rho, p); (NaN, NaN) when n < 3 or either input
    is constant (rho is undefined there; scipy would warn and return NaN too).
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan
    res = st.spearmanr(x, y)
    return float(res.statistic), float(res.pvalue)


def bootstrap_distribution(data: Sequence[np.ndarray], stat: Callable[..., np.ndarray],
                           rng: np.random.Generator, n_resamples: int = DEFAULT_RESAMPLES) -> np.ndarray:
    """Resample rows with replacement and evaluate a vectorised statistic on each resample.

    data: 1-D arrays of one length n, resampled jointly (row i of every array stays together).
    stat: f(*arrays of shape (b, n)) -> (b,) values, e.g. `spearman_rows`.
    Returns (n_resamples,) floats, NaN where the statistic is undefined on a resample.
    Resamples are drawn in fixed blocks, so a seed gives the same values on any machine.
    """
    data = [np.asarray(d) for d in data]
    n = len(data[0])
    out = np.full(n_resamples, np.nan)
    if n == 0:
        return out
    block = max(1, _CELLS // n)
    for start in range(0, n_resamples, block):
        b = min(block, n_resamples - start)
        idx = rng.integers(0, n, size=(b, n))
        out[start:start + b] = stat(*(d[idx] for d in data))
    return out


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> Interval:
    """Percentile interval of bootstrap values, ignoring NaN. values: (B,). Returns Interval."""
    ok = values[np.isfinite(values)]
    if ok.size == 0:
        return Interval(math.nan, math.nan, 0)
    a = (1 - level) / 2
    lo, hi = np.quantile(ok, [a, 1 - a])
    return Interval(float(lo), float(hi), int(ok.size))


def bootstrap_ci(data: Sequence[np.ndarray], stat: Callable[..., np.ndarray], rng: np.random.Generator,
                 n_resamples: int = DEFAULT_RESAMPLES, level: float = LEVEL) -> Interval:
    """Percentile bootstrap interval of `stat` over rows of `data` (see `bootstrap_distribution`).

    Serves Spearman (data=(x, y), stat=spearman_rows), per-prompt KLD ratios, routing accuracy.
    Returns Interval(lo, hi, n_valid) with n_valid the number of finite resampled statistics.
    """
    return percentile_interval(bootstrap_distribution(data, stat, rng, n_resamples), level)


def permutation_pvalue(x: Sequence[float], y: Sequence[float], rng: np.random.Generator,
                       n_permutations: int = DEFAULT_RESAMPLES) -> float:
    """Two-sided Monte Carlo permutation p-value of Spearman rho (pairing of x and y shuffled).

    p = (1 + #{|rho_perm| >= |rho_obs|}) / (1 + n_permutations), never 0 (Phipson & Smyth 2010).
    x, y: 1-D, length n. Returns NaN when rho is undefined (n < 3, constant input).
    """
    rx, ry = rank_rows(np.asarray(x, float)), rank_rows(np.asarray(y, float))
    n = len(rx)
    obs = pearson_rows(rx[None], ry[None])[0]
    if n < 3 or not np.isfinite(obs):
        return math.nan
    hits, block = 0, max(1, _CELLS // n)
    for start in range(0, n_permutations, block):
        b = min(block, n_permutations - start)
        perm = rng.permuted(np.tile(ry, (b, 1)), axis=1)  # ranks of permuted y = permuted ranks of y
        hits += int((np.abs(pearson_rows(np.broadcast_to(rx, perm.shape), perm)) >= abs(obs) - _TIE).sum())
    return (1 + hits) / (1 + n_permutations)


def fisher_ci(rho: float, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Fisher-z confidence interval for a correlation: tanh(atanh(rho) +- z_{(1+level)/2} / sqrt(n-3)).

    Uses the Pearson standard error 1/sqrt(n-3) for Spearman too (a common approximation).
    Returns (lo, hi); NaN when n < 4 or rho is NaN.
    """
    if n < 4 or not np.isfinite(rho):
        return math.nan, math.nan
    z = math.atanh(float(np.clip(rho, -1 + 1e-15, 1 - 1e-15)))
    half = st.norm.ppf((1 + level) / 2) / math.sqrt(n - 3)
    return math.tanh(z - half), math.tanh(z + half)


def correlate(x: Sequence[float], y: Sequence[float], rng: np.random.Generator | None = None,
              n_resamples: int = DEFAULT_RESAMPLES, n_permutations: int | None = None,
              level: float = LEVEL) -> dict:
    """Spearman rho of x and y with every uncertainty measure of the study.

    x, y: 1-D, equal length; pairs with a non-finite member are dropped first.
    rng: generator for the bootstrap (drawn first) and the permutation test (drawn second); None
    skips both (their columns are NaN). n_permutations defaults to n_resamples.
    Returns a dict with keys CORR_COLUMNS: n (pairs used), rho, p (t approximation), ci_lo/ci_hi
    (percentile bootstrap over pairs), n_boot (finite bootstrap values), p_perm, fz_lo/fz_hi (Fisher z).
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    rho, p = spearman(x, y)
    out = dict(n=int(len(x)), rho=rho, p=p, ci_lo=math.nan, ci_hi=math.nan, n_boot=0,
               p_perm=math.nan)
    if rng is not None and np.isfinite(rho):
        ci = bootstrap_ci((x, y), spearman_rows, rng, n_resamples, level)
        out.update(ci_lo=ci.lo, ci_hi=ci.hi, n_boot=ci.n_valid)
        n_perm = n_resamples if n_permutations is None else n_permutations
        out["p_perm"] = permutation_pvalue(x, y, rng, n_perm)
    out["fz_lo"], out["fz_hi"] = fisher_ci(rho, len(x), level)
    return out


def min_detectable_rho(n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest |rho| a two-sided test at `alpha` detects with probability `power` at sample size n.

    Fisher z approximation: tanh((z_{1-alpha/2} + z_{power}) / sqrt(n - 3)). NaN when n < 4.
    """
    if n < 4:
        return math.nan
    return math.tanh((st.norm.ppf(1 - alpha / 2) + st.norm.ppf(power)) / math.sqrt(n - 3))


def power_rho(rho: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided Fisher-z test of rho = 0 at true correlation `rho` and sample size n."""
    if n < 4:
        return math.nan
    shift, zc = abs(math.atanh(rho)) * math.sqrt(n - 3), st.norm.ppf(1 - alpha / 2)
    return float(st.norm.cdf(shift - zc) + st.norm.cdf(-shift - zc))


def tost_rho(rho: float, n: int, margin: float, alpha: float = 0.05) -> dict:
    """Equivalence test (two one-sided tests on Fisher z) of H0: |rho| >= margin vs H1: |rho| < margin.

    rho: observed correlation; n: pairs; margin in (0, 1). Standard error 1/sqrt(n-3).
    Returns dict p_lower (H0 rho <= -margin), p_upper (H0 rho >= margin), p = max of both,
    equivalent = p < alpha. Equivalent exactly when the (1 - 2 alpha) Fisher-z interval lies inside
    (-margin, margin). NaN p (and equivalent False) when n < 4 or rho is NaN.
    """
    if n < 4 or not np.isfinite(rho):
        return dict(p_lower=math.nan, p_upper=math.nan, p=math.nan, equivalent=False)
    se = 1 / math.sqrt(n - 3)
    z, zm = math.atanh(float(np.clip(rho, -1 + 1e-15, 1 - 1e-15))), math.atanh(margin)
    p_lower = float(st.norm.sf((z + zm) / se))
    p_upper = float(st.norm.cdf((z - zm) / se))
    p = max(p_lower, p_upper)
    return dict(p_lower=p_lower, p_upper=p_upper, p=p, equivalent=bool(p < alpha))


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values (statsmodels multipletests 'holm'); NaN entries stay NaN and
    are not counted in the family. pvalues: 1-D. Returns an array of the same length."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvalues, float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out
