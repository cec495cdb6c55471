"""analysis.stats: Spearman, bootstrap, permutation, Fisher z, power, TOST, Holm."""

import inspect
import itertools
import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst
from scipy import stats as st
from statsmodels.stats.multitest import multipletests

from analysis import stats as S

FAST = settings(max_examples=40, deadline=None)
ints = hst.lists(hst.integers(-50, 50), min_size=4, max_size=25)


def test_spearman_worked_example():
    # x = 1..5, y = 2,1,4,3,5 -> d = -1,1,-1,1,0 -> sum d^2 = 4; rho = 1 - 6*4/(5*24) = 0.8
    rho, p = S.spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5])
    assert rho == pytest.approx(0.8, abs=1e-12)
    # n = 5 <= EXACT_MAX_N: exact. |rho| >= 0.8 <=> sum d^2 <= 4 or >= 36. Orders of 1..5 with sum d^2
    # <= 4: the identity, 4 adjacent swaps, 3 pairs of disjoint adjacent swaps = 8; as many mirrored
    p_exact = 16 / 120
    assert p == p_exact
    # n = 8: the t approximation. x = 1..8, y = 2,1,4,3,6,5,8,7 -> sum d^2 = 8, rho = 1 - 48/504
    rho, p = S.spearman(range(1, 9), [2, 1, 4, 3, 6, 5, 8, 7])
    r = 1 - 48 / 504
    assert rho == pytest.approx(r, abs=1e-12)
    assert p == pytest.approx(2 * st.t.sf(r * math.sqrt(6 / (1 - r * r)), 6), rel=1e-9)


def test_exact_spearman_p_by_hand():
    """Small zones: a perfect order of 3 is p = 2/6 (the t approximation says 0); of 4, 2/24; of 5,
    2/120 (the first n below 0.05). x = 1..4, y = 1,2,4,3: rho 0.8 <=> sum d^2 = 2; |rho| >= 0.8 for
    sum d^2 in {0, 2, 18, 20}: 1 + 3 + 3 + 1 = 8 of 24."""
    assert S.spearman([1, 2, 3], [3, 2, 1]) == (-1.0, 1 / 3)
    assert S.spearman([1, 2, 3, 4], [4, 3, 2, 1])[1] == 2 / 24
    assert S.spearman([1, 2, 3, 4, 5], [1, 2, 3, 4, 5])[1] == 2 / 120
    assert S.spearman([1, 2, 3, 4], [1, 2, 4, 3])[1] == 8 / 24
    # a tie: y ranks 1.5, 1.5, 3 against x 1, 2, 3: rho = +0.866; pairings give |rho| 0.866 four
    # times (the tied pair first or last) and 0 twice (3 in the middle) -> p = 4/6
    assert S.spearman([1, 2, 3], [1, 1, 2])[1] == pytest.approx(4 / 6, abs=0)
    with pytest.raises(ValueError, match="n = 8 > 7"):
        S.exact_spearman_p(np.arange(1, 9), np.arange(1, 9))


@settings(max_examples=40, deadline=None)
@given(hst.integers(3, S.EXACT_MAX_N).flatmap(
    lambda n: hst.tuples(hst.lists(hst.integers(0, 4), min_size=n, max_size=n),
                         hst.lists(hst.integers(0, 4), min_size=n, max_size=n))))
def test_exact_spearman_p_equals_scipy_permutation_test(pairing_p, xy):
    """A second library: scipy.stats.permutation_test of |rho| over every order of x against y (one
    sample, 'pairings', n_resamples=inf: exact), rho from scipy's average ranks, ties included."""
    x, y = (np.asarray(v, float) for v in xy)
    rho, p = S.spearman(x, y)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        assert math.isnan(p)
        return
    assert p == pytest.approx(pairing_p(x, y), abs=1e-9)


def test_spearman_undefined_cases_are_nan():
    assert all(math.isnan(v) for v in S.spearman([1, 2], [2, 1]))
    assert all(math.isnan(v) for v in S.spearman([1, 1, 1, 1], [1, 2, 3, 4]))


