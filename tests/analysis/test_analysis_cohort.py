"""analysis.cohort: composite scores, degradation, fidelity tables, zone rules."""

from fractions import Fraction as Fr

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
    # equal task weights: ref (2/4 + 6/8)/2 = 5/8; qa (1/4 + 8/8)/2 = 5/8 (an exact tie); qb (2/4 + 4/8)/2 = 1/2
    assert C.exact_values(got.reset_index()) == [Fr(5, 8), Fr(1, 2), Fr(5, 8)]
    assert got["score"].to_dict() == {"qa": 0.625, "qb": 0.5, "reference": 0.625}
    # qb: 100 * (5/8 - 1/2) = 12.5 points; (1/8) / (5/8) = 1/5 relative; qa: no degradation
    assert C.exact_values(got.reset_index(), "deg_rel") == [0, Fr(1, 5), 0]
    assert got.loc["qb", "deg_pts"] == 12.5 and got.loc["qb", "deg_rel"] == 0.2
    assert got.loc["qa", "deg_rel"] == 0 and got.loc["reference", "deg_pts"] == 0
    assert list(got.index) == ["qa", "qb", "reference"]


def test_composite_weights(samples_from):
    s = samples_from(SPEC)
    # items weighting pools items: ref 8/12, qa 9/12, qb 6/12
    items = C.composite_scores(s, "items")
    assert C.exact_values(items) == [Fr(3, 4), Fr(1, 2), Fr(2, 3)]
    assert items["score"].tolist() == [0.75, 0.5, 2 / 3]
    # piqa 3 : sciq 1 -> ref 3/4 * 1/2 + 1/4 * 3/4 = 9/16; the same weights as decimal strings or floats
    for weights in ({"piqa": 3, "sciq": 1}, {"piqa": "0.75", "sciq": "0.25"}, {"piqa": 0.75, "sciq": 0.25}):
        w = C.composite_scores(s, weights)
        assert C.exact_values(w)[2] == Fr(9, 16)
    # 0.1 : 0.2 is read as 1/10 : 2/10 = 1/3 : 2/3 exactly (not the binary floats)
    assert C.exact_task_weights(("a", "b"), np.array([1, 1]), {"a": 0.1, "b": 0.2}) == (Fr(1, 3), Fr(2, 3))
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


def test_zone_rule_boundary_is_inclusive_and_exact():
    # ref 1/2, quants 49/100 and 4899/10000: relative degradation (1/100)/(1/2) = 1/50 = 2% exactly, and
    # 101/5000 = 2.02%; in floats 0.5 - 0.49 = 0.010000000000000009, so a float rule needs a tolerance
    deg_pts, deg_rel = C.degradation([Fr(49, 100), Fr(4899, 10000)], Fr(1, 2))
    assert list(deg_rel) == [Fr(1, 50), Fr(101, 5000)] and list(deg_pts) == [1, Fr(101, 100)]
    assert list(C.zone_rule(deg_rel, deg_pts, None, None, "relative", 0.02)) == [True, False]
    assert list(C.zone_rule(deg_rel, deg_pts, None, None, "absolute", 1.0)) == [True, False]
    # the same in integers over the denominator 10000: ref 5000, quants 4900 and 4899
    num = np.array([4900, 4899, 5100])
    assert list(C.zone_rule_int(num, 5000, 10000, None, None, "relative", 0.02)) == [True, False, True]
    # absolute: 100 * (5000 - 4900) / 10000 = 1 point
    assert list(C.zone_rule_int(num, 5000, 10000, None, None, "absolute", "1")) == [True, False, True]
    # a reference scoring 0 has no relative degradation: empty zone
    assert not C.zone_rule_int(np.array([0, 0]), 0, 10, None, None, "relative", 0.02).any()


def test_cohort_zone_on_exact_boundary(samples_from):
    # one task of 100 items: reference 50 right, qa 49 (2% relative exactly), qb 48 (4%)
    spec = {"reference": {"t": "1" * 50 + "0" * 50}, "qa": {"t": "1" * 49 + "0" * 51},
            "qb": {"t": "1" * 48 + "0" * 52}}
    c = _cohort(samples_from(spec), {"qa": 0.1, "qb": 0.2})
    assert list(C.zone_mask(c, "relative", 0.02)) == [True, False]
    assert list(C.zone_mask(c, "relative", 0.04)) == [True, True]
    assert list(C.zone_mask(c, "absolute", 1)) == [True, False]


