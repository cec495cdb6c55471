"""analysis.decompose: gains/losses/vol/f/delta, the exact identity, McNemar, correlations."""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst
from scipy import stats as st
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

from analysis import cohort as C
from analysis import decompose as D


def test_decompose_worked_example(samples_from):
    # ref 11001, quant 10111: gains at items 2, 3 (quant right, ref wrong); loss at item 1 -> g 2, l 1
    # vol 3, f 2/3, delta (2 - 1)/5 = 0.2; score 3/5 + 3 (2 * 2/3 - 1) / 5 = 3/5 + 1/5 = 4/5
    s = samples_from({"reference": {"t": "11001"}, "q": {"t": "10111"}})
    row = D.decomposition(s).set_index("task").loc["t"]
    assert (row.n, row.ref_correct, row.correct, row.leapfrogs, row.drops, row.vol) == (5, 3, 4, 2, 1, 3)
    assert row.f == pytest.approx(2 / 3) and row.delta == 0.2 and row.vol_rate == 0.6
    # McNemar exact: 2 * P(Bin(3, 1/2) <= 1) = 2 * (1 + 3) / 8 = 1 -> capped at 1
    assert row.mcnemar_exact and row.mcnemar_p == 1.0


def test_no_flips_gives_nan_direction(samples_from):
    s = samples_from({"reference": {"t": "1010"}, "q": {"t": "1010"}})
    row = D.decomposition(s).iloc[0]
    assert row.vol == 0 and math.isnan(row.f) and row.delta == 0 and row.mcnemar_p == 1.0


def test_composite_rows_pool_counts_and_weight_deltas(samples_from):
    # piqa (4 items): ref 1100, q 1111 -> g 2, l 0, delta 0.5; sciq (2 items): ref 11, q 01 -> g 0, l 1,
    # delta -0.5. Composite: g 2, l 1, vol 3, f 2/3, n 6; delta (0.5 - 0.5)/2 = 0 = change of the
    # equal-weight composite ((1 + 0.5)/2 - (0.5 + 1)/2); vol_rate (2/4 + 1/2)/2 = 0.5
    s = samples_from({"reference": {"piqa": "1100", "sciq": "11"}, "q": {"piqa": "1111", "sciq": "01"}})
    comp = D.decomposition(s).set_index("task").loc[D.COMPOSITE]
    assert (comp.leapfrogs, comp.drops, comp.vol, comp.n) == (2, 1, 3, 6)
    assert comp.f == pytest.approx(2 / 3) and comp.delta == 0 and comp.vol_rate == 0.5
    scores = C.composite_scores(s).set_index("model")["score"]
    assert comp.delta == pytest.approx(scores["q"] - scores["reference"], abs=1e-15)


@settings(max_examples=25, deadline=None)
@given(hst.integers(1, 4), hst.integers(1, 25), hst.integers(0, 2**32 - 1))
def test_identity_holds_exactly_on_random_cohorts(samples_from, n_quants, n_items, seed):
    rng = np.random.default_rng(seed)
    spec = {m: {t: "".join(rng.choice(["0", "1"], n_items)) for t in ("a", "b")}
            for m in ["reference", *(f"q{i}" for i in range(n_quants))]}
    s = samples_from(spec)
    dec = D.decomposition(s)  # runs check_identity
    ts = C.task_scores(s).set_index(["model", "task"])
    for r in dec[dec["task"] != D.COMPOSITE].itertuples():
        # score_q - score_ref == vol (2f - 1) / N, compared as integers times N
        k_q, k_ref = ts.loc[(r.model, r.task), "n_correct"], ts.loc[("reference", r.task), "n_correct"]
        assert k_q - k_ref == r.leapfrogs - r.drops
        assert math.isnan(r.f) == (r.vol == 0)
    comp = C.composite_scores(s).set_index("model")["score"]
    for r in dec[dec["task"] == D.COMPOSITE].itertuples():
        assert r.delta == pytest.approx(comp[r.model] - comp["reference"], abs=1e-12)


def test_check_identity_catches_tampering(samples_from):
    dec = D.decomposition(samples_from({"reference": {"t": "1100"}, "q": {"t": "0111"}}))
    for col, value in (("correct", 1), ("leapfrogs", 0), ("f", 0.4), ("delta", 0.3)):
        bad = dec.copy()
        bad.loc[0, col] = value
        with pytest.raises(AssertionError):
            D.check_identity(bad)
    flat = D.decomposition(samples_from({"reference": {"t": "11"}, "q": {"t": "11"}}))
    flat.loc[0, "f"] = 0.5
    with pytest.raises(AssertionError, match="vol == 0"):
        D.check_identity(flat)


def test_mcnemar_exact_and_chi2_match_statsmodels():
    # 1 gain, 6 losses: exact two-sided 2 * P(Bin(7, 1/2) <= 1) = 2 * (1 + 7) / 128 = 0.125
    stat, p, exact = D.mcnemar(1, 6)
    assert exact and p == pytest.approx(0.125) and stat == 1
    # 30 gains, 10 losses (>= 25 discordant): chi2 = (|30 - 10| - 1)^2 / 40 = 9.025
    stat, p, exact = D.mcnemar(30, 10)
    assert not exact and stat == pytest.approx(9.025) and p == pytest.approx(st.chi2.sf(9.025, 1))
    for g, l in ((3, 9), (12, 14), (40, 41)):
        ex = g + l < 25
        ref = sm_mcnemar(np.array([[5, l], [g, 7]]), exact=ex, correction=True)
        assert D.mcnemar(g, l)[1] == pytest.approx(min(1.0, ref.pvalue))
    assert D.mcnemar(0, 0) == (0.0, 1.0, True)


def test_refuses_task_named_composite(samples_from):
    with pytest.raises(ValueError, match="composite"):
        D.decomposition(samples_from({"reference": {"composite": "10"}, "q": {"composite": "11"}}))


def test_decomposition_correlations(study):
    samples, fidelity, quants = study
    out = D.decomposition_correlations(samples, fidelity, quants, "wiki", 256, metrics=["kld_mean"])
    assert len(out) == 3 * 3 * 2  # tasks (piqa, sciq, composite) x targets x scopes
    assert list(out["task"].unique()) == ["piqa", "sciq", "composite"]
    cohort = C.cohort_table(samples, fidelity, quants, "wiki", 256)
    dec = D.decomposition(samples).query("task == 'composite'").set_index("model").loc[cohort["quant_id"]]
    row = out.query("task == 'composite' and target == 'vol' and scope == 'full'").iloc[0]
    assert row["rho"] == pytest.approx(st.spearmanr(cohort["kld_mean"], dec["vol_rate"]).statistic)
    zone = C.zone_mask(cohort).to_numpy()
    zrow = out.query("task == 'composite' and target == 'delta' and scope == 'zone'").iloc[0]
    assert zrow["n"] == zone.sum()
    assert zrow["rho"] == pytest.approx(st.spearmanr(cohort["kld_mean"][zone], dec["delta"][zone]).statistic)
    a = D.decomposition_correlations(samples, fidelity, quants, "wiki", 256, ["kld_mean"],
                                     rng=np.random.default_rng(1), n_resamples=200)
    b = D.decomposition_correlations(samples, fidelity, quants, "wiki", 256, ["kld_mean"],
                                     rng=np.random.default_rng(1), n_resamples=200)
    pd.testing.assert_frame_equal(a, b)
    assert a.to_csv() == b.to_csv()