@FAST
@given(hst.data())
def test_spearman_rows_matches_scipy_with_ties(pairing_p, data):
    n = data.draw(hst.integers(3, 20))
    xs = data.draw(hst.lists(hst.lists(hst.integers(0, 5), min_size=n, max_size=n), min_size=1, max_size=5))
    ys = data.draw(hst.lists(hst.lists(hst.integers(0, 5), min_size=n, max_size=n), min_size=len(xs),
                             max_size=len(xs)))
    got = S.spearman_rows(np.array(xs, float), np.array(ys, float))
    for g, x, y in zip(got, xs, ys):
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            assert math.isnan(g)
        else:
            assert g == pytest.approx(st.spearmanr(x, y).statistic, abs=1e-12)
            rho, p = S.spearman(x, y)
            assert rho == pytest.approx(st.spearmanr(x, y).statistic, abs=1e-12)
            want = st.spearmanr(x, y).pvalue if n > S.EXACT_MAX_N else pairing_p(x, y)
            assert p == pytest.approx(want, abs=1e-9)


@FAST
@given(ints, hst.integers(0, 2**32 - 1))
def test_spearman_unchanged_by_monotone_transforms(x, seed):
    x = np.array(x, float)
    y = np.random.default_rng(seed).permutation(len(x)).astype(float)
    rho = S.spearman(x, y)[0]
    up = S.spearman(3 * x**3 + x + 7, np.exp(y / 10))[0]  # strictly increasing in x and in y
    down = S.spearman(-x, y)[0]
    if math.isnan(rho):
        assert math.isnan(up) and math.isnan(down)
    else:
        assert up == pytest.approx(rho, abs=1e-12)
        assert down == pytest.approx(-rho, abs=1e-12)


def test_default_resamples_is_10000():
    import analysis
    from analysis import decompose, per_prompt, zone

    assert S.DEFAULT_RESAMPLES == analysis.DEFAULT_RESAMPLES == 10_000
    funcs = [S.bootstrap_distribution, S.bootstrap_ci, S.permutation_pvalue, S.correlate, zone.full_vs_zone,
             zone.sweep, zone.robustness_table, decompose.decomposition_correlations,
             per_prompt.failure_prediction, per_prompt.routing]
    for f in funcs:
        params = inspect.signature(f).parameters
        name = "n_permutations" if f is S.permutation_pvalue else "n_resamples"
        assert params[name].default == 10_000, f.__name__


def test_bootstrap_same_seed_same_bytes_different_seed_differs():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=30), rng.normal(size=30)
    a = S.bootstrap_distribution((x, y), S.spearman_rows, np.random.default_rng(7), 500)
    b = S.bootstrap_distribution((x, y), S.spearman_rows, np.random.default_rng(7), 500)
    c = S.bootstrap_distribution((x, y), S.spearman_rows, np.random.default_rng(8), 500)
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()
    r1 = S.correlate(x, y, np.random.default_rng(3), 300)
    r2 = S.correlate(x, y, np.random.default_rng(3), 300)
    assert repr(r1) == repr(r2)


def test_bootstrap_resamples_rows_jointly():
    # y = 2x exactly: every resample keeps pairs together, so every resampled rho is 1 (or NaN when a
    # resample draws one value only)
    x = np.arange(10.0)
    vals = S.bootstrap_distribution((x, 2 * x), S.spearman_rows, np.random.default_rng(1), 200)
    assert np.all(vals[np.isfinite(vals)] == pytest.approx(1.0))
    assert np.isfinite(vals).sum() == 200


def test_bootstrap_10000_over_30_models_is_fast():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=30), rng.normal(size=30)
    t0 = time.perf_counter()
    ci = S.bootstrap_ci((x, y), S.spearman_rows, np.random.default_rng(1))
    elapsed = time.perf_counter() - t0
    assert ci.n_valid == 10_000 and ci.lo < S.spearman(x, y)[0] < ci.hi
    assert elapsed < 1.0


def test_percentile_interval_worked_example():
    # values 0..100 (101 values): 2.5% and 97.5% linear quantiles are exactly 2.5 and 97.5; NaN ignored
    v = np.append(np.arange(101.0), np.nan)
    lo, hi, n = S.percentile_interval(v)
    assert (lo, hi, n) == (pytest.approx(2.5, abs=1e-12), pytest.approx(97.5, abs=1e-12), 101)
    assert math.isnan(S.percentile_interval(np.array([np.nan])).lo)


