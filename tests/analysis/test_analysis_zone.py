"""analysis.zone: full vs zone, sweeps, robustness, hold-out zone boundaries, headline numbers."""

import json
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st
from statsmodels.stats.multitest import multipletests

from analysis import cohort as C
from analysis import stats as S
from analysis import zone as Z
from analysis.contracts import STATS_KEYS

THRESHOLDS = [0.005, 0.01, 0.02, 0.05, 0.1]


def _exact_scores(samples):
    """{model: exact composite (mean of task accuracies)} computed here from the counts."""
    out = {}
    for model, g in samples.groupby("model"):
        per = g.groupby("task")["correct"].agg(["sum", "size"])
        out[model] = sum(Fraction(int(k), int(n)) for k, n in per.itertuples(index=False)) / len(per)
    return out


def test_full_vs_zone_against_independent_exact_scores(study):
    samples, fidelity, quants = study
    c = C.cohort_table(samples, fidelity, quants, "wiki", 256)
    exact = _exact_scores(samples)
    ref = exact["reference"]
    y = np.array([float(exact[q]) for q in c["quant_id"]])
    z = np.array([(ref - exact[q]) / ref <= Fraction(1, 50) for q in c["quant_id"]])
    out = Z.full_vs_zone(c).set_index("scope")
    assert abs(out.loc["full", "rho"] - st.spearmanr(c["kld_mean"], y).statistic) < 1e-12
    want = st.spearmanr(c["kld_mean"][z], y[z])
    assert abs(out.loc["zone", "rho"] - want.statistic) < 1e-12 and abs(out.loc["zone", "p"] - want.pvalue) < 1e-12
    assert out.loc["zone", "n"] == z.sum() < out.loc["full", "n"] == len(c)
    assert out["ci_lo"].isna().all()  # no generator, no bootstrap


def test_sweep_reports_distinct_zones(study):
    samples, fidelity, quants = study
    thresholds = [0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 0.6]
    sw = Z.sweep(samples, fidelity, quants, thresholds, metrics=["kld_mean"])
    g = sw.query("corpus == 'wiki' and ctx == 256").set_index("threshold")
    c = C.cohort_table(samples, fidelity, quants, "wiki", 256)
    for t in thresholds:
        members = c.loc[C.zone_mask(c, "relative", t).to_numpy(), "quant_id"]
        assert g.loc[t, "zone_id"] == Z.zone_id(members) and g.loc[t, "n_members"] == len(members)
    # same_as_threshold: the smallest threshold with the same members
    for t in thresholds:
        first = min(u for u in thresholds if g.loc[u, "zone_id"] == g.loc[t, "zone_id"])
        assert g.loc[t, "same_as_threshold"] == first
    d = Z.distinct_zones(sw).query("corpus == 'wiki' and ctx == 256")
    assert len(d) == g["zone_id"].nunique() and d["n_thresholds"].sum() == len(thresholds)
    assert list(d["threshold_min"]) == sorted(d["threshold_min"])
    assert Z.zone_id(["b", "a"]) == Z.zone_id(["a", "b"]) != Z.zone_id(["a"])


def test_sweep_is_tidy_and_zone_grows_with_threshold(study):
    samples, fidelity, quants = study
    sw = Z.sweep(samples, fidelity, quants, THRESHOLDS)
    assert len(sw) == 2 * 2 * 3 * len(THRESHOLDS)
    assert set(S.CORR_COLUMNS) <= set(sw.columns)
    for _, g in sw.groupby(["corpus", "ctx", "metric"]):
        assert list(g["threshold"]) == THRESHOLDS
        assert (np.diff(g["n"]) >= 0).all()
    c = C.cohort_table(samples, fidelity, quants, "c4", 512)
    row = sw.query("corpus == 'c4' and ctx == 512 and metric == 'kld_p99' and threshold == 0.02").iloc[0]
    assert row["n"] == C.zone_mask(c).sum()
    q = Z.sweep(samples, fidelity, quants, [0.25, 0.5, 1.0], definition="kld_quantile", metrics=["kld_mean"])
    assert set(q["metric"]) == {"kld_mean"} and (q.query("threshold == 1.0")["n"] == len(c)).all()