def _cohort(samples, kld: dict, study: str = "toy"):
    """cohort_table of `samples` with one fidelity metric kld_mean = kld[quant] (wiki, ctx 512)."""
    fid = pd.DataFrame([dict(study=study, quant_id=q, corpus="wiki", ctx=512, metric="kld_mean", value=v,
                             n_tokens=10, tokens_hash="t") for q, v in kld.items()])
    man = pd.DataFrame([dict(study=study, quant_id=q, method="gguf", recipe="{}", recipe_hash="r",
                             requested_type="x", tensor_types="{}", bpw=4.0, bytes=1, sha256="s",
                             tool_versions="{}", wall_s=1.0, status="ok", reason="") for q in kld])
    return C.cohort_table(samples, fid, man, "wiki", 512)


# Exact ties through different task mixes: tasks a (3 items), b (7), c (10), equal task weights.
#   reference a 3/3, b 7/7, c 7/10 -> (1 + 1 + 7/10)/3 = 9/10
#   q1 a 0/3, b 6/7, c 10/10 -> (0 + 6/7 + 1)/3 = 13/21
#   q2 a 3/3, b 6/7, c 0/10  -> (1 + 6/7 + 0)/3 = 13/21   (the same score by another mix)
#   q3 a 2/3, b 5/7, c 7/10  -> (140 + 150 + 147)/630 = 437/630
#   q4 a 1/3, b 3/7, c 5/10  -> (70 + 90 + 105)/630 = 265/630
# The float path acc @ (ones / 3) gives q1 0.6190476190476191 and q2 0.619047619047619.
TIES = {"reference": {"a": "111", "b": "1111111", "c": "1111111000"},
        "q1": {"a": "000", "b": "1111110", "c": "1111111111"},
        "q2": {"a": "111", "b": "1111110", "c": "0000000000"},
        "q3": {"a": "110", "b": "1111100", "c": "1111111000"},
        "q4": {"a": "100", "b": "1110000", "c": "1111100000"}}
TIES_KLD = {"q1": 0.1, "q2": 0.3, "q3": 0.2, "q4": 0.4}


def test_exact_ties_through_different_task_mixes(samples_from):
    from scipy import stats as st

    c = _cohort(samples_from(TIES), TIES_KLD)
    assert C.exact_values(c) == [Fr(13, 21), Fr(13, 21), Fr(437, 630), Fr(265, 630)]
    assert C.exact_values(c, "ref_score") == [Fr(9, 10)] * 4
    assert c["score"].iloc[0] == c["score"].iloc[1]  # bit-identical floats
    # score ranks (ascending): q4 1, q1 2.5, q2 2.5, q3 4
    assert list(st.rankdata(c["score"])) == [2.5, 2.5, 4, 1]
    # KLD ranks q1 1, q2 3, q3 2, q4 4; centred x (-1.5, .5, -.5, 1.5), y (0, 0, 1.5, -1.5):
    # sum xy = -0.75 - 2.25 = -3, sum x^2 = 5, sum y^2 = 4.5 -> rho = -3 / sqrt(22.5) = -sqrt(2/5)
    from analysis import zone as Z
    fz = Z.full_vs_zone(c, threshold=1.0).set_index("scope")
    assert abs(fz.loc["full", "rho"] + (2 / 5) ** 0.5) < 1e-12
    # relative degradation of q1 and q2: 1 - (13/21)/(9/10) = 1 - 130/189 = 59/189 = 0.312169...; of q3
    # 1 - 437/567 = 130/567 = 0.2293: a 25% zone holds q3 only; thresholds 0.3121 and 0.3122 bracket
    # 59/189, and the tied quants enter together
    assert list(C.zone_mask(c, "relative", 0.25)) == [False, False, True, False]
    assert list(C.zone_mask(c, "relative", 0.3121)) == [False, False, True, False]
    assert list(C.zone_mask(c, "relative", 0.3122)) == [True, True, True, False]


