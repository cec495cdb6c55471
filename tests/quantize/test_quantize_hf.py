"""GPTQ and AWQ through llm-compressor: GPTQ on the real SmolLM2, AWQ on a tiny random Llama.

GPTQ takes about a minute on 2 idle cores even with 2 x 64 calibration tokens; AWQ's scale search is
several minutes on the real model, so it runs here on the tiny fixture (SmolLM2's tokenizer and
vocabulary, hidden 64, 2 layers) to keep CI fast; the full cohort runs AWQ on the real model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.mark.slow
def test_gptq_w4g64_real_smollm2(make, kld):
    r = make("gptq-w4g64", "gptq", bits=4, group_size=64, corpus="wiki", seq_len=64)
    assert r["status"] == "ok", r["reason"]
    assert r["requested_type"] == "w4g64" and r["deterministic"] is False
    assert json.loads(r["tensor_types"]) == {"int4g64": 210, "f32": 1}
    # int4 packed in int32 + one f32 scale per 64 weights (symmetric: no zero point)
    assert 4.5 <= r["bpw"] <= 4.51
    hf = Path(r["artifact"]) / "hf"
    qc = json.loads((hf / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors" and qc["ignore"] == ["lm_head"]
    w = qc["config_groups"]["group_0"]["weights"]
    assert (w["num_bits"], w["group_size"], w["symmetric"], w["actorder"]) == (4, 64, True, None)
    q8 = make("Q8_0", "gguf", type="Q8_0")
    assert 5 * kld(q8["artifact"]) < kld(r["artifact"]) < 1.5


@pytest.mark.slow
def test_awq_w4g64_tiny_llama(qstudy, tmp_path, tiny_llama_dir, kld_tiny):
    from silentzone.config import QuantCfg
    from silentzone.models import Reference
    from silentzone.quantize import make_quant
    ref = Reference("tiny", "tiny-llama", tiny_llama_dir.parent, tiny_llama_dir,
                    tiny_llama_dir.parent / "absent.gguf", "float32")
    q = QuantCfg("awq-w4g64", "awq", {"bits": 4, "group_size": 64, "seq_len": 64})
    r = make_quant(qstudy, q, ref, root=tmp_path)
    assert r["status"] == "ok", r["reason"]
    assert r["requested_type"] == "w4g64-asym"
    # 2 layers x 7 Linear; AWQ is asymmetric: int4 + f32 scale + packed zero point per 64 weights
    assert json.loads(r["tensor_types"]) == {"f32": 1, "int4g64": 14}
    assert 4.5 < r["bpw"] < 5.1
    assert 0 < kld_tiny(r["artifact"], ref) < 2.0


@pytest.fixture(scope="module")
def kld_tiny(eval_text):
    import numpy as np
    import torch
    from silentzone.backends import open_model
    from silentzone.fidelity.kernels import token_kld

    def _kld(artifact, ref):
        ids = ref.tokenizer()(eval_text)["input_ids"]
        with torch.no_grad():
            r = ref.load_hf()(torch.tensor([ids])).logits[0].float().numpy()
        q = open_model(artifact).logits(ids)
        assert np.isfinite(q).all()
        return float(token_kld(r, q).mean())
    return _kld