def test_bootstrap_agrees_with_scipy_bootstrap():
    rng = np.random.default_rng(4)
    x = rng.normal(size=25)
    y = x + rng.normal(size=25)
    ours = S.bootstrap_ci((x, y), S.spearman_rows, np.random.default_rng(5), 4000)

    def rho(a, b, axis):
        return S.spearman_rows(a, b)

    ref = st.bootstrap((x, y), rho, paired=True, vectorized=True, n_resamples=4000, method="percentile",
                       rng=np.random.default_rng(6)).confidence_interval
    # different random draws: the bounds agree to Monte Carlo error
    assert ours.lo == pytest.approx(ref.low, abs=0.05)
    assert ours.hi == pytest.approx(ref.high, abs=0.05)


def test_permutation_pvalue_three_points():
    # n = 3, perfectly monotone: 2 of the 3! = 6 orderings reach |rho| = 1, so the exact p is 1/3
    p = S.permutation_pvalue([1, 2, 3], [1, 2, 3], np.random.default_rng(0), 20_000)
    assert p == pytest.approx(1 / 3, abs=0.015)
    assert p >= 1 / 20_001


def test_permutation_pvalue_agrees_with_scipy_exact():
    x = np.array([1.0, 2, 3, 4, 5, 6])
    y = np.array([2.0, 1, 4, 3, 6, 5])
    # exact p by enumerating all 6! = 720 pairings with scipy's spearmanr
    obs = abs(st.spearmanr(x, y).statistic)
    rhos = np.array([st.spearmanr(x, y[list(p)]).statistic for p in itertools.permutations(range(6))])
    exact = np.mean(np.abs(rhos) >= obs - 1e-12)
    assert S.permutation_pvalue(x, y, np.random.default_rng(2), 20_000) == pytest.approx(exact, abs=0.01)


def test_permutation_pvalue_exact_on_ties():
    # x = 1,2,3,4, y ranks (1.5, 1.5, 3.5, 3.5): |rho| is maximal exactly when the two 3.5s sit at
    # positions {3, 4} or {1, 2}: 2 x (2! 2!) = 8 of the 4! = 24 pairings -> exact p 1/3; the comparison
    # is in integers, so none of the 8 tied extremes is lost to float noise
    x, y = np.array([1.0, 2, 3, 4]), np.array([0.3, 0.3, 0.7, 0.7])
    p = S.permutation_pvalue(x, y, np.random.default_rng(0), 30_000)
    assert p == pytest.approx(1 / 3, abs=0.01)


def test_fisher_ci_worked_example():
    # Pearson se: rho = 0.5, n = 28: z = atanh(0.5) = 0.549306, half width = 1.959964 / sqrt(25) = 0.391993
    # -> (tanh(0.157313), tanh(0.941299)) = (0.156028, 0.735819)
    lo, hi = S.fisher_ci(0.5, 28, method="fisher")
    assert lo == pytest.approx(0.156028, abs=1e-6)
    assert hi == pytest.approx(0.735819, abs=1e-6)
    assert all(math.isnan(v) for v in S.fisher_ci(0.5, 3))


def test_bonett_wright_ci_worked_example():
    # Bonett-Wright: se = sqrt((1 + 0.5^2 / 2) / 25) = sqrt(0.045) = 0.212132; half = 1.959964 * 0.212132
    # = 0.415771 -> (tanh(0.133535), tanh(0.965077)) = (0.132747, 0.746533)
    assert S.z_se(0.5, 28) == pytest.approx(math.sqrt(0.045), abs=1e-15)
    lo, hi = S.fisher_ci(0.5, 28)
    assert (lo, hi) == (pytest.approx(0.132747, abs=1e-6), pytest.approx(0.746533, abs=1e-6))
    # at rho = 0 the two variances agree: 1 / (n - 3)
    assert S.fisher_ci(0.0, 28) == S.fisher_ci(0.0, 28, method="fisher")
    with pytest.raises(ValueError, match="method"):
        S.z_se(0.1, 10, "kendall")


