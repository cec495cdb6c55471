"""score_store over batches of windows: the padded no-copy path (_window_rows, every row of each
window scored and the extra one dropped) gives the same per-token metrics as one window at a time."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from silentzone.backends import HFModel
from silentzone.fidelity.capture import capture
from silentzone.fidelity.score import _window_rows, score_store
from silentzone.fidelity.store import Store

V = 1024


class _Net:
    """A fixed random 'language model': logits of a position from its token and the one before."""

    def __init__(self, seed: int, scale: float = 3.0):
        g = torch.Generator().manual_seed(seed)
        self.a = torch.randn(V, V, generator=g) * scale
        self.b = torch.randn(V, V, generator=g)
        self.config = SimpleNamespace(get_text_config=lambda: SimpleNamespace(vocab_size=V))

    def __call__(self, x, logits_to_keep=0):
        prev = torch.cat([x[:, :1], x[:, :-1]], 1)
        z = self.a[x] + 0.5 * self.b[prev]
        return SimpleNamespace(logits=z[:, -logits_to_keep:].contiguous() if logits_to_keep else z)


def _model(seed, name):
    m = HFModel(_Net(seed), name, "cpu")
    m._tok = None  # no tokenizer: the probe-id check is skipped
    return m


def test_window_rows_is_a_view_of_every_row():
    full = torch.randn(3, 6, 5)
    z = full[:, :-1]
    rows = _window_rows(z)
    assert rows.data_ptr() == full.data_ptr() and torch.equal(rows, full.reshape(-1, 5))
    assert _window_rows(full[:, 1:]) is None          # not rows 0..n-1 of the windows
    assert _window_rows(torch.randn(10, 8, 5)[:, 2:6]) is None
    assert _window_rows(full[:1, :-1]) is None       # one window: reshape is a view already


@pytest.mark.parametrize("batch", [3, 4])
def test_batched_scoring_equals_one_window_at_a_time(tmp_path, batch):
    ids = np.random.default_rng(0).integers(0, V, 10 * 64)
    st = capture(_model(0, "ref"), ids, 64, tmp_path / "store", k=32, m=16)
    cand = _model(1, "cand")
    one = score_store(cand, Store(st.path), batch=1)
    many = score_store(cand, Store(st.path), batch=batch)  # 10 windows: a short last batch too
    assert one.keys() == many.keys()
    for k in one:
        assert one[k].shape == (st.n_windows, st.ctx - 1 - st.first)
        np.testing.assert_array_equal(many[k], one[k], err_msg=k)


def test_batched_scoring_takes_the_no_copy_path(tmp_path, monkeypatch):
    import silentzone.fidelity.score as score
    calls = []
    pad = score._pad_rows
    monkeypatch.setattr(score, "_pad_rows", lambda *a: calls.append(a[1:3]) or pad(*a))
    ids = np.random.default_rng(1).integers(0, V, 4 * 32)
    st = capture(_model(0, "ref"), ids, 32, tmp_path / "store", k=16, m=8)
    score_store(_model(1, "cand"), Store(st.path), batch=3)
    assert calls == [(3, 15)]  # the last batch of one window is a view already: not padded
