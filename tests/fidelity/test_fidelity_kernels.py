"""KLD math against scipy (both directions, exact and compact stores) and worked examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon
from scipy.special import log_softmax, rel_entr, softmax
from scipy.stats import entropy

from silentzone.fidelity.kernels import compact_token_metrics, summarize, token_kld, token_metrics
from silentzone.fidelity.store import encode_window


def _pair(seed: int, T: int, V: int, scale: float, noise: float):
    rng = np.random.default_rng(seed)
    a = (rng.normal(size=(T, V)) * scale).astype(np.float32)
    b = (a + rng.normal(size=(T, V)) * noise).astype(np.float32)
    return a, b, rng.integers(0, V, T)


def _compact(logits, targets, k, m=0, seed=0):
    return encode_window(logits, targets, kinds=("compact",), k=k, m=m, rng=np.random.default_rng(seed))


pairs = st.tuples(st.integers(0, 2**31 - 1), st.integers(1, 6), st.integers(12, 300),
                  st.floats(0.1, 6.0), st.floats(0.01, 2.0))


@settings(max_examples=40, deadline=None)
@given(pairs)
def test_exact_divergences_match_scipy(args):
    a, b, t = _pair(*args)
    P, Q = softmax(a.astype(np.float64), -1), softmax(b.astype(np.float64), -1)
    m = token_metrics(a, b, t)
    np.testing.assert_allclose(m["kld"], rel_entr(P, Q).sum(-1), rtol=2e-4, atol=2e-6)
    np.testing.assert_allclose(m["kld"], entropy(P, Q, axis=-1), rtol=2e-4, atol=2e-6)
    np.testing.assert_allclose(m["rkld"], entropy(Q, P, axis=-1), rtol=2e-4, atol=2e-6)
    np.testing.assert_allclose(m["js"], jensenshannon(P, Q, axis=-1) ** 2, rtol=2e-4, atol=2e-6)
    np.testing.assert_allclose(token_kld(a, b), entropy(P, Q, axis=-1), rtol=2e-4, atol=2e-6)
    # swapping the arguments swaps the directions
    np.testing.assert_allclose(token_metrics(b, a, t)["kld"], m["rkld"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(-m["nll_q"], log_softmax(b.astype(np.float64), -1)[np.arange(len(t)), t],
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(m["top1"], (a.argmax(-1) == b.argmax(-1)).astype(float))


@settings(max_examples=40, deadline=None)
@given(pairs)
def test_exact_store_float16_matches_scipy(args):
    a, b, t = _pair(*args)
    P, Q = softmax(a.astype(np.float64), -1), softmax(b.astype(np.float64), -1)
    e = encode_window(a, t, kinds=("exact",))
    assert e["exact"].dtype == np.float16
    m = token_metrics(e["exact"], b, e["targets"], e["top1"], e["target_logp"])
    # float16 log-probs: relative step 2^-11; the KLD moves by far less than that
    np.testing.assert_allclose(m["kld"], entropy(P, Q, axis=-1), rtol=5e-3, atol=1e-4)
    np.testing.assert_allclose(m["rkld"], entropy(Q, P, axis=-1), rtol=5e-3, atol=1e-4)
    np.testing.assert_allclose(m["nll_p"], -log_softmax(a.astype(np.float64), -1)[np.arange(len(t)), t],
                               rtol=1e-5, atol=1e-5)  # target log-prob kept in float32


@settings(max_examples=40, deadline=None)
@given(pairs, st.integers(1, 40))
def test_compact_store_is_the_coarsened_divergence(args, k):
    a, b, t = _pair(*args)
    V = a.shape[1]
    k = min(k, V)
    P, Q = softmax(a.astype(np.float64), -1), softmax(b.astype(np.float64), -1)
    m = compact_token_metrics(_compact(a, t, k), b, k_topk=min(10, k))
    # hand-built (k+1)-bucket distributions: the reference's top-k tokens, then everything else
    idx = np.argsort(-a, -1, kind="stable")[:, :k]
    Pk, Qk = np.take_along_axis(P, idx, -1), np.take_along_axis(Q, idx, -1)
    rest = np.ones_like(P, dtype=bool)
    np.put_along_axis(rest, idx, False, -1)
    Pb = np.concatenate([Pk, (P * rest).sum(-1, keepdims=True)], -1)
    Qb = np.concatenate([Qk, (Q * rest).sum(-1, keepdims=True)], -1)
    np.testing.assert_allclose(m["kld"], entropy(Pb, Qb, axis=-1), rtol=5e-3, atol=2e-4)
    np.testing.assert_allclose(m["rkld"], entropy(Qb, Pb, axis=-1), rtol=5e-3, atol=2e-4)
    np.testing.assert_allclose(m["js"], jensenshannon(Pb, Qb, axis=-1) ** 2, rtol=5e-3, atol=2e-4)
    # a lower bound of the full-vocabulary value (log-sum inequality), up to float16 rounding
    assert np.all(m["kld"] <= entropy(P, Q, axis=-1) + 2e-4 + 5e-3 * entropy(P, Q, axis=-1))


@settings(max_examples=25, deadline=None)
@given(pairs)
def test_compact_with_full_k_equals_exact(args):
    a, b, t = _pair(*args)
    V = a.shape[1]
    x = token_metrics(a, b, t)
    m = compact_token_metrics(_compact(a, t, V), b)
    for name in ("kld", "rkld", "js", "topk_kld"):
        np.testing.assert_allclose(m[name], x[name], rtol=5e-3, atol=2e-4, err_msg=name)
    for name in ("nll_q", "nll_p", "top1"):
        np.testing.assert_allclose(m[name], x[name], rtol=1e-6, atol=1e-6, err_msg=name)


def test_worked_example_two_tokens():
    # P = (1/2, 1/2), Q = (1/4, 3/4): logits log p, log q.
    # KL(P||Q) = 1/2 ln(2) + 1/2 ln(2/3) = 0.5 * ln(4/3) = 0.143841
    # KL(Q||P) = 1/4 ln(1/2) + 3/4 ln(3/2) = 0.130812
    # M = (3/8, 5/8): JS = 1/2 [1/2 ln(4/3) + 1/2 ln(4/5)] + 1/2 [1/4 ln(2/3) + 3/4 ln(6/5)] = 0.036525
    a = np.log([[0.5, 0.5]], dtype=np.float32)
    b = np.log([[0.25, 0.75]], dtype=np.float32)
    m = token_metrics(a, b, np.array([1]))
    assert m["kld"][0] == pytest.approx(0.5 * math.log(4 / 3), abs=1e-6)
    assert m["rkld"][0] == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5), abs=1e-6)
    js = 0.5 * (0.5 * math.log(4 / 3) + 0.5 * math.log(4 / 5)) + 0.5 * (0.25 * math.log(2 / 3)
                                                                        + 0.75 * math.log(6 / 5))
    assert m["js"][0] == pytest.approx(js, abs=1e-6)
    assert m["nll_q"][0] == pytest.approx(-math.log(0.75), abs=1e-6)   # target token 1
    assert m["nll_p"][0] == pytest.approx(math.log(2), abs=1e-6)


def test_worked_example_compact_k1():
    # P = (0.7, 0.2, 0.1), Q = (0.5, 0.3, 0.2), k = 1: buckets {0} and {1, 2}
    # P' = (0.7, 0.3), Q' = (0.5, 0.5): KL = 0.7 ln(1.4) + 0.3 ln(0.6) = 0.082283
    # while the full KL = 0.7 ln 1.4 + 0.2 ln(2/3) + 0.1 ln(1/2) = 0.085085 (the gap is
    # tail mass 0.3 x KL((2/3, 1/3) || (3/5, 2/5)) = 0.3 x 0.009339 = 0.002802)
    a = np.log([[0.7, 0.2, 0.1]], dtype=np.float32)
    b = np.log([[0.5, 0.3, 0.2]], dtype=np.float32)
    m = compact_token_metrics(_compact(a, np.array([0]), 1), b, k_topk=1)
    assert m["kld"][0] == pytest.approx(0.7 * math.log(1.4) + 0.3 * math.log(0.6), abs=2e-4)
    full = token_metrics(a, b, np.array([0]))["kld"][0]
    assert full == pytest.approx(0.7 * math.log(1.4) + 0.2 * math.log(2 / 3) + 0.1 * math.log(0.5), abs=1e-6)
    assert full - m["kld"][0] == pytest.approx(0.3 * (2 / 3 * math.log(10 / 9) + 1 / 3 * math.log(5 / 6)),
                                               abs=2e-4)


@settings(max_examples=25, deadline=None)
@given(pairs, st.integers(1, 8))
def test_compact_tail_sample_is_exact_when_it_covers_the_tail(args, k):
    # With one tail token left (V = k + 1) every sampled id is that token: the estimate is exact.
    a, b, t = _pair(*args)
    a, b = a[:, :k + 1], b[:, :k + 1]
    t = t % (k + 1)
    x = token_metrics(a, b, t, k_topk=min(10, k))
    m = compact_token_metrics(_compact(a, t, k, m=8), b, k_topk=min(10, k))
    for name in ("kld", "rkld", "js"):
        np.testing.assert_allclose(m[name], x[name], rtol=5e-3, atol=3e-4, err_msg=name)


def test_compact_tail_sample_is_unbiased():
    # A fat-tailed reference (k = 4 of V = 400 holds little mass) and a near copy: the coarsened
    # (m = 0) estimate misses most of the KLD, while the sampled one averages to the exact value.
    a, b, t = _pair(11, 400, 400, 1.0, 0.15)
    x = token_metrics(a, b, t)
    coarse = compact_token_metrics(_compact(a, t, 4), b)
    assert coarse["kld"].mean() < 0.5 * x["kld"].mean()
    for name in ("kld", "rkld", "js"):
        est = np.mean([compact_token_metrics(_compact(a, t, 4, m=16, seed=s), b)[name].mean()
                       for s in range(5)])
        # 5 x 400 tokens: the standard error of the mean is well under 1% here
        assert est == pytest.approx(x[name].mean(), rel=0.02), name


def test_crossfit_control_variate_removes_first_order_noise():
    # Near-identical models: d = log p - log q is small, so the plain tail mean of d is mostly
    # noise of order sd(d); the control variate q/p (known tail mean) leaves second-order noise.
    # Per token the estimate keeps relative noise ~ sqrt(2/m) (d Gaussian: Var(d^2/2)/E[d^2/2]^2 = 2).
    a, b, t = _pair(12, 300, 400, 1.0, 0.05)
    x = token_metrics(a, b, t)["kld"]
    e = _compact(a, t, 4, m=16)
    est = compact_token_metrics(e, b)["kld"]
    lq = log_softmax(b.astype(np.float64), -1)
    head = (np.exp(e["top_logp"].astype(np.float64))
            * (e["top_logp"] - np.take_along_axis(lq, e["top_idx"], -1))).sum(-1)
    plain = head + np.exp(e["tail_logmass"]) * (e["tail_logp"] - np.take_along_axis(lq, e["tail_idx"], -1)).mean(-1)
    assert np.std(plain - x) > 5 * np.mean(x)                # per token, noise >> the KLD
    assert np.std(est - x) < 0.1 * np.std(plain - x)        # here 0.044
    assert np.std(est - x) < 2 * np.sqrt(2 / 16) * np.mean(x)


def test_worked_example_topk_kld_floor():
    # Reference top-2 = tokens {0, 1} with p = (0.6, 0.3); the candidate's top-2 = {0, 2}, with
    # q = (0.5, 0.05, 0.4, 0.05): token 1 is outside it and gets the floor q_(2) = 0.4.
    # On {0, 1}: P = (2/3, 1/3), Q~ = (0.5, 0.4)/0.9 = (5/9, 4/9)
    # KL = 2/3 ln((2/3)/(5/9)) + 1/3 ln((1/3)/(4/9)) = 2/3 ln(1.2) + 1/3 ln(0.75) = 0.025658
    a = np.log([[0.6, 0.3, 0.05, 0.05]], dtype=np.float32)
    b = np.log([[0.5, 0.05, 0.4, 0.05]], dtype=np.float32)
    m = token_metrics(a, b, np.array([0]), k_topk=2)
    assert m["topk_kld"][0] == pytest.approx(2 / 3 * math.log(1.2) + 1 / 3 * math.log(0.75), abs=1e-6)


def test_summary_worked_example():
    # nll_q = (1, 2), nll_p = (1, 1): PPL(Q) = e^1.5, PPL(ref) = e^1, mean ln ratio = 0.5
    # dp = (e^-1 - e^-1, e^-2 - e^-1) = (0, -0.232544): RMS = 0.232544 / sqrt(2) = 0.164432
    # kld = (0, 0.1): mean 0.05, median 0.05, p90 = 0 + 0.9 * 0.1 = 0.09 (linear, as llama.cpp)
    pt = {"kld": np.array([0.0, 0.1]), "rkld": np.array([0.0, 0.2]), "js": np.zeros(2),
          "nll_q": np.array([1.0, 2.0]), "nll_p": np.array([1.0, 1.0]), "top1": np.array([1.0, 0.0]),
          "topk_kld": np.zeros(2)}
    s = summarize(pt)
    assert s["ppl_quant"] == pytest.approx(math.exp(1.5))
    assert s["ppl_ref"] == pytest.approx(math.e)
    assert s["ppl_ratio"] == pytest.approx(math.exp(0.5))
    assert s["delta_ppl"] == pytest.approx(math.exp(1.5) - math.e)
    assert s["ln_ppl_ratio_mean"] == pytest.approx(0.5)
    assert s["dp_rms"] == pytest.approx((math.exp(-1) - math.exp(-2)) / math.sqrt(2))
    assert s["kld_mean"] == pytest.approx(0.05) and s["kld_median"] == pytest.approx(0.05)
    assert s["kld_p90"] == pytest.approx(0.09) and s["kld_max"] == pytest.approx(0.1)
    assert s["top1_agreement"] == 0.5 and s["rkld_mean"] == pytest.approx(0.1) and s["n_tokens"] == 2


def test_identical_models_score_zero():
    a, _, t = _pair(3, 5, 100, 3.0, 0.1)
    m = token_metrics(a, a, t)
    assert np.abs(m["kld"]).max() < 1e-6 and np.abs(m["js"]).max() < 1e-6
    assert m["top1"].all()


def test_row_blocks_do_not_change_results():
    a, b, t = _pair(5, 37, 500, 2.0, 0.5)
    big = token_metrics(a, b, t)
    small = token_metrics(a, b, t, block_elems=1000)  # two rows per block
    for k in big:
        np.testing.assert_allclose(big[k], small[k], rtol=1e-6, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 40), st.sampled_from([512 * 3, 1024, 700]),
       st.booleans())
def test_chunked_topk_equals_torch_topk(seed, k, V, ties):
    import torch
    from silentzone.fidelity.kernels import _topk
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(5, V, generator=g)
    if ties:  # coarse values: many equal elements
        z = (z * 2).round()
    v, i = _topk(z, k, chunk=64)
    ref = z.topk(k, dim=-1)
    torch.testing.assert_close(v, ref.values)
    torch.testing.assert_close(z.gather(-1, i), ref.values)  # ids may differ only among ties
    assert all(len(set(row)) == k for row in i.tolist())     # k distinct ids per row
