"""analysis.uncertainty: score SEs, item bootstrap, noise ceiling; stats.masked_spearman_rows."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from analysis import stats as S
from analysis import uncertainty as U
from analysis import zone as Z


def test_score_se_hand_computation(samples_from):
    # task a (4 items): ref 1100, q 1010 -> p_ref 1/2, p_q 1/2; task b (2 items): ref 11, q 10 -> 1, 1/2
    # equal weights 1/2: se_q^2 = 1/4 (1/4 / 4) + 1/4 (1/4 / 2) = 1/64 + 1/32 = 3/64
    # se_ref^2 = 1/4 (1/4 / 4) + 0 = 1/64
    # paired d: a: 0, -1, +1, 0 -> mean 0, E d^2 = 1/2, var 1/2; b: 0, -1 -> mean -1/2, E d^2 1/2, var 1/4
    # se_paired^2 = 1/4 (1/2 / 4) + 1/4 (1/4 / 2) = 1/32 + 1/32 = 1/16
    s = samples_from({"reference": {"a": "1100", "b": "11"}, "q": {"a": "1010", "b": "10"}})
    r = U.score_se(s).set_index("model")
    assert r.loc["q", "se"] == pytest.approx(math.sqrt(3 / 64), abs=1e-15)
    assert r.loc["reference", "se"] == pytest.approx(1 / 8, abs=1e-15)
    assert r.loc["q", "se_paired"] == pytest.approx(1 / 4, abs=1e-15)
    assert r.loc["q", "se_unpaired"] == pytest.approx(math.sqrt(3 / 64 + 1 / 64), abs=1e-15)
    assert r.loc["reference", "se_paired"] == 0 and r.loc["q", "delta"] == -0.25


def test_paired_se_is_smaller_when_answers_follow_the_reference(study):
    r = U.score_se(study[0]).set_index("model").drop("reference")
    assert (r["se_paired"] < r["se_unpaired"]).all()


def test_item_resample_counts_stratified_and_seeded():
    code = np.array([0, 0, 0, 1, 1, 2])
    a = U.item_resample_counts(code, np.random.default_rng(1), 50)
    assert a.shape == (50, 6)
    assert (a[:, :3].sum(axis=1) == 3).all() and (a[:, 3:5].sum(axis=1) == 2).all() and (a[:, 5] == 1).all()
    assert np.array_equal(a, U.item_resample_counts(code, np.random.default_rng(1), 50))
    assert not np.array_equal(a, U.item_resample_counts(code, np.random.default_rng(2), 50))


@pytest.mark.parametrize("seed", range(5))
def test_masked_spearman_rows_equals_scipy_on_subsets_with_ties(seed, pairing_p):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 5, 12).astype(float)
    y = rng.integers(0, 4, (20, 12))
    mask = rng.random((20, 12)) < 0.6
    rho, p = S.masked_spearman_rows(x, y, mask)
    for i in range(20):
        xs, ys = x[mask[i]], y[i, mask[i]]
        if len(xs) < 3 or np.ptp(xs) == 0 or np.ptp(ys) == 0:
            assert math.isnan(rho[i]) and math.isnan(p[i])
        else:
            ref = st.spearmanr(xs, ys)
            assert rho[i] == pytest.approx(ref.statistic, abs=1e-12)
            if len(xs) > S.EXACT_MAX_N:
                assert p[i] == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-12)
            else:  # small member sets: the exact pairing p (scipy's permutation test, every pairing)
                exact = pairing_p(xs, ys)
                assert p[i] == pytest.approx(exact, abs=1e-12)


def _zero_noise_study(n_items=20):
    """Reference right on items 0..n-2 of each task; q_same* copy it; q_bad* answer every item wrong."""
    ref = "1" * (n_items - 1) + "0"
    spec = {"reference": {"a": ref, "b": ref}}
    for i in range(3):
        spec[f"q_same{i}"] = {"a": ref, "b": ref}
        spec[f"q_bad{i}"] = {"a": "0" * n_items, "b": "0" * n_items}
    return spec


def _fid_quants(ids, kld):
    fid = pd.DataFrame([dict(study="toy", quant_id=q, corpus="wiki", ctx=512, metric="kld_mean", value=kld[q],
                             n_tokens=10, tokens_hash="t") for q in ids])
    man = pd.DataFrame([dict(study="toy", quant_id=q, method="gguf", recipe="{}", recipe_hash="r",
                             requested_type="x", tensor_types="{}", bpw=4.0, bytes=1, sha256="s",
                             tool_versions="{}", wall_s=1.0, status="ok", reason="") for q in ids])
    return fid, man


def test_zone_probability_is_0_or_1_without_item_noise(samples_from):
    spec = _zero_noise_study()
    s = samples_from(spec)
    ids = sorted(m for m in spec if m != "reference")
    fid, man = _fid_quants(ids, {q: 0.01 * (i + 1) for i, q in enumerate(ids)})
    boot = U.item_bootstrap(s, fid, man, "wiki", 512, np.random.default_rng(0), n_resamples=300)
    p = U.zone_probability(boot).set_index("quant_id")["p_in_zone"]
    # copies of the reference: degradation 0 in every resample; all-wrong quants: degradation 1
    assert p.to_dict() == {q: (1.0 if "same" in q else 0.0) for q in ids}
    assert boot.n_zone_obs == 3 and (boot.n_zone == 3).all()
    # in the zone the three copies tie on every resample: rho undefined (constant scores)
    assert np.isnan(boot.rho_zone).all()
    summ = U.item_bootstrap_summary(boot)
    assert summ["rho_zone_items_lo"] is None and summ["n_item_resamples"] == 300


def test_item_bootstrap_observed_values_and_seed(study):
    samples, fidelity, quants = study
    kw = dict(n_resamples=200)
    a = U.item_bootstrap(samples, fidelity, quants, "wiki", 256, np.random.default_rng(5), **kw)
    b = U.item_bootstrap(samples, fidelity, quants, "wiki", 256, np.random.default_rng(5), **kw)
    c = U.item_bootstrap(samples, fidelity, quants, "wiki", 256, np.random.default_rng(6), **kw)
    assert np.array_equal(a.rho_zone, b.rho_zone, equal_nan=True)
    assert not np.array_equal(a.rho_zone, c.rho_zone, equal_nan=True)
    h = Z.headline_stats(samples, fidelity, quants, "wiki", 256)
    assert a.n_zone_obs == h["n_zone"] and a.rho_zone_obs == pytest.approx(h["rho_zone"], abs=1e-12)
    assert a.rho_full_obs == pytest.approx(h["rho_full"], abs=1e-12)
    s = U.item_bootstrap_summary(a)
    assert s["rho_zone_items_lo"] <= s["rho_zone_items_median"] <= s["rho_zone_items_hi"]


def test_true_accuracies_models():
    acc = np.array([[0.5, 0.5], [0.9, 0.7], [0.6, 0.8]])  # composites 0.5, 0.8, 0.7
    metric = np.array([0.1, 0.3, 0.2])
    w = np.array([0.5, 0.5])
    opt = U.true_accuracies(acc, np.array([1.0, 1.0]), acc @ w, 1.0, metric, w, "optimistic")
    # lowest metric (row 0) gets the best observed row (0.9, 0.7), then row 2 the 0.7 one, row 1 the worst
    assert opt.tolist() == [[0.9, 0.7], [0.5, 0.5], [0.6, 0.8]]
    # conservative: an exact log-linear trend s = 1 - 0.1 log(m / 0.01) is recovered; truth = ref profile
    # (0.9, 0.8), composite 0.85, shifted by s_hat - 0.85
    m = np.array([0.01, 0.1, 1.0])
    s = 1 - 0.1 * np.log(m / 0.01)
    con = U.true_accuracies(None, np.array([0.9, 0.8]), s, 0.85, m, w, "conservative")
    assert np.allclose(con, np.clip(np.array([0.9, 0.8])[None] + (s - 0.85)[:, None], 0, 1), atol=1e-9)
    with pytest.raises(ValueError, match="truth"):
        U.true_accuracies(acc, acc[0], acc @ w, 1, metric, w, "median")


def _trend_study(samples_from, n_items, n_quants=12, seed=0):
    """Quants whose true accuracy falls strictly with KLD, 2 tasks, each item drawn once (Bernoulli)."""
    rng = np.random.default_rng(seed)
    kld = np.geomspace(0.001, 0.05, n_quants)
    truth = 0.8 - 0.02 * np.log(kld / 0.001)
    spec = {"reference": {t: "".join("1" if u < 0.8 else "0" for u in rng.random(n_items)) for t in "ab"}}
    ids = [f"q{i:02d}" for i in range(n_quants)]
    for q, p in zip(ids, truth):
        spec[q] = {t: "".join("1" if u < p else "0" for u in rng.random(n_items)) for t in "ab"}
    fid, man = _fid_quants(ids, dict(zip(ids, kld)))
    return samples_from(spec), fid, man


def test_noise_ceiling_power_approaches_one_with_many_items(samples_from):
    s, f, q = _trend_study(samples_from, 400)
    # at 20,000 items per task a perfect metric ranks the zone almost perfectly
    r = U.noise_ceiling(s, f, q, "wiki", 512, np.random.default_rng(1), threshold=0.2, n_items=20_000,
                        n_sims=300)
    assert r["power"] > 0.95 and r["rho_median"] < -0.9 and r["slope"] < 0


def test_noise_ceiling_one_item_per_task_is_at_most_alpha(samples_from):
    s, f, q = _trend_study(samples_from, 400)
    r = U.noise_ceiling(s, f, q, "wiki", 512, np.random.default_rng(2), threshold=0.2, n_items=1, n_sims=2000)
    # one item per task: scores 0, 1/2, 1, the zone is whoever ties the reference; power <= alpha + MC error
    assert r["power"] <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 2000)
    a = U.noise_ceiling(s, f, q, "wiki", 512, np.random.default_rng(3), truth="optimistic", n_items=30,
                        n_sims=100)
    b = U.noise_ceiling(s, f, q, "wiki", 512, np.random.default_rng(3), truth="optimistic", n_items=30,
                        n_sims=100)
    assert a == b


def test_noise_ceiling_takes_items_per_task(samples_from):
    """A mapping {task: n} (the powered profile's whole splits): the same n for every task is the scalar
    n, draw for draw; the reported n_items is the smallest; a task without a count is one line."""
    s, f, q = _trend_study(samples_from, 400)
    tasks = sorted(s["task"].unique())
    kw = dict(threshold=0.2, n_sims=600)
    a = U.noise_ceiling(s, f, q, "wiki", 512, np.random.default_rng(5), n_items=7, **kw)
    b = U.noise_ceiling(s, f, q, "wiki", 512, np.random.default_rng(5), n_items={t: 7 for t in tasks}, **kw)
    assert a == b
    c = U.noise_ceiling(s, f, q, "wiki", 512, np.random.default_rng(5),
                        n_items={t: (7 if i == 0 else 20_000) for i, t in enumerate(tasks)}, **kw)
    assert c["n_items"] == 7 and c["power"] > a["power"] + 0.07  # more items elsewhere lift it (MC sd of the difference ~0.024)
    with pytest.raises(ValueError, match=f"n_items names no count for task\\(s\\) {tasks[-1]}"):
        U.noise_ceiling(s, f, q, "wiki", 512, np.random.default_rng(5), n_items={t: 30 for t in tasks[:-1]}, **kw)


def test_items_for_power_reports_none_beyond_grid(samples_from):
    s, f, q = _trend_study(samples_from, 100)
    frame, need = U.items_for_power(s, f, q, "wiki", 512, np.random.default_rng(4), grid=(1, 2),
                                    threshold=0.2, n_sims=200)
    assert list(frame["n_items"]) == [1, 2] and need is None
    frame, need = U.items_for_power(s, f, q, "wiki", 512, np.random.default_rng(4), grid=(2, 20_000),
                                    threshold=0.2, n_sims=200)
    assert need == 20_000


def test_shared_coupling_counts_are_nested():
    # comonotone answers: a model with higher accuracy answers a superset, so counts are ordered
    p = np.array([[0.2, 0.9], [0.5, 0.1], [0.5, 0.95]])
    k = U.simulate_counts(p, np.array([50, 40]), np.random.default_rng(0), 200, "shared")
    assert (k[:, 0, 0] <= k[:, 1, 0]).all() and (k[:, 1, 0] == k[:, 2, 0]).all()
    assert (k[:, 1, 1] <= k[:, 0, 1]).all() and (k[:, 0, 1] <= k[:, 2, 1]).all()
    assert k[:, 0, 0].mean() == pytest.approx(10, abs=1.0)


def test_flip_rates_closed_form_by_hand():
    # p_ref 0.6, p_true 0.5, vol 0.2: d = (0.2 + 0.1) / 1.2 = 0.25, g = (0.2 - 0.1) / 0.8 = 0.125
    # check: accuracy 0.6 * 0.75 + 0.4 * 0.125 = 0.45 + 0.05 = 0.5; churn 0.6 * 0.25 + 0.4 * 0.125 = 0.2
    d, g, v = U.flip_rates(0.6, 0.5, 0.2)
    assert (float(d), float(g), float(v)) == pytest.approx((0.25, 0.125, 0.2), abs=1e-15)
    # too little churn for the shift: vol 0.05 raised to |0.6 - 0.5| = 0.1 -> d = 0.2 / 1.2 = 1/6, g = 0
    d, g, v = U.flip_rates(0.6, 0.5, 0.05)
    assert (float(d), float(g), float(v)) == pytest.approx((1 / 6, 0.0, 0.1), abs=1e-15)
    # a better quant: p_true 0.7, vol 0.02 -> 0.1, only gains: d = 0, g = (0.1 + 0.1) / 0.8 = 0.25
    d, g, v = U.flip_rates(0.6, 0.7, 0.02)
    assert (float(d), float(g), float(v)) == pytest.approx((0.0, 0.25, 0.1), abs=1e-15)
    # too much churn: at most min(0.6 + 0.5, 2 - 1.1) = 0.9 -> d = 1.0 / 1.2 = 5/6, g = 0.8 / 0.8 = 1
    d, g, v = U.flip_rates(0.6, 0.5, 1.0)
    assert (float(d), float(g), float(v)) == pytest.approx((5 / 6, 1.0, 0.9), abs=1e-15)
    # reference all wrong: no drops possible, g = p_true; all right: no gains, d = 1 - p_true
    d, g, _ = U.flip_rates(np.array([0.0, 1.0]), np.array([0.3, 0.7]), np.array([0.5, 0.5]))
    assert d.tolist() == pytest.approx([0.0, 0.3], abs=1e-15) and g.tolist() == pytest.approx([0.3, 0.0], abs=1e-15)


def test_flips_minimal_churn_only_drops():
    p_ref = np.array([0.8, 0.6])
    p_true = np.array([[0.7, 0.6], [0.5, 0.45], [0.8, 0.3]])
    vol = np.abs(p_ref[None] - p_true)  # the least churn that moves the accuracy that far
    k_ref, drops, gains = U.simulate_flips(p_ref, p_true, vol, np.array([40, 25]), np.random.default_rng(0), 500)
    assert k_ref.shape == (500, 2) and drops.shape == gains.shape == (500, 3, 2)
    assert (gains == 0).all() and (drops <= k_ref[:, None, :]).all()
    assert (drops[:, 0, 1] == 0).all() and (drops[:, 2, 0] == 0).all()  # p_true == p_ref: no flips at all
    assert drops[:, 1, 0].sum() > 0
    # through simulate_counts: quants never beat the reference of their simulation
    p = np.vstack([p_true, p_ref[None]])
    k = U.simulate_counts(p, np.array([40, 25]), np.random.default_rng(0), 500, "flips",
                          vol=np.vstack([vol, np.zeros((1, 2))]))
    assert np.array_equal(k[:, -1], k_ref) and (k[:, :-1] <= k[:, -1:]).all()
    assert np.array_equal(k[:, :-1], k_ref[:, None, :] - drops)  # same generator, same draws


def test_flips_mean_accuracy_and_churn():
    p_ref = np.array([0.6, 0.9])
    p_true = np.array([[0.5, 0.85], [0.65, 0.9]])
    vol = np.array([[0.2, 0.1], [0.15, 0.04]])
    n = np.array([30, 50])
    s = 20_000
    k_ref, drops, gains = U.simulate_flips(p_ref, p_true, vol, n, np.random.default_rng(7), s)
    acc = (k_ref[:, None, :] - drops + gains) / n
    churn = (drops + gains) / n
    for x, target in ((acc, p_true), (churn, vol), (k_ref / n, p_ref)):
        se = x.std(axis=0) / math.sqrt(s)
        assert (np.abs(x.mean(axis=0) - target) < 4 * se + 1e-12).all()


def test_flips_needs_vol_and_ties_copies_to_the_reference(samples_from):
    with pytest.raises(ValueError, match="vol"):
        U.simulate_counts(np.full((2, 1), 0.5), np.array([10]), np.random.default_rng(0), 5, "flips")
    # quants that copy the reference (observed churn 0), optimistic truth = the observed rows = the
    # reference's: every simulated quant scores exactly as the simulated reference, so all are in the
    # zone and tie (rho undefined), while fresh items (independent) separate them
    ref = "1101101110" * 3
    spec = {"reference": {"a": ref, "b": ref[::-1]}}
    spec.update({f"q{i}": {"a": ref, "b": ref[::-1]} for i in range(4)})
    ids = [f"q{i}" for i in range(4)]
    fid, man = _fid_quants(ids, {q: 0.01 * (i + 1) for i, q in enumerate(ids)})
    s = samples_from(spec)
    kw = dict(truth="optimistic", n_sims=200)
    r = U.noise_ceiling(s, fid, man, "wiki", 512, np.random.default_rng(0), coupling="flips", **kw)
    assert r["coupling"] == "flips" and r["n_valid"] == 0 and r["power"] == 0 and r["n_zone_median"] == 4
    r = U.noise_ceiling(s, fid, man, "wiki", 512, np.random.default_rng(0), coupling="independent", **kw)
    assert r["n_valid"] > 0


def _flip_study(samples_from, n_items=100, n_quants=12, seed=0):
    """Quants that answer like the reference except for per-item flips; drops rise with KLD."""
    rng = np.random.default_rng(seed)
    kld = np.geomspace(0.001, 0.05, n_quants)
    drop = np.linspace(0.01, 0.12, n_quants)
    ref = {t: rng.random(n_items) < 0.7 for t in "ab"}
    bits = lambda a: "".join("1" if v else "0" for v in a)
    spec = {"reference": {t: bits(r) for t, r in ref.items()}}
    ids = [f"q{i:02d}" for i in range(n_quants)]
    for q, d in zip(ids, drop):
        spec[q] = {t: bits(np.where(r, rng.random(n_items) >= d, rng.random(n_items) < 0.03)) for t, r in ref.items()}
    fid, man = _fid_quants(ids, dict(zip(ids, kld)))
    return samples_from(spec), fid, man


def test_flips_power_between_independent_and_shared(samples_from):
    s, f, q = _flip_study(samples_from)
    n_sims = 400
    slack = 3 * math.sqrt(0.25 / n_sims)
    for truth in ("conservative", "optimistic"):
        # at 30 items per task (about 0.2 / 0.73 / 0.98 here) none of the three saturates
        pw = {c: U.noise_ceiling(s, f, q, "wiki", 512, np.random.default_rng(11), truth=truth, threshold=0.2,
                                 n_items=30, n_sims=n_sims, coupling=c)["power"] for c in U.COUPLINGS}
        assert pw["independent"] <= pw["flips"] + slack and pw["flips"] <= pw["shared"] + slack, (truth, pw)
        # low churn: clearly above fresh items, and clearly below comonotone answers
        assert pw["independent"] + slack < pw["flips"] < pw["shared"] - slack, (truth, pw)
    _, need_f = U.items_for_power(s, f, q, "wiki", 512, np.random.default_rng(12), grid=(30, 100, 300, 1000),
                                  threshold=0.2, n_sims=200, coupling="flips")
    _, need_i = U.items_for_power(s, f, q, "wiki", 512, np.random.default_rng(12), grid=(30, 100, 300, 1000),
                                  threshold=0.2, n_sims=200, coupling="independent")
    assert need_f is not None and (need_i is None or need_f <= need_i)
