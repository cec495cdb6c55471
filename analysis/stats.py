"""Correlation with uncertainty: Spearman rho, percentile bootstrap, permutation test, Fisher-z interval,
power (minimum detectable |rho|), equivalence test (TOST) and Holm adjustment.

Standard errors on the Fisher-z scale: the intervals, power and TOST use, by default, the Spearman
variance of Bonett & Wright (2000), var(atanh r) ~ (1 + r^2 / 2) / (n - 3) (method="bonett-wright");
method="fisher" gives the Pearson variance 1 / (n - 3). Under H0 (rho = 0) both are 1 / (n - 3).

Arrays in, numbers out. Every random step takes an explicit `numpy.random.Generator`; the same
generator state gives the same bytes. The bootstrap and the permutation test are vectorised over
resamples (ranks of an index matrix), so 10,000 resamples of ~30 models take tens of milliseconds.
"""

from __future__ import annotations

import functools
import itertools
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
# A Spearman p over n <= EXACT_MAX_N pairs is exact (every one of the n! pairings); above, the t
# approximation of scipy.stats.spearmanr. The t approximation gives p = 0 to a perfect rank order at any
# n, so a zone of 3 quants in perfect order "rejected rho = 0" there, where the exact p is 1/3 (it takes
# 5 pairs to reach p < 0.05 at all: 2/120).
EXACT_MAX_N = 7
METHODS = ("bonett-wright", "fisher")


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
    """Spearman rho and its two-sided p-value: exact for n <= EXACT_MAX_N (`exact_spearman_p`), else
    the t approximation, as scipy.stats.spearmanr.

    x, y: 1-D, equal length n, finite. Returns (rho, p); (NaN, NaN) when n < 3 or either input
    is constant (rho is undefined there; scipy would warn and return NaN too).
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan
    res = st.spearmanr(x, y)
    p = exact_spearman_p(st.rankdata(x), st.rankdata(y)) if len(x) <= EXACT_MAX_N else float(res.pvalue)
    return float(res.statistic), p


@functools.lru_cache(maxsize=None)
def _pairings(n: int) -> np.ndarray:
    """Every permutation of range(n), (n!, n)."""
    return np.array(list(itertools.permutations(range(n))), dtype=np.intp)


def exact_spearman_p(rx: np.ndarray, ry: np.ndarray) -> float:
    """Two-sided exact permutation p of Spearman's rho: the share of the n! pairings of the y ranks
    with the x ranks whose |rho| is at least the observed one. rx, ry: average ranks 1..n (ties keep
    their mean rank). Exact arithmetic: the ranks are half-integers with mean (n + 1) / 2, and every
    pairing has the same rank variances, so |rho| orders as the integer-valued cross products, which
    float64 holds exactly. For n <= EXACT_MAX_N (n! pairings are enumerated)."""
    rx, ry = np.asarray(rx, float), np.asarray(ry, float)
    n = len(rx)
    if n > EXACT_MAX_N:
        raise ValueError(f"exact_spearman_p: n = {n} > {EXACT_MAX_N} (use the t approximation)")
    dx, dy = 2 * rx - (n + 1), 2 * ry - (n + 1)  # doubled: integers
    obs = abs(float(dx @ dy))
    return float(np.mean(np.abs(dy[_pairings(n)] @ dx) >= obs))


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
    "As extreme" is decided exactly: twice the average ranks are integers, and for fixed rank
    multisets rho is an increasing function of the integer n sum(2rx 2ry) - sum(2rx) sum(2ry), so
    permutations with equal |rho| compare equal without any tolerance.
    """
    rx, ry = rank_rows(np.asarray(x, float)), rank_rows(np.asarray(y, float))
    n = len(rx)
    obs = pearson_rows(rx[None], ry[None])[0]
    if n < 3 or not np.isfinite(obs):
        return math.nan
    ax, ay = np.rint(2 * rx).astype(np.int64), np.rint(2 * ry).astype(np.int64)
    centre = int(ax.sum()) * int(ay.sum())
    stat_obs = abs(n * int(ax @ ay) - centre)
    hits, block = 0, max(1, _CELLS // n)
    for start in range(0, n_permutations, block):
        b = min(block, n_permutations - start)
        perm = rng.permuted(np.tile(ay, (b, 1)), axis=1)  # ranks of permuted y = permuted ranks of y
        hits += int((np.abs(n * (perm @ ax) - centre) >= stat_obs).sum())
    return (1 + hits) / (1 + n_permutations)


def z_se(rho: float, n: int, method: str = "bonett-wright") -> float:
    """Standard error of atanh(r) at correlation rho and n pairs: sqrt((1 + rho^2 / 2) / (n - 3))
    (Bonett-Wright, Spearman) or 1 / sqrt(n - 3) (method="fisher", Pearson). NaN when n < 4."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if n < 4:
        return math.nan
    return math.sqrt((1 + rho * rho / 2 if method == "bonett-wright" else 1.0) / (n - 3))


def fisher_ci(rho: float, n: int, level: float = LEVEL, method: str = "bonett-wright") -> tuple[float, float]:
    """Confidence interval for a correlation on the Fisher-z scale: tanh(atanh(rho) +- z_{(1+level)/2} se)
    with se = `z_se(rho, n, method)` (default Bonett-Wright for Spearman).

    Returns (lo, hi); NaN when n < 4 or rho is NaN.
    """
    if n < 4 or not np.isfinite(rho):
        return math.nan, math.nan
    rho = float(np.clip(rho, -1 + 1e-15, 1 - 1e-15))
    z = math.atanh(rho)
    half = st.norm.ppf((1 + level) / 2) * z_se(rho, n, method)
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


def power_rho(rho: float, n: int, alpha: float = 0.05, method: str = "bonett-wright") -> float:
    """Power of the two-sided z test of rho = 0 on atanh(r) at true correlation `rho` and n pairs.

    The test rejects when |atanh r| > z_{1-alpha/2} se0 with se0 = 1 / sqrt(n - 3) (the null variance,
    the same for both methods); under the alternative atanh r ~ N(atanh rho, se1^2) with se1 =
    `z_se(rho, n, method)`. Power = Phi((|z| - zc se0) / se1) + Phi((-|z| - zc se0) / se1).
    NaN when n < 4. This ignores the range restriction of a zone: see `analysis.uncertainty.noise_ceiling`.
    """
    if n < 4:
        return math.nan
    rho = float(np.clip(rho, -1 + 1e-15, 1 - 1e-15))
    z, zc = abs(math.atanh(rho)), st.norm.ppf(1 - alpha / 2)
    se0, se1 = z_se(0.0, n, method), z_se(rho, n, method)
    return float(st.norm.cdf((z - zc * se0) / se1) + st.norm.cdf((-z - zc * se0) / se1))


def min_detectable_rho(n: int, alpha: float = 0.05, power: float = 0.8, method: str = "bonett-wright") -> float:
    """Smallest |rho| a two-sided test at `alpha` detects with probability `power` at sample size n.

    Solves atanh(rho) = z_{1-alpha/2} se0 + z_power se1(rho) (se as in `power_rho`; neglecting the
    opposite tail); with method="fisher" this is tanh((z_{1-alpha/2} + z_power) / sqrt(n - 3)).
    NaN when n < 4.
    """
    if n < 4:
        return math.nan
    za, zb = st.norm.ppf(1 - alpha / 2), st.norm.ppf(power)
    if method == "fisher":
        return math.tanh((za + zb) / math.sqrt(n - 3))

    def gap(r: float) -> float:
        """atanh(r) minus the z it must reach."""
        return math.atanh(r) - za * z_se(0.0, n, method) - zb * z_se(r, n, method)

    if gap(1 - 1e-12) < 0:
        return math.nan
    from scipy.optimize import brentq

    return float(brentq(gap, 1e-12, 1 - 1e-12, xtol=1e-14))


def tost_rho(rho: float, n: int, margin: float, alpha: float = 0.05, method: str = "bonett-wright") -> dict:
    """Equivalence test (two one-sided tests on Fisher z) of H0: |rho| >= margin vs H1: |rho| < margin.

    rho: observed correlation; n: pairs; margin in (0, 1). Standard error `z_se(rho, n, method)` at the
    observed rho (Bonett-Wright by default; "fisher": 1/sqrt(n-3)).
    Returns dict p_lower (H0 rho <= -margin), p_upper (H0 rho >= margin), p = max of both,
    equivalent = p < alpha. Equivalent exactly when the (1 - 2 alpha) `fisher_ci` (same method) lies
    inside (-margin, margin). NaN p (and equivalent False) when n < 4 or rho is NaN.
    """
    if n < 4 or not np.isfinite(rho):
        return dict(p_lower=math.nan, p_upper=math.nan, p=math.nan, equivalent=False)
    rho = float(np.clip(rho, -1 + 1e-15, 1 - 1e-15))
    se = z_se(rho, n, method)
    z, zm = math.atanh(rho), math.atanh(margin)
    p_lower = float(st.norm.sf((z + zm) / se))
    p_upper = float(st.norm.cdf((z - zm) / se))
    p = max(p_lower, p_upper)
    return dict(p_lower=p_lower, p_upper=p_upper, p=p, equivalent=bool(p < alpha))


def masked_spearman_rows(x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spearman rho and its p (as `spearman`: exact for at most EXACT_MAX_N members, else the t
    approximation of scipy.stats.spearmanr) of each row over the columns where `mask` is True, for rows
    whose member sets differ (a zone per resample).

    x, y: (b, n) arrays whose values compare exactly (ints or exact floats); mask: bool (b, n).
    Average ranks among members are counted by pairwise comparison (O(b n^2)), so ties are exact.
    Returns (rho (b,), p (b,)); NaN where fewer than 3 members or x or y is constant among them.
    """
    mask = np.asarray(mask, bool)
    x, y = np.broadcast_to(np.asarray(x), mask.shape), np.broadcast_to(np.asarray(y), mask.shape)
    block = max(1, _CELLS // max(1, mask.shape[1] ** 2))
    if mask.shape[0] > block:
        parts = [_masked_spearman_block(x[i:i + block], y[i:i + block], mask[i:i + block])
                 for i in range(0, mask.shape[0], block)]
        return np.concatenate([a for a, _ in parts]), np.concatenate([b for _, b in parts])
    return _masked_spearman_block(x, y, mask)


def _masked_spearman_block(x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`masked_spearman_rows` on one block of rows (all arrays (b, n))."""

    def ranks(v: np.ndarray) -> np.ndarray:
        """Average ranks among the members of each row (garbage outside them)."""
        m = mask[:, None, :]
        less = ((v[:, None, :] < v[:, :, None]) & m).sum(axis=2)
        equal = ((v[:, None, :] == v[:, :, None]) & m).sum(axis=2)
        return less + (equal + 1) / 2

    n = mask.sum(axis=1)
    rx, ry = ranks(x), ranks(y)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = (rx * mask).sum(axis=1, keepdims=True) / n[:, None]
        my = (ry * mask).sum(axis=1, keepdims=True) / n[:, None]
        dx, dy = (rx - mx) * mask, (ry - my) * mask
        den = np.sqrt((dx * dx).sum(axis=1) * (dy * dy).sum(axis=1))
        rho = np.clip((dx * dy).sum(axis=1) / den, -1.0, 1.0)
        rho[~(den > 0) | (n < 3)] = np.nan
        t = rho * np.sqrt((n - 2) / ((1 - rho) * (1 + rho)))
        p = 2 * st.t.sf(np.abs(t), np.maximum(n - 2, 1))
    p[~np.isfinite(rho)] = np.nan
    for i in np.flatnonzero(np.isfinite(rho) & (n <= EXACT_MAX_N)):
        m = mask[i]
        p[i] = exact_spearman_p(rx[i, m], ry[i, m])
    return rho, p


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
