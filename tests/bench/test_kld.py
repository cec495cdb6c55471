"""Per-prompt KLD store: exact with the full vocabulary, a tight lower bound with top-k."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from silentzone.bench.kld import RefStore, RefStoreError
from silentzone.fidelity.kernels import token_kld


def _logits(rng, t=6, v=300, scale=4.0):
    return (rng.standard_normal((t, v)) * scale).astype(np.float32)


def test_full_vocab_store_equals_token_kld(tmp_path):
    rng = np.random.default_rng(0)
    ref, cand = _logits(rng), _logits(rng)
    ids = list(range(7))
    s = RefStore(tmp_path / "t.npz", k=300)
    s.put("a", ids, ref)
    s.save({"bench": {"x": 1}})
    got = RefStore.load(tmp_path / "t.npz", expect={"x": 1}).kld("a", ids, cand)
    np.testing.assert_allclose(got, token_kld(ref, cand), rtol=1e-5, atol=1e-7)
    assert np.allclose(RefStore.load(tmp_path / "t.npz").kld("a", ids, ref), 0, atol=1e-6)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10_000), k=st.sampled_from([1, 8, 64, 299]), scale=st.sampled_from([1.0, 6.0]))
def test_topk_kld_is_a_lower_bound_and_tight_for_peaked_distributions(seed, k, scale):
    rng = np.random.default_rng(seed)
    ref = _logits(rng, scale=scale)
    cand = ref + rng.standard_normal(ref.shape).astype(np.float32) * 0.5
    s = RefStore("unused.npz", k=k)
    s.put("a", list(range(7)), ref)
    def logsoftmax(x):
        x = x.astype(np.float64) - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))
    lp, lq = logsoftmax(ref), logsoftmax(cand)
    exact = (np.exp(lp) * (lp - lq)).sum(-1)  # float64 (token_kld works in float32)
    coarse = s.kld("a", list(range(7)), cand)
    # coarsening never increases KL (data processing); the reference is stored in float32,
    # which leaves ~1e-6 nats of rounding in the rest bucket
    assert np.all(coarse <= exact * (1 + 1e-4) + 5e-6)
    if k == 299:
        np.testing.assert_allclose(coarse, exact, rtol=0.02, atol=1e-4)


def test_mismatched_ids_and_missing_store_are_refused(tmp_path):
    s = RefStore(tmp_path / "t.npz", k=5)
    s.put("a", [1, 2, 3], _logits(np.random.default_rng(1), t=2))
    with pytest.raises(RefStoreError, match="other token ids"):
        s.kld("a", [1, 2, 4], _logits(np.random.default_rng(2), t=2))
    with pytest.raises(RefStoreError, match="no reference for item 'b'"):
        s.kld("b", [1, 2, 3], _logits(np.random.default_rng(2), t=2))
    with pytest.raises(RefStoreError, match="run the reference first"):
        RefStore.load(tmp_path / "missing.npz")
    s.save({"bench": {"v": 1}})
    with pytest.raises(RefStoreError, match="other items or task version"):
        RefStore.load(tmp_path / "t.npz", expect={"v": 2})
