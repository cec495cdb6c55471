"""analysis.per_prompt: failure prediction (KLD ratio, AUROC) and KLD routing."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst
from scipy import stats as st

from analysis import per_prompt as P

FAST = settings(max_examples=50, deadline=None)


def test_auroc_worked_examples():
    # positives {0.4, 0.8} vs negatives {0.1, 0.35}: all 4 pairs ordered -> 1.0
    assert P.auroc([0.1, 0.4, 0.35, 0.8], [False, True, False, True]) == 1.0
    # positives {2, 3} vs negatives {1, 2}: (2>1) 1 + (2=2) 0.5 + (3>1) 1 + (3>2) 1 = 3.5 of 4 = 0.875
    assert P.auroc([1, 2, 2, 3], [False, True, False, True]) == 0.875
    assert math.isnan(P.auroc([1, 2], [True, True]))


@FAST
@given(hst.lists(hst.tuples(hst.integers(0, 6), hst.booleans()), min_size=2, max_size=40))
def test_auroc_equals_pair_count_and_mann_whitney(pairs):
    s = np.array([p[0] for p in pairs], float)
    y = np.array([p[1] for p in pairs])
    got = P.auroc(s, y)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        assert math.isnan(got)
        return
    wins = (pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()
    brute = wins / (len(pos) * len(neg))
    assert got == pytest.approx(brute, abs=1e-12)
    u = st.mannwhitneyu(pos, neg).statistic
    assert got == pytest.approx(u / (len(pos) * len(neg)), abs=1e-12)


SPEC = {"reference": {"t": "1101"}, "q": {"t": "0011"}}
KLD = {"q": {"t": [0.2, 0.8, 0.1, 0.4]}}


def test_failure_prediction_worked_example(samples_from):
    s = samples_from(SPEC, KLD)
    r = P.failure_prediction(s).iloc[0]
    # failed items 0, 1: gm(0.2, 0.8) = 0.4; passed items 2, 3: gm(0.1, 0.4) = 0.2 -> ratio 2
    assert (r["model"], r["task"], r["n"], r["n_failed"]) == ("q", "t", 4, 2)
    assert (r["gm_failed"], r["gm_passed"], r["gm_ratio"]) == pytest.approx((0.4, 0.2, 2.0))
    # failed {0.2, 0.8} vs passed {0.1, 0.4}: 0.2>0.1, 0.2<0.4, 0.8>0.1, 0.8>0.4 -> 3/4
    assert r["auroc"] == 0.75 and math.isnan(r["ratio_lo"])
    # only prompts the reference gets right (items 0, 1, 3): failed gm 0.4, passed 0.4 -> ratio 1
    rc = P.failure_prediction(s, subset="ref_correct").iloc[0]
    assert rc["n"] == 3 and rc["gm_ratio"] == pytest.approx(1.0)
    pooled = P.failure_prediction(s, by=("model",))
    assert list(pooled.columns[:2]) == ["model", "n"] and len(pooled) == 1
    with pytest.raises(ValueError, match="subset"):
        P.failure_prediction(s, subset="drops")


def test_drop_prediction_counts_drops_and_kept(samples_from):
    # reference 1101 on t: items 0, 1, 3 are the reference's correct answers; q 0011 drops 0 and 1, keeps 3
    # (item 2 is a gain, not considered); drops gm(0.2, 0.8) = 0.4 vs kept 0.4 -> ratio 1, AUROC 0.5 + ...
    # drops {0.2, 0.8} vs kept {0.4}: 0.2 < 0.4, 0.8 > 0.4 -> 1/2
    s = samples_from(SPEC, KLD)
    d = P.drop_prediction(s)
    assert list(d["task"]) == ["all", "t"] and list(d.columns) == list(P.DROP_COLUMNS)
    r = d.iloc[0]
    assert (r["n_drops"], r["n_kept"], r["auroc"]) == (2, 1, 0.5)
    assert r["gm_ratio"] == pytest.approx(1.0)
    boot = P.drop_prediction(s, np.random.default_rng(0), 200)
    assert boot["auroc_lo"].notna().all()


def test_failure_prediction_floor_and_bootstrap(samples_from):
    # a zero KLD counts as the floor 1e-10 in the geometric mean
    s = samples_from(SPEC, {"q": {"t": [0.0, 1e-6, 0.1, 0.4]}})
    r = P.failure_prediction(s, floor=1e-10).iloc[0]
    assert r["n_floored"] == 1
    assert r["gm_failed"] == pytest.approx(math.sqrt(1e-10 * 1e-6))


def test_failure_prediction_ci_deterministic(study):
    samples = study[0]
    a = P.failure_prediction(samples, np.random.default_rng(4), 300, by=("model",))
    b = P.failure_prediction(samples, np.random.default_rng(4), 300, by=("model",))
    c = P.failure_prediction(samples, np.random.default_rng(5), 300, by=("model",))
    assert a.to_csv() == b.to_csv() != c.to_csv()
    assert (a["ratio_lo"] <= a["gm_ratio"]).all() and (a["gm_ratio"] <= a["ratio_hi"]).all()
    assert ((a["auroc_lo"] <= a["auroc"]) & (a["auroc"] <= a["auroc_hi"])).all()
    assert len(a) == 13 and "reference" not in set(a["model"])


ROUTE = {"reference": {"t": "111111"}, "A": {"t": "110010"}, "B": {"t": "101001"}}
ROUTE_KLD = {"A": {"t": [0.1, 0.1, 0.5, 0.3, 0.6, 0.9]}, "B": {"t": [0.2, 0.3, 0.4, 0.3, 0.5, 0.1]}}


def test_routing_worked_example(samples_from):
    s = samples_from(ROUTE, ROUTE_KLD)
    r = P.routing(s, ["A", "B"]).set_index("task").loc["t"]
    # disagreement items 1 (A right), 2 (B right), 4 (A right), 5 (B right); lower KLD picks
    # A (.1<.3) right, B (.4<.5) right, B (.5<.6) wrong, B (.1<.9) right -> 3/4
    assert (r["n"], r["n_disagree"], r["route_acc"], r["chance"]) == (6, 4, 0.75, 0.5)
    # two models: a binomial test, 3 of 4 at 1/2 -> two-sided (1 + 4 + 4 + 1)/16 = 0.625
    assert r["p_chance"] == pytest.approx(0.625)
    assert r["p_chance"] == pytest.approx(st.binomtest(3, 4, 0.5).pvalue)
    # all prompts: routed credits 1, 1, 1, 0 (both wrong), 0, 1 -> 4/6; random 0.5; oracle 5/6
    assert (r["routed_acc"], r["random_acc"], r["oracle_acc"]) == pytest.approx((4 / 6, 0.5, 5 / 6))
    assert (r["best_single_acc"], r["best_single_model"], r["models"]) == (0.5, "A", "A+B")
    all_row = P.routing(s, ["A", "B"]).set_index("task").loc["all"]
    assert all_row["route_acc"] == 0.75


def test_routing_ties_earn_mean_correctness(samples_from):
    # one disagreement prompt with equal KLD: credit (1 + 0)/2 = 0.5
    s = samples_from({"reference": {"t": "1"}, "A": {"t": "1"}, "B": {"t": "0"}},
                     {"A": {"t": [0.3]}, "B": {"t": [0.3]}})
    assert P.routing(s, ["A", "B"]).iloc[0]["route_acc"] == 0.5
    with pytest.raises(ValueError, match="two models"):
        P.routing(s, ["A"])


def test_routing_three_models_and_bootstrap(study):
    samples = study[0]
    models = ["q02", "q07", "q11"]
    a = P.routing(samples, models, np.random.default_rng(1), 400)
    b = P.routing(samples, models, np.random.default_rng(1), 400)
    assert a.to_csv() == b.to_csv()
    assert list(a["task"]) == ["piqa", "sciq", "all"]
    allr = a.set_index("task").loc["all"]
    assert allr["n_disagree"] == a.iloc[:2]["n_disagree"].sum()
    assert allr["ci_lo"] <= allr["route_acc"] <= allr["ci_hi"]
    assert allr["routed_acc"] <= allr["oracle_acc"] and 0 < allr["p_chance"] <= 1


def test_poisson_binomial_worked_and_binomial_special_case():
    # two fair trials: pmf 1/4, 1/2, 1/4; k = 2 -> counts no more likely: 0 and 2 -> 0.5
    assert P.poisson_binomial_pvalue(2, [0.5, 0.5]) == pytest.approx(0.5)
    # probs 1/3, 2/3: pmf(0) = 2/9, pmf(1) = 5/9, pmf(2) = 2/9 -> p(k=1) = 1
    assert P.poisson_binomial_pvalue(1, [1 / 3, 2 / 3]) == pytest.approx(1.0)


@FAST
@given(hst.integers(1, 60), hst.floats(0.05, 0.95), hst.data())
def test_poisson_binomial_equals_binomtest(n, p, data):
    k = data.draw(hst.integers(0, n))
    assert P.poisson_binomial_pvalue(k, [p] * n) == pytest.approx(st.binomtest(k, n, p).pvalue, rel=1e-6,
                                                                  abs=1e-12)


@FAST
@given(hst.integers(2, 30), hst.integers(1, 8), hst.integers(0, 2**32 - 1))
def test_auroc_codes_rows_equals_rank_version_exactly(n, n_values, seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, n_values, size=(5, n)).astype(float) / 7  # many ties
    positive = rng.random((5, n)) < 0.4
    codes = np.unique(scores, return_inverse=True)[1].reshape(scores.shape)
    fast = P.auroc_codes_rows(codes, positive, int(codes.max()) + 1)
    slow = P.auroc_rows(scores, positive)
    assert np.array_equal(fast, slow, equal_nan=True)
