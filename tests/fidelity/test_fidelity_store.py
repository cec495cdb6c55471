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


def test_exact_rows_keep_the_float32_argmax_as_their_first_maximum():
    """float16 rounding can tie the argmax with an earlier entry; that entry's row is written with
    the argmax one float16 step up, so top-1 is read back exactly from the log-probs alone."""
    # logits 0 and 1e-4 apart: equal once rounded to float16 log-probs, the later one is the max
    z = np.array([[3.0, 3.0001, -2.0, 1.0], [1.0, 0.5, 2.0, 2.0]], dtype=np.float32)
    e = encode_window(z, [0, 1], kinds=("exact",))
    np.testing.assert_array_equal(e["top1"], [1, 2])
    lp16 = (z - np.log(np.exp(z.astype(np.float64)).sum(-1, keepdims=True))).astype(np.float16)
    assert lp16[0, 0] == lp16[0, 1]                                  # the tie the nudge breaks
    np.testing.assert_array_equal(e["exact"].argmax(-1), [1, 2])
    assert e["exact"][0, 1] == np.nextafter(lp16[0, 1], np.float16(np.inf))
    np.testing.assert_array_equal(e["exact"][0, [0, 2, 3]], lp16[0, [0, 2, 3]])  # nothing else moves
    np.testing.assert_array_equal(e["exact"][1], lp16[1])            # a real tie: first index wins


@pytest.mark.parametrize("kinds", [("exact",), ("exact", "compact")])
def test_exact_records_read_back_what_was_encoded(kinds, tmp_path):
    """The exact store keeps one record per token (float16 log-probs + float32 target log-prob);
    targets come from tokens.npy and top-1 from the row: read() returns what encode_window made."""
    rng = np.random.default_rng(3)
    V, ctx = 301, 16
    windows = make_windows(rng.integers(0, V, 3 * ctx), ctx, bos_id=1)
    st = Store.create(tmp_path / "s", windows, n_vocab=V, scoring="half", kinds=kinds, k=8, m=4)
    assert st.meta["exact_layout"] == "record"
    enc = []
    for i in range(st.n_windows):
        z = rng.normal(size=(ctx - 1 - st.first, V)).astype(np.float32) * 3
        z[0, 7] = z[0, 9] = z[0].max() + 1                   # an exact float32 tie: index 7 wins
        enc.append(encode_window(z, windows[i, st.first + 1:], kinds=kinds, k=8, m=4, rng=st.rng(i)))
        assert not st.done(i)
        st.write(i, enc[-1])
        assert st.done(i)
    assert st.complete()
    n = ctx - 1 - st.first
    rec = tmp_path / "s" / "w00000.exact.npy"
    header = np.load(rec, mmap_mode="r").offset           # the .npy header of a record dtype
    assert header <= 192 and rec.stat().st_size == header + n * (2 * V + 4)
    assert sorted(p.name for p in (tmp_path / "s").glob("w00000*")) == (
        ["w00000.exact.npy"] + (["w00000.npz"] if "compact" in kinds else []))
    for i, e in enumerate(enc):
        r = Store(tmp_path / "s").read(i, "exact")
        np.testing.assert_array_equal(r["logp"], e["exact"])
        for key in ("targets", "top1", "target_logp"):
            np.testing.assert_array_equal(r[key], e[key], err_msg=key)
        assert r["top1"][0] == 7
    assert st.nbytes("exact") == st.n_windows * (header + n * (2 * V + 4))


def test_exact_store_of_the_plain_layout_is_still_read(tmp_path):
    """Stores written before the record layout (float16 [n, V] + targets/top1/target_logp in the
    .npz, no exact_layout in meta.json) read as before."""
    import json
    rng = np.random.default_rng(4)
    V, ctx = 50, 8
    windows = make_windows(rng.integers(0, V, 2 * ctx), ctx, bos_id=None)
    st = Store.create(tmp_path / "s", windows, n_vocab=V, scoring="half", kinds=("exact",))
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    del meta["exact_layout"]
    (tmp_path / "s" / "meta.json").write_text(json.dumps(meta))
    st = Store(tmp_path / "s")
    e = encode_window(rng.normal(size=(3, V)).astype(np.float32), windows[0, 5:], kinds=("exact",))
    st.write(0, e)
    assert (tmp_path / "s" / "w00000.npz").is_file() and st.done(0)
    r = st.read(0, "exact")
    assert r["logp"].shape == (3, V)
    np.testing.assert_array_equal(r["logp"], e["exact"])
    np.testing.assert_array_equal(r["top1"], e["top1"])