def test_power_rho_bonett_wright_closed_form():
    # rho = 0.5, n = 28: null se0 = 1/5, alternative se1 = 0.212132; zc = 1.959964
    # power = Phi((0.549306 - 0.391993) / 0.212132) + Phi((-0.549306 - 0.391993) / 0.212132)
    #       = Phi(0.741582) + Phi(-4.437326) = 0.770834
    assert S.power_rho(0.5, 28) == pytest.approx(0.770834, abs=1e-6)
    # Pearson: shift = 0.549306 * 5 = 2.746531 -> Phi(0.786567) + Phi(-4.706495) = 0.784228
    assert S.power_rho(0.5, 28, method="fisher") == pytest.approx(
        st.norm.cdf(0.549306 * 5 - 1.959964) + st.norm.cdf(-0.549306 * 5 - 1.959964), abs=1e-5)


def test_correlate_drops_nonfinite_pairs_and_reports_n():
    x = [1, 2, 3, 4, np.nan, 6]
    y = [1, 3, 2, 4, 5, np.inf]
    r = S.correlate(x, y)
    assert r["n"] == 4 and r["rho"] == pytest.approx(st.spearmanr([1, 2, 3, 4], [1, 3, 2, 4]).statistic)
    assert math.isnan(r["ci_lo"]) and math.isnan(r["p_perm"]) and r["n_boot"] == 0
    assert set(r) == set(S.CORR_COLUMNS)


def test_min_detectable_rho_worked_example():
    # Pearson, n = 28: (z_0.975 + z_0.8) / sqrt(25) = (1.959964 + 0.841621) / 5 = 0.560317 -> tanh = 0.508213
    assert S.min_detectable_rho(28, method="fisher") == pytest.approx(0.508213, abs=1e-6)
    # Bonett-Wright solves atanh(r) = 1.959964 / 5 + 0.841621 sqrt(1 + r^2 / 2) / 5: check the equation
    r = S.min_detectable_rho(28)
    assert math.atanh(r) == pytest.approx(1.959964 / 5 + 0.841621 * math.sqrt(1 + r * r / 2) / 5, abs=1e-6)
    assert r > S.min_detectable_rho(28, method="fisher")  # the Spearman variance is larger
    assert math.isnan(S.min_detectable_rho(3))


@FAST
@given(hst.integers(6, 500), hst.sampled_from(S.METHODS))
def test_power_at_min_detectable_rho_is_80_percent(n, method):
    # the opposite tail adds < 1e-3 of power, so the round trip is 0.8 to that precision
    assert S.power_rho(S.min_detectable_rho(n, method=method), n, method=method) == pytest.approx(0.8, abs=1e-3)
    assert S.min_detectable_rho(n + 1, method=method) < S.min_detectable_rho(n, method=method)


def test_tost_worked_example():
    # rho = 0, n = 28, margin 0.5: z = 0, zm = atanh(0.5) = 0.549306, se = 0.2
    # p_upper = Phi((0 - 0.549306) / 0.2) = Phi(-2.746531) = 0.003011 = p_lower by symmetry
    r = S.tost_rho(0.0, 28, 0.5)  # at rho = 0 Bonett-Wright's se is the Pearson one
    assert r["p"] == pytest.approx(0.003011, abs=1e-6)
    assert r["p_lower"] == pytest.approx(r["p_upper"], abs=1e-15) and r["equivalent"]
    assert not S.tost_rho(0.45, 28, 0.5)["equivalent"]


@FAST
@given(hst.floats(-0.95, 0.95), hst.integers(5, 300), hst.floats(0.05, 0.9), hst.sampled_from(S.METHODS))
def test_tost_equivalent_iff_90_percent_ci_inside_margin(rho, n, margin, method):
    lo, hi = S.fisher_ci(rho, n, level=0.90, method=method)
    inside = -margin < lo and hi < margin
    r = S.tost_rho(rho, n, margin, alpha=0.05, method=method)
    if abs(r["p"] - 0.05) > 1e-9:  # away from the exact boundary
        assert r["equivalent"] == inside


def test_holm_worked_example_and_statsmodels():
    # sorted p: 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> monotone: 0.03, 0.06, 0.06
    assert S.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    p = np.array([0.2, np.nan, 0.001, 0.04, 0.5])
    got = S.holm(p)
    assert math.isnan(got[1])
    keep = [0, 2, 3, 4]
    assert got[keep] == pytest.approx(multipletests(p[keep], method="holm")[1])