def test_robustness_table_holm_and_power(study):
    samples, fidelity, quants = study
    rt = Z.robustness_table(samples, fidelity, quants, margin=0.5)
    assert len(rt) == 12
    assert rt["p_holm_full"].to_numpy() == pytest.approx(multipletests(rt["p_full"], method="holm")[1])
    ok = rt["p_zone"].notna()
    assert rt.loc[ok, "p_holm_zone"].to_numpy() == pytest.approx(multipletests(rt.loc[ok, "p_zone"],
                                                                               method="holm")[1])
    r = rt.iloc[0]
    assert r["mdr_zone"] == pytest.approx(S.min_detectable_rho(int(r["n_zone"])))
    assert r["tost_p_zone"] == pytest.approx(S.tost_rho(r["rho_zone"], int(r["n_zone"]), 0.5)["p"])


def test_random_tables_same_seed_same_bytes(study):
    samples, fidelity, quants = study

    def run(seed):
        rng = np.random.default_rng(seed)
        return (Z.sweep(samples, fidelity, quants, [0.02, 0.05], metrics=["kld_mean"], rng=rng,
                        n_resamples=200)
                .to_csv() + Z.robustness_table(samples, fidelity, quants, rng=rng, n_resamples=200).to_csv())

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_holdout_halves_disjoint_covering_stratified_deterministic(study):
    samples = study[0]
    a = Z.holdout_splits(samples, np.random.default_rng(11))
    b = Z.holdout_splits(samples, np.random.default_rng(11))
    c = Z.holdout_splits(samples, np.random.default_rng(12))
    items = samples.loc[samples["model"] == "reference", ["task", "item_id"]].sort_values(["task", "item_id"])
    # covering and disjoint: every reference item appears exactly once, in exactly one half
    assert a[["task", "item_id"]].reset_index(drop=True).equals(items.reset_index(drop=True))
    assert set(a["half"]) == {"A", "B"} and not a.duplicated(["task", "item_id"]).any()
    # stratified: 150 items per task -> 75 in A in every task
    assert a.query("half == 'A'").groupby("task").size().to_dict() == {"piqa": 75, "sciq": 75}
    assert a.equals(b) and not a["half"].equals(c["half"])
    shuffled = samples.sample(frac=1, random_state=0)  # row order of the input does not matter
    assert Z.holdout_splits(shuffled, np.random.default_rng(11)).equals(a)


def test_holdout_split_odd_counts(samples_from):
    # 5 items: floor(5/2) = 2 in A, 3 in B; 1 item: 0 in A
    s = samples_from({"reference": {"x": "10101", "y": "1"}, "q": {"x": "11111", "y": "0"}})
    h = Z.holdout_splits(s, np.random.default_rng(0))
    assert h.groupby(["task", "half"]).size().to_dict() == {("x", "A"): 2, ("x", "B"): 3, ("y", "B"): 1}


def test_holdout_first_split_recomputed_by_hand(study):
    samples, fidelity, quants = study
    table = Z.holdout(samples, fidelity, quants, "wiki", 256, np.random.default_rng(9), n_splits=5)
    split = Z.holdout_splits(samples, np.random.default_rng(9))  # the same first split
    halves = samples.merge(split[["task", "item_id", "half"]], on=["task", "item_id"])
    comp_a = C.composite_scores(halves[halves["half"] == "A"]).set_index("model")
    comp_b = C.composite_scores(halves[halves["half"] == "B"]).set_index("model")
    c = C.cohort_table(samples, fidelity, quants, "wiki", 256).set_index("quant_id")
    exact_a = _exact_scores(halves[halves["half"] == "A"])
    zone_a = pd.Series([(exact_a["reference"] - exact_a[q]) / exact_a["reference"] <= Fraction(1, 50)
                        for q in c.index], index=c.index)
    ref = st.spearmanr(c.loc[zone_a, "kld_mean"], comp_b.loc[c.index[zone_a], "score"])
    first = table.iloc[0]
    assert first["n_heldout"] == zone_a.sum()
    assert (first["rho_heldout"], first["p_heldout"]) == pytest.approx((ref.statistic, ref.pvalue))
    full = st.spearmanr(c["kld_mean"], comp_b.loc[c.index, "score"]).statistic
    assert first["rho_full"] == pytest.approx(full)
    again = Z.holdout(samples, fidelity, quants, "wiki", 256, np.random.default_rng(9), n_splits=5)
    assert table.to_csv() == again.to_csv()
    other = Z.holdout(samples, fidelity, quants, "wiki", 256, np.random.default_rng(10), n_splits=5)
    assert table.to_csv() != other.to_csv()


