"""The reference's check logits (quantize._reference_logits) are computed once per reference and
device kind and then read from a file beside the reference, so a quant job (its own process in the
DAG) no longer loads the whole HF reference. Real SmolLM2 reference throughout."""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import pytest

import silentzone.quantize as Q
from silentzone.models import CHECK_TEXT


@pytest.fixture
def ref(smollm2_ref, tmp_path):
    """The shipped reference under a private root (its cache file lands there) and an HF dir of
    links to its files, except config.json, copied so that a test may change its mtime."""
    hf = tmp_path / "hf"
    hf.mkdir()
    for p in smollm2_ref.hf_dir.iterdir():
        if p.name == "config.json":
            (hf / p.name).write_bytes(p.read_bytes())
        elif p.is_file():
            (hf / p.name).symlink_to(p)
    Q._REF_LOGITS.clear()
    yield replace(smollm2_ref, root=tmp_path, hf_dir=hf)
    Q._REF_LOGITS.clear()


def _fresh(ref):
    """The logits as the code computed them before the cache: load, one forward."""
    import torch
    ids = ref.tokenizer()(CHECK_TEXT)["input_ids"]
    with torch.no_grad():
        return ids, ref.load_hf()(torch.tensor([ids])).logits[0].float().numpy()


def _forbid_loading(monkeypatch, ref_cls):
    def boom(self, *a, **k):
        raise AssertionError("the HF reference was loaded")
    monkeypatch.setattr(ref_cls, "load_hf", boom)


def test_second_process_reads_the_file_not_the_model(ref, monkeypatch):
    ids0, want = _fresh(ref)
    ids, got = Q._reference_logits(ref)
    files = list(ref.root.glob("check-logits-*.npz"))
    assert len(files) == 1 and not list(ref.root.glob("*.tmp-*"))
    assert ids == ids0 and np.array_equal(got, want)  # bit for bit: the same forward
    Q._REF_LOGITS.clear()  # as a new process would start
    _forbid_loading(monkeypatch, type(ref))
    ids2, got2 = Q._reference_logits(ref)
    assert ids2 == ids0 and np.array_equal(got2, want)
    assert got2.dtype == np.float32 and got2.shape == (len(ids0), 49152)


def test_a_changed_weight_file_or_device_kind_is_a_new_key(ref):
    k = Q._reference_key(ref, "cpu")
    assert Q._reference_key(ref, "cpu") == k
    assert Q._reference_key(ref, "cuda:0") == Q._reference_key(ref, "cuda:1") != k
    cfg = ref.hf_dir / "config.json"
    st = cfg.stat()
    os.utime(cfg, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert Q._reference_key(ref, "cpu") != k


def test_a_reexported_reference_is_computed_again(ref, monkeypatch):
    Q._reference_logits(ref)
    cfg = ref.hf_dir / "config.json"
    st = cfg.stat()
    os.utime(cfg, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    Q._REF_LOGITS.clear()
    calls = []
    orig = type(ref).load_hf
    monkeypatch.setattr(type(ref), "load_hf", lambda self, *a, **k: calls.append(1) or orig(self, *a, **k))
    Q._reference_logits(ref)
    assert calls == [1]
    assert len(list(ref.root.glob("check-logits-*.npz"))) == 2


def test_an_unreadable_cache_file_is_replaced(ref):
    _, want = Q._reference_logits(ref)
    (f,) = ref.root.glob("check-logits-*.npz")
    f.write_bytes(b"not a zip file")
    Q._REF_LOGITS.clear()
    _, got = Q._reference_logits(ref)
    assert np.array_equal(got, want)
    with np.load(f) as z:
        assert np.array_equal(z["logits"], want)
