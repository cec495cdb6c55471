"""Top-k KLD with a fixed log-probability floor (paper Eq. 5, kernels._floor_kld): hand examples,
the exact KLD at k = V, the tail identity as k grows, the compact store, names and opt-in."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import log_softmax

from silentzone.fidelity.kernels import (compact_token_metrics, floor_kld_name, parse_floor_kld_name,
                                         summarize, token_metrics)
from silentzone.fidelity.store import encode_window


def _pair(seed: int, T: int, V: int, scale: float, noise: float):
    rng = np.random.default_rng(seed)
    a = (rng.normal(size=(T, V)) * scale).astype(np.float32)
    b = (a + rng.normal(size=(T, V)) * noise).astype(np.float32)
    return a, b, rng.integers(0, V, T)


P4 = np.log([[0.6, 0.3, 0.05, 0.05]], dtype=np.float32)
Q4 = np.log([[0.5, 0.05, 0.4, 0.05]], dtype=np.float32)


def test_worked_example_token_outside_candidate_topk_gets_the_floor():
    # Reference top-2 = {0, 1} (p = 0.6, 0.3); candidate top-2 = {0, 2} (q = 0.5, 0.4).
    # Token 0 is in both: l_0 = max(ln 0.5, ln 0.01) = ln 0.5. Token 1 is outside the candidate's
    # top-2: l_1 = floor = ln 0.01 (its true q = 0.05 is not revealed).
    # D = 0.6 ln(0.6/0.5) + 0.3 ln(0.3/0.01) = 0.6 * 0.182322 + 0.3 * 3.401197 = 1.129752
    name = floor_kld_name(2, math.log(0.01))
    m = token_metrics(P4, Q4, np.array([0]), floors=[(2, math.log(0.01))])
    assert m[name][0] == pytest.approx(0.6 * math.log(1.2) + 0.3 * math.log(30), abs=1e-6)
    assert m[name][0] == pytest.approx(1.129752, abs=1e-6)


def test_worked_example_floor_binds_inside_the_topk():
    # floor ln 0.55 lies above ln q_0 = ln 0.5, so l_0 = ln 0.55 (the floor binds) and l_1 = ln 0.55:
    # D = 0.6 ln(0.6/0.55) + 0.3 ln(0.3/0.55) = 0.052207 - 0.181841 = -0.129634
    f = math.log(0.55)
    m = token_metrics(P4, Q4, np.array([0]), floors=[(2, f)])
    assert m[floor_kld_name(2, f)][0] == pytest.approx(0.6 * math.log(0.6 / 0.55) + 0.3 * math.log(0.3 / 0.55),
                                                       abs=1e-6)


def test_worked_example_k1_and_k_equal_vocab():
    # k = 1: reference top-1 = {0}, candidate top-1 = {0}: D = 0.6 ln(0.6/0.5) = 0.109393
    # k = 4 = V, floor far below: the full KLD
    # = 0.6 ln 1.2 + 0.3 ln 6 + 0.05 ln 0.125 + 0.05 ln 1 = 0.109393 + 0.537528 - 0.103972 = 0.542949
    m = token_metrics(P4, Q4, np.array([0]), floors=[(1, -30.0), (4, -30.0)])
    assert m["kld_top1_floor-30"][0] == pytest.approx(0.6 * math.log(1.2), abs=1e-6)
    full = 0.6 * math.log(1.2) + 0.3 * math.log(6) + 0.05 * math.log(0.125)
    assert m["kld_top4_floor-30"][0] == pytest.approx(full, abs=1e-6)
    assert m["kld"][0] == pytest.approx(full, abs=1e-6)


@pytest.mark.parametrize("seed,scale,noise", [(0, 1.0, 0.3), (1, 3.0, 1.0), (2, 0.5, 0.05)])
def test_k_equal_vocab_with_a_floor_that_does_not_bind_is_the_full_kld(seed, scale, noise):
    a, b, t = _pair(seed, 7, 300, scale, noise)
    lq = log_softmax(b.astype(np.float64), -1)
    floor = float(np.floor(lq.min())) - 1.0  # below every candidate log-prob: never binds
    m = token_metrics(a, b, t, floors=[(300, floor)])
    np.testing.assert_allclose(m[floor_kld_name(300, floor)], m["kld"], rtol=1e-5, atol=1e-6)


def _numpy_floor_kld(lp, lq, k, floor):
    """Eq. 5 as defined in kernels._floor_kld, written again with numpy sorts (float64)."""
    out = np.zeros(len(lp))
    for r in range(len(lp)):
        top_p = np.argsort(-lp[r], kind="stable")[:k]
        kth_q = np.sort(lq[r])[::-1][k - 1]
        ell = np.where(lq[r, top_p] >= kth_q, np.maximum(lq[r, top_p], floor), floor)
        out[r] = (np.exp(lp[r, top_p]) * (lp[r, top_p] - ell)).sum()
    return out


@pytest.mark.parametrize("floor", [-60.0, -6.0])
def test_matches_numpy_definition_and_tail_identity_as_k_grows(floor):
    # Near-identical models. Against a numpy re-implementation for every k; where the floor does
    # not bind (-60) and TopK(P) lies inside TopK(Q) on every row, D_k is exactly the full KLD
    # minus the reference tail's terms sum_{v not in TopK(P)} p_v (log p_v - log q_v); the gap to
    # the full KLD is 0 at k = V.
    a, b, t = _pair(3, 5, 256, 2.0, 0.01)
    lp = log_softmax(a.astype(np.float64), -1)
    lq = log_softmax(b.astype(np.float64), -1)
    terms = np.exp(lp) * (lp - lq)
    full = terms.sum(-1)
    gaps, checked = [], 0
    for k in (1, 4, 16, 64, 256):
        got = token_metrics(a, b, t, floors=[(k, floor)])[floor_kld_name(k, floor)]
        np.testing.assert_allclose(got, _numpy_floor_kld(lp, lq, k, floor), rtol=1e-5, atol=1e-6)
        top_p, top_q = np.argsort(-lp, -1)[:, :k], np.argsort(-lq, -1)[:, :k]
        nested = all(set(top_p[r]) <= set(top_q[r]) for r in range(len(lp)))
        if floor < lq.min() and nested:
            inside = np.zeros_like(lp, dtype=bool)
            np.put_along_axis(inside, top_p, True, -1)
            np.testing.assert_allclose(got, full - np.where(inside, 0, terms).sum(-1), rtol=1e-5, atol=1e-6)
            checked += 1
        gaps.append(np.abs(got - full).mean())
    if floor < lq.min():
        assert checked >= 2                      # k = V always, and at least one k < V
        assert gaps[-1] < 1e-6                   # k = V: the full KLD
    else:  # a floor above some candidate log-probs binds even at k = V: not the full KLD
        assert gaps[-1] > 1e-2
    # Not monotone in k: a reference top-k token just outside the candidate's top-k is charged the
    # floor (here k = 16, 64 with floor -60 gave gaps 0.13 and 0.067 against 0.0007 at k = 1).


def test_compact_store_agrees_with_exact_reference():
    a, b, t = _pair(4, 6, 400, 2.0, 0.4)
    e = encode_window(a, t, kinds=("compact",), k=32, m=0, rng=np.random.default_rng(0))
    floors = [(8, -20.0), (32, -12.5)]
    ex = token_metrics(a, b, t, floors=floors)
    co = compact_token_metrics(e, b, floors=floors)
    for k, f in floors:
        np.testing.assert_allclose(co[floor_kld_name(k, f)], ex[floor_kld_name(k, f)], rtol=2e-3, atol=2e-3)
    with pytest.raises(ValueError, match="k >= 64"):
        compact_token_metrics(e, b, floors=[(64, -20.0)])


def test_names_round_trip_and_summary_metrics():
    assert floor_kld_name(20, -20.0) == "kld_top20_floor-20"
    assert floor_kld_name(10, -13.8155) == "kld_top10_floor-13.8155"
    assert parse_floor_kld_name("kld_top10_floor-13.8155_mean") == (10, -13.8155)
    assert parse_floor_kld_name("kld_top20_floor-20_p99") == (20, -20.0)
    assert parse_floor_kld_name("topk_kld_mean") is None and parse_floor_kld_name("kld_mean") is None
    with pytest.raises(ValueError):
        floor_kld_name(0, -20.0)
    with pytest.raises(ValueError):
        floor_kld_name(10, 0.5)
    pt = {"kld": np.array([0.0, 0.1]), "kld_top2_floor-20": np.array([1.0, 3.0])}
    s = summarize(pt)
    assert s["kld_top2_floor-20_mean"] == pytest.approx(2.0)
    assert s["kld_top2_floor-20_p99"] == pytest.approx(1.0 + 0.99 * 2.0)  # linear interpolation


def test_variant_is_opt_in():
    # the default metric set (what score_cohort writes to fidelity.csv) has no floor variant, so
    # the shipped tables are reproduced unchanged; requesting one adds exactly its two metrics
    from silentzone.fidelity.score import METRICS, floor_metrics
    assert not any(parse_floor_kld_name(m) for m in METRICS)
    assert floor_metrics([(20, -20.0)]) == ("kld_top20_floor-20_mean", "kld_top20_floor-20_p99")
    m = token_metrics(P4, Q4, np.array([0]))
    assert not any(parse_floor_kld_name(k) for k in m)


@pytest.mark.slow
def test_real_smollm2_quant_full_vocab_floor_variant_equals_kld(smollm2_ref, tmp_path):
    # SmolLM2 reference vs its Q4_0 (llama.cpp on both), 2 windows of 128 tokens of the shipped wiki
    # text: k = V (49,152) with a floor below every log-prob reproduces the full KLD per token;
    # k = 10 with floor -20 is a different number, and both reach the summary under their names.
    from silentzone.fidelity.corpora import corpus_text
    from silentzone.fidelity.score import score_text
    from silentzone.llama_tools import run
    q = tmp_path / "Q4_0.gguf"
    run("llama-quantize", str(smollm2_ref.gguf), str(q), "Q4_0", "2")
    V = 49152
    floors = [(V, -1000.0), (10, -20.0)]
    summary, pt = score_text(smollm2_ref.gguf, q, corpus_text("wiki")[:1100], 128, floors=floors)
    full = pt[floor_kld_name(V, -1000.0)]
    assert full.shape == pt["kld"].shape and full.size >= 100
    np.testing.assert_allclose(full, pt["kld"], rtol=1e-4, atol=1e-5)
    assert summary["kld_top49152_floor-1000_mean"] == pytest.approx(summary["kld_mean"], rel=1e-4)
    assert summary["kld_top10_floor-20_mean"] != pytest.approx(summary["kld_mean"], rel=1e-2)
    assert np.isfinite(pt["kld_top10_floor-20"]).all()
