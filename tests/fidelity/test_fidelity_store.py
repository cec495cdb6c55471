"""Windows like llama-perplexity's, the on-disk stores, resuming, and refusing mismatched stores."""

from __future__ import annotations

import numpy as np
import pytest

from silentzone.fidelity.capture import capture, open_scorer, window_logits
from silentzone.fidelity.store import (Store, StoreError, encode_window, first_scored, llama_base_bytes,
                                       make_windows)


def test_windows_worked_example():
    # 10 ids, ctx 4: two windows [0..3], [4..7]; ids 8, 9 are dropped; BOS 99 replaces each first id
    w = make_windows(np.arange(10), 4, bos_id=99)
    np.testing.assert_array_equal(w, [[99, 1, 2, 3], [99, 5, 6, 7]])
    np.testing.assert_array_equal(make_windows(np.arange(10), 4, None)[1], [4, 5, 6, 7])
    with pytest.raises(StoreError, match="no window"):
        make_windows(np.arange(3), 4, None)


def test_scored_positions_match_llama_perplexity():
    # llama-perplexity: first = n_ctx/2, scores n_ctx - 1 - first tokens per window
    assert first_scored(512, "half") == 256 and 512 - 1 - first_scored(512, "half") == 255
    assert first_scored(7, "half") == 3
    assert first_scored(512, "all") == 0
    with pytest.raises(ValueError):
        first_scored(512, "tail")


def test_llama_base_bytes_worked_example():
    # header 8 + n_ctx, n_vocab, n_chunk (12) + tokens 2 x 8 x 4 = 64;
    # per scored token (2 * ((5 + 1) // 2) + 4) = 10 uint16 = 20 bytes, 2 windows x (8 - 1 - 4) = 6 tokens
    assert llama_base_bytes(5, 8, 2) == 8 + 12 + 64 + 20 * 6


def test_encode_window_arrays():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(3, 40)).astype(np.float32) * 4
    e = encode_window(z, [1, 2, 3], kinds=("exact", "compact"), k=8)
    assert e["top_idx"].shape == (3, 8) and e["top_logp"].dtype == np.float16
    assert np.all(np.diff(e["top_logp"].astype(np.float32), axis=1) <= 0)     # descending
    np.testing.assert_array_equal(e["top1"], z.argmax(-1))
    lp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    np.testing.assert_allclose(np.exp(e["tail_logmass"]) + np.exp(lp[np.arange(3)[:, None],
                               e["top_idx"]]).sum(-1), 1, rtol=1e-5)
    np.testing.assert_allclose(e["target_logp"], lp[np.arange(3), [1, 2, 3]], rtol=1e-5)
    with pytest.raises(StoreError, match="not finite"):
        encode_window(np.full((1, 4), np.nan, np.float32), [0])


@pytest.mark.slow
def test_capture_resumes_and_refuses_other_params(tiny_llama_dir, tmp_path):
    m = open_scorer(tiny_llama_dir, n_ctx=64)
    ids = np.random.default_rng(1).integers(3, 49152, 64 * 3 + 10)
    calls = []
    real = m.model.forward

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)
    m.model.forward = counting
    st = capture(m, ids, 64, tmp_path / "s", kinds=("exact", "compact"), k=16)
    assert st.complete() and st.n_windows == 3 and len(calls) == 3
    a = st.read(1, "exact")
    assert a["logp"].shape == (64 - 1 - 32, 49152) and a["logp"].dtype == np.float16
    c = st.read(1, "compact")
    assert c["top_idx"].shape == (31, 16)
    np.testing.assert_array_equal(a["targets"], ids[64 + 33:128])
    # the stored log-probs are the model's, at positions 32..62 of the window
    z = window_logits(m, st.windows()[1:2], st.first)[0].numpy()
    lp = z - np.log(np.exp(z.astype(np.float64)).sum(-1, keepdims=True))
    np.testing.assert_allclose(a["logp"].astype(np.float32), lp, atol=2e-2, rtol=2e-3)
    calls.clear()
    (tmp_path / "s" / "w00001.npz").unlink()     # an interrupted capture: window 1 missing
    capture(m, ids, 64, tmp_path / "s", kinds=("exact", "compact"), k=16)
    assert len(calls) == 1 and st.complete()
    capture(m, ids, 64, tmp_path / "s", kinds=("exact", "compact"), k=16)
    assert len(calls) == 1                       # finished: nothing recomputed
    with pytest.raises(StoreError, match="other k"):
        capture(m, ids, 64, tmp_path / "s", kinds=("exact", "compact"), k=32)
    with pytest.raises(StoreError, match="tokens_hash"):
        capture(m, ids[5:], 64, tmp_path / "s", kinds=("exact", "compact"), k=16)
