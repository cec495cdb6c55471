"""analysis.cohort: composite scores, degradation, fidelity tables, zone rules."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from analysis import cohort as C
from analysis.contracts import FIDELITY, QUANTS, SAMPLES, validate

SPEC = {  # piqa 4 items, sciq 8 items
    "reference": {"piqa": "1100", "sciq": "11111100"},
    "qa": {"piqa": "1000", "sciq": "11111111"},
    "qb": {"piqa": "1100", "sciq": "11110000"},
}


def test_composite_scores_worked_example(samples_from):
    s = samples_from(SPEC)
    validate(s, SAMPLES)
    got = C.composite_scores(s).set_index("model")
    # equal task weights: ref (2/4 + 6/8)/2 = 0.625; qa (1/4 + 8/8)/2 = 0.625; qb (2/4 + 4/8)/2 = 0.5
    assert got["score"].to_dict() == pytest.approx({"qa": 0.625, "qb": 0.5, "reference": 0.625})
    # qb: 100 * (0.625 - 0.5) = 12.5 points; 0.125 / 0.625 = 0.2 relative; qa: no degradation
    assert got.loc["qb", "deg_pts"] == pytest.approx(12.5) and got.loc["qb", "deg_rel"] == pytest.approx(0.2)
    assert got.loc["qa", "deg_rel"] == 0 and got.loc["reference", "deg_pts"] == 0
    assert list(got.index) == ["qa", "qb", "reference"]


def test_composite_weights(samples_from):
    s = samples_from(SPEC)
    # items weighting pools items: ref 8/12, qa 9/12 = 0.75, qb 6/12 = 0.5
    items = C.composite_scores(s, "items").set_index("model")["score"]
    assert items.to_dict() == pytest.approx({"qa": 0.75, "qb": 0.5, "reference": 8 / 12})
    # piqa 3 : sciq 1 -> ref 0.75 * 0.5 + 0.25 * 0.75 = 0.5625
    w = C.composite_scores(s, {"piqa": 3, "sciq": 1}).set_index("model")["score"]
    assert w["reference"] == pytest.approx(0.5625)
    with pytest.raises(ValueError, match="lack task"):
        C.composite_scores(s, {"piqa": 1})
    with pytest.raises(ValueError, match="weights must be"):
        C.composite_scores(s, "tokens")


def test_task_scores_worked_example(samples_from):
    t = C.task_scores(samples_from(SPEC)).set_index(["model", "task"])
    # qb on sciq: "11110000" -> 4 of 8
    assert tuple(t.loc[("qb", "sciq"), ["n", "n_correct", "accuracy"]]) == (8, 4, 0.5)
    assert len(t) == 6


def test_refuses_mismatched_items(samples_from):
    s = samples_from(SPEC)
    bad = s.copy()
    bad.loc[(bad["model"] == "qa") & (bad["item_id"] == "piqa-0"), "item_hash"] = "other"
    with pytest.raises(ValueError, match="item_hash"):
        C.composite_scores(bad)
    with pytest.raises(ValueError, match="lacks 1 item"):
        C.composite_scores(s.drop(index=s.index[(s["model"] == "qb")][0]))
    extra = pd.concat([s, s[s["model"] == "qa"].head(1).assign(item_id="new", item_hash="hn")])
    with pytest.raises(ValueError, match="not in the reference"):
        C.composite_scores(extra)
    with pytest.raises(ValueError, match="mixes studies"):
        C.composite_scores(pd.concat([s, s.assign(study="other")]))
    with pytest.raises(ValueError, match="no 'reference'"):
        C.composite_scores(s[s["model"] != "reference"])


def test_zone_rule_boundary_is_inclusive():
    # ref 0.5, quant 0.49: relative degradation 0.01 / 0.5 = 2% exactly (float gives 0.0200000000000000018)
    deg_pts, deg_rel = C.degradation(np.array([0.49, 0.4899]), 0.5)
    assert list(C.zone_rule(deg_rel, deg_pts, None, None, "relative", 0.02)) == [True, False]
    # 100 * (0.5 - 0.49) = 1 point exactly on the threshold
    assert list(C.zone_rule(deg_rel, deg_pts, None, None, "absolute", 1.0)) == [True, False]


def test_zone_rule_quantile_and_bpw():
    # metric 1..5 plus NaN: the 50% quantile of the finite values is 3 -> 1, 2, 3 in the zone, NaN never
    metric = np.array([1.0, 2, 3, 4, 5, np.nan])
    z = C.zone_rule(None, None, metric, None, "kld_quantile", 0.5)
    assert list(z) == [True, True, True, False, False, False]
    # bpw >= 4.5
    bpw = np.array([8, 4.5, 4.0, 2])
    assert list(C.zone_rule(None, None, None, bpw, "bpw", 4.5)) == [True, True, False, False]
    with pytest.raises(ValueError, match="unknown zone definition"):
        C.zone_rule(None, None, None, None, "median", 1)


values = hst.lists(hst.floats(-1, 1, allow_nan=False), min_size=1, max_size=30)


@settings(max_examples=60, deadline=None)
@given(values, hst.floats(0, 1), hst.floats(0, 1))
def test_larger_threshold_never_shrinks_zone(v, t1, t2):
    lo, hi = sorted((t1, t2))
    v = np.array(v)
    for definition in ("relative", "absolute", "kld_quantile"):
        small = C.zone_rule(v, v, v, v, definition, lo)
        large = C.zone_rule(v, v, v, v, definition, hi)
        assert not (small & ~large).any(), definition
    # bpw: a lower bits-per-weight floor admits more quants
    assert not (C.zone_rule(v, v, v, v, "bpw", hi) & ~C.zone_rule(v, v, v, v, "bpw", lo)).any()


def test_describe_and_floor():
    assert C.describe_zone() == "relative composite degradation <= 2%"
    assert C.describe_zone("absolute", 1.5) == "composite degradation <= 1.5 percentage points"
    # 0.6 * (1 - 0.02) = 0.588; 0.6 - 1 / 100 = 0.59
    assert C.zone_floor(0.6) == pytest.approx(0.588)
    assert C.zone_floor(0.6, "absolute", 1) == pytest.approx(0.59)
    assert np.isnan(C.zone_floor(0.6, "bpw", 4))


def test_cohort_table_joins_contract_frames(study):
    samples, fidelity, quants = study
    validate(samples, SAMPLES), validate(fidelity, FIDELITY), validate(quants, QUANTS)
    c = C.cohort_table(samples, fidelity, quants, "wiki", 256)
    assert list(c.columns) == [*C.COHORT_COLUMNS, "kld_mean", "kld_p99", "top1_agreement"]
    assert C.metric_columns(c) == ["kld_mean", "kld_p99", "top1_agreement"]
    # the failed q13 is left out
    assert list(c["quant_id"]) == sorted(quants.loc[quants["status"] == "ok", "quant_id"])
    comp = C.composite_scores(samples).set_index("model")
    assert c["score"].to_numpy() == pytest.approx(comp.loc[c["quant_id"], "score"].to_numpy())
    assert (c["ref_score"] == comp.loc["reference", "score"]).all()
    wide = C.fidelity_wide(fidelity, "wiki", 256)
    assert c["kld_mean"].to_numpy() == pytest.approx(wide.loc[c["quant_id"], "kld_mean"].to_numpy())
    assert C.zone_mask(c).dtype == bool
    assert len(C.variants(fidelity)) == 2 * 2 * 3
    assert [k for k, _ in C.cohorts(samples, fidelity, quants)] == [("c4", 256), ("c4", 512), ("wiki", 256),
                                                                    ("wiki", 512)]


def test_cohort_refuses_missing_samples_and_token_mismatch(study):
    samples, fidelity, quants = study
    with pytest.raises(ValueError, match="no samples"):
        C.cohort_table(samples[samples["model"] != "q03"], fidelity, quants, "wiki", 256)
    bad = fidelity.copy()
    bad.loc[bad.index[0], "tokens_hash"] = "different"
    with pytest.raises(ValueError, match="tokens_hash"):
        C.fidelity_wide(bad, bad.loc[bad.index[0], "corpus"], bad.loc[bad.index[0], "ctx"])
    with pytest.raises(ValueError, match="no fidelity rows"):
        C.fidelity_wide(fidelity, "wiki", 4096)
