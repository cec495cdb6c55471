"""Fixtures for the quantize tests: a tiny-calibration study, a private artifact root, KLD helper."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from silentzone.config import QuantCfg, load
from silentzone.paths import CONFIGS


@pytest.fixture(scope="session")
def qstudy():
    """The smollm2 smoke study with 2 calibration samples (imatrix chunks, GPTQ/AWQ windows)."""
    st = load(CONFIGS / "smollm2.yaml", "smoke")
    return replace(st, profile=replace(st.profile, calib_samples=2))


@pytest.fixture(scope="session")
def qroot(tmp_path_factory):
    """Artifacts of these tests live here, never in the user's cache."""
    return tmp_path_factory.mktemp("quants")


@pytest.fixture(scope="session")
def make(qstudy, qroot, smollm2_ref):
    """make(id, method, **params) -> manifest row, on the real SmolLM2 reference (cached per call)."""
    from silentzone.quantize import make_quant
    cache = {}

    def _make(qid, method, **params):
        key = (qid, method, tuple(sorted(params.items())))
        if key not in cache:
            cache[key] = make_quant(qstudy, QuantCfg(qid, method, params), smollm2_ref, root=qroot)
        return cache[key]
    return _make


EVAL_TEXT = ("The history of the city begins in the early medieval period, when a small market grew "
             "around the river crossing. By the fourteenth century it had walls, a cathedral and a "
             "guild hall, and its merchants traded wool and cloth with Flanders and Italy.\n"
             "def mean(xs):\n    return sum(xs) / len(xs)\n")


@pytest.fixture(scope="session")
def eval_text():
    return EVAL_TEXT


@pytest.fixture(scope="session")
def ref_eval(smollm2_ref):
    """(token ids, reference logits) of EVAL_TEXT, a text that no quant was checked or calibrated on."""
    import torch
    ids = smollm2_ref.tokenizer()(EVAL_TEXT)["input_ids"]
    with torch.no_grad():
        logits = smollm2_ref.load_hf()(torch.tensor([ids])).logits[0].float().numpy()
    return ids, logits


@pytest.fixture(scope="session")
def kld(ref_eval):
    """kld(artifact_dir) -> mean KLD(reference || quant) over EVAL_TEXT, nats (opened by backends)."""
    from silentzone.backends import open_model
    from silentzone.fidelity.kernels import token_kld

    def _kld(artifact_dir):
        ids, ref_logits = ref_eval
        m = open_model(artifact_dir, n_ctx=256)
        logits = m.logits(ids)
        assert logits.shape == ref_logits.shape
        assert np.isfinite(logits).all()
        return float(token_kld(ref_logits, logits).mean())
    return _kld
