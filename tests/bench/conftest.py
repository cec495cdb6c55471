"""Fixtures for the benchmark tests: the SmolLM2 reference on both backends and a Q4_0 quant."""

from __future__ import annotations

import os

import pytest

THREADS = int(os.environ.get("SILENTZONE_THREADS", "2"))


@pytest.fixture(scope="session")
def enc(smollm2_ref):
    from silentzone.bench.run import Encoder
    return Encoder(smollm2_ref.tokenizer())


@pytest.fixture(scope="session")
def gguf_model(smollm2_ref):
    from silentzone.backends import open_model
    return open_model(smollm2_ref.gguf, threads=THREADS, name="reference")


@pytest.fixture(scope="session")
def hf_model(smollm2_ref):
    from silentzone.backends import open_model
    return open_model(smollm2_ref.hf_dir, threads=THREADS, name="reference-hf")


@pytest.fixture(scope="session")
def q4_0_gguf(smollm2_ref, tmp_path_factory):
    """A Q4_0 GGUF of the reference (llama.cpp's own quantizer, about a second)."""
    import llama_cpp
    out = tmp_path_factory.mktemp("quant") / "Q4_0.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0
    params.nthread = THREADS
    assert llama_cpp.llama_model_quantize(str(smollm2_ref.gguf).encode(), str(out).encode(), params) == 0
    return out