def test_holdout_summary(study):
    samples, fidelity, quants = study
    table = Z.holdout(samples, fidelity, quants, "wiki", 256, np.random.default_rng(3), n_splits=40)
    summ = Z.holdout_summary(table).set_index("scope")
    rho = table["rho_heldout"].dropna()
    assert summ.loc["heldout", "rho_median"] == pytest.approx(np.median(rho))
    assert summ.loc["heldout", "n_splits_valid"] == len(rho)
    assert summ.loc["full", "frac_significant"] == pytest.approx((table["p_full"] < 0.05).mean())
    assert summ.loc["heldout", "rho_lo"] <= summ.loc["heldout", "rho_median"] <= summ.loc["heldout", "rho_hi"]


def test_headline_stats_has_stats_keys_and_is_json(study):
    samples, fidelity, quants = study
    h = Z.headline_stats(samples, fidelity, quants, "wiki", 256)
    assert set(STATS_KEYS) - {"label", "provenance"} <= set(h)
    json.dumps(h, allow_nan=False)
    c = C.cohort_table(samples, fidelity, quants, "wiki", 256)
    fz = Z.full_vs_zone(c).set_index("scope")
    assert (h["rho_full"], h["rho_zone"], h["n_zone"]) == pytest.approx(
        (fz.loc["full", "rho"], fz.loc["zone", "rho"], fz.loc["zone", "n"]))
    assert h["n_quants"] == 13 and h["study"] == "toy"
    assert h["zone_definition"] == "relative composite degradation <= 2%"
    tiny = Z.headline_stats(samples, fidelity, quants, "wiki", 256, threshold=-0.5)  # empty zone
    assert tiny["n_zone"] == 0 and tiny["rho_zone"] is None
    json.dumps(tiny, allow_nan=False)
    assert isinstance(pd.Series(h).to_json(), str)


def test_holdout_variants_matches_holdout_on_the_same_splits(study):
    """Every variant is scored on the same splits: with the same seed, a variant's row equals the
    median / interval of `holdout` for that variant alone (which draws the same split sequence)."""
    samples, fidelity, quants = study
    hv = Z.holdout_variants(samples, fidelity, quants, np.random.default_rng(5), n_splits=40)
    assert len(hv) == len(fidelity[["corpus", "ctx", "metric"]].drop_duplicates())
    for corpus, ctx, metric in (("wiki", 256, "kld_mean"), ("c4", 512, "top1_agreement")):
        one = Z.holdout(samples, fidelity, quants, corpus, ctx, np.random.default_rng(5), metric, n_splits=40)
        row = hv[(hv["corpus"] == corpus) & (hv["ctx"] == ctx) & (hv["metric"] == metric)].iloc[0]
        rho = one["rho_heldout"].to_numpy(float)
        ok = np.isfinite(rho)
        assert row["n_splits_valid"] == ok.sum()
        assert row["rho_heldout"] == np.median(rho[ok])
        assert (row["rho_heldout_lo"], row["rho_heldout_hi"]) == tuple(np.quantile(rho[ok], [0.025, 0.975]))
        assert row["frac_significant_heldout"] == (one["p_heldout"].to_numpy(float)[ok] < 0.05).mean()
    rob = Z.robustness_table(samples, fidelity, quants, holdout_rng=np.random.default_rng(5), holdout_splits=40)
    key = ["corpus", "ctx", "metric"]
    pd.testing.assert_frame_equal(rob[key + ["rho_heldout"]].reset_index(drop=True),
                                  hv.sort_values(key)[key + ["rho_heldout"]].reset_index(drop=True))
    with pytest.raises(ValueError, match="score-based"):
        Z.holdout_variants(samples, fidelity, quants, np.random.default_rng(0), 2, definition="bpw", threshold=5)