def test_exact_ties_with_decimal_weights(samples_from):
    # weights a 0.1, b 0.2, c 0.7 (exactly 1/10, 2/10, 7/10):
    #   q1 0 + 2/10 * 6/7 + 7/10 = 12/70 + 49/70 = 61/70
    #   q5 a 3/3, b 0/7, c 9/10 -> 1/10 + 0 + 63/100 = 73/100; q6 a 0/3, b 7/7, c 3/10 ... see below
    # q1's score 61/70 is reached again by q7: a 0/3, b 6/7, c 10/10 (same counts as q1, listed twice
    # under another name), and q8: a 3/3, b 1/7, c 9/10 -> 1/10 + 2/70 + 63/100 = (70 + 20 + 441)/700
    # = 531/700 (not a tie); the ties here are between q1 and q7.
    spec = dict(TIES)
    spec["q7"] = dict(TIES["q1"])
    spec["q8"] = {"a": "111", "b": "1000000", "c": "1111111110"}
    w = {"a": 0.1, "b": 0.2, "c": 0.7}
    comp = C.composite_scores(samples_from(spec), w).set_index("model")
    exact = dict(zip(comp.index, C.exact_values(comp.reset_index())))
    assert exact["q1"] == exact["q7"] == Fr(61, 70) and exact["q8"] == Fr(531, 700)
    # reference: 1/10 + 2/10 + 7/10 * 7/10 = 3/10 + 49/100 = 79/100
    assert exact["reference"] == Fr(79, 100)
    assert comp.loc["q1", "score"] == comp.loc["q7", "score"] == float(Fr(61, 70))


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


def test_identical_quants_joins_same_artifacts_and_exact_behavioural_twins(make_study):
    """A twin with another sha256 but every fidelity value and per-item answer and margin equal is one
    model; two ids of one artifact (same sha256) are one model whatever their tables; a near twin whose
    single margin differs by one ulp is not. Expected groups written by hand."""
    samples, fidelity, quants = make_study()
    twin = lambda f, col, src, dst: f[f[col] == src].assign(**{col: dst})  # noqa: E731
    samples = pd.concat([samples, twin(samples, "model", "q03", "q03-twin"), twin(samples, "model", "q04", "q04-near")],
                        ignore_index=True)
    near = samples.index[samples["model"] == "q04-near"][7]
    samples.loc[near, "margin"] = np.nextafter(samples.loc[near, "margin"], np.inf)
    fidelity = pd.concat([fidelity, twin(fidelity, "quant_id", "q03", "q03-twin"),
                          twin(fidelity, "quant_id", "q04", "q04-near")], ignore_index=True)
    quants = pd.concat([quants, twin(quants, "quant_id", "q03", "q03-twin").assign(sha256="sha-twin"),
                        twin(quants, "quant_id", "q04", "q04-near").assign(sha256="sha-near")], ignore_index=True)
    quants.loc[quants["quant_id"] == "q06", "sha256"] = "sha5"  # q05's artifact under a second id
    assert C.identical_quants(quants, fidelity, samples) == [("q03", "q03-twin"), ("q05", "q06")]
    mask = C.distinct_quants(["q03", "q03-twin", "q04", "q05", "q06"], [("q03", "q03-twin"), ("q05", "q06")])
    assert mask.tolist() == [True, False, True, True, False]
    # a failed quant is not in the cohort, so never in a group, even with a shared sha256
    quants.loc[quants["quant_id"] == "q13", "sha256"] = "sha0"
    assert C.identical_quants(quants, fidelity, samples) == [("q03", "q03-twin"), ("q05", "q06")]


def test_headline_counts_a_duplicated_model_once_in_the_distinct_keys(make_study):
    """Metamorphic: adding an exact twin of a quant moves rho_full, but the *_distinct keys of the
    augmented study equal the plain keys of the original one."""
    from analysis import zone as Z
    samples, fidelity, quants = make_study()
    base = Z.headline_stats(samples, fidelity, quants, "wiki", 256)
    assert base["identical_quants"] == [] and base["rho_full_distinct"] == base["rho_full"]
    zone_q = "q00"  # the lowest-noise quant: in the zone
    samples2 = pd.concat([samples, samples[samples["model"] == zone_q].assign(model="q00-copy")], ignore_index=True)
    fidelity2 = pd.concat([fidelity, fidelity[fidelity["quant_id"] == zone_q].assign(quant_id="q00-copy")],
                          ignore_index=True)
    quants2 = pd.concat([quants, quants[quants["quant_id"] == zone_q].assign(quant_id="q00-copy")], ignore_index=True)
    h = Z.headline_stats(samples2, fidelity2, quants2, "wiki", 256)
    assert h["identical_quants"] == ["q00 = q00-copy"]
    assert h["n_zone"] == base["n_zone"] + 1 and h["n_zone_distinct"] == base["n_zone"]
    assert h["n_distinct"] == base["n_quants"]
    assert (h["rho_full_distinct"], h["p_full_distinct"]) == (base["rho_full"], base["p_full"])
    assert (h["rho_zone_distinct"], h["p_zone_distinct"]) == (base["rho_zone"], base["p_zone"])
    assert h["rho_full"] != base["rho_full"]
