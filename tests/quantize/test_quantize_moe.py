"""A mixture-of-experts model in the transformers pipeline (toy Qwen3.5-MoE, the architecture of
Qwen3.6-35B-A3B, random weights, CPU): what a load-time quant leaves in float, and likelihood
scoring with a cache that cannot be repeated (Gated DeltaNet layers)."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def moe_dir(tmp_path_factory):
    from transformers import Qwen3_5MoeForCausalLM, Qwen3_5MoeTextConfig
    torch.manual_seed(0)
    cfg = Qwen3_5MoeTextConfig(vocab_size=512, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                               num_key_value_heads=2, head_dim=32, moe_intermediate_size=64,
                               shared_expert_intermediate_size=64, num_experts=4, num_experts_per_tok=2,
                               tie_word_embeddings=False)
    d = tmp_path_factory.mktemp("moe") / "hf"
    Qwen3_5MoeForCausalLM(cfg).save_pretrained(d)
    return d


def test_bnb_leaves_fused_experts_in_float_and_read_back_counts_them(moe_dir):
    """bitsandbytes replaces nn.Linear only; transformers 5 keeps each layer's experts as fused 3-D
    tensors, so they stay float32 here. read_back must count them in bpw_all (it counted only 2-D
    tensors before, which hid most of an MoE's weights)."""
    from silentzone.quantize.loadtime import load, read_back
    model = load("bnb", {"type": "nf4"}, moe_dir, "cpu")
    info = read_back(model, "bnb", {"type": "nf4"})
    experts = [p for n, p in model.named_parameters() if ".experts." in n]
    assert experts and all(p.dim() == 3 and p.dtype == torch.float32 for p in experts)
    floats = [p for p in model.parameters() if p.dim() >= 2 and p.dtype == torch.float32]
    # every float matrix (experts, router, conv, embedding, lm_head) is counted, once each
    assert info["elements"]["f32"] == sum(p.numel() for p in floats)
    assert info["tensor_types"]["f32"] == len(floats) and len(experts) == 2 * 4
    nq, nf = info["elements"]["nf4"], info["elements"]["f32"]
    assert 4.5 <= info["bpw"] < 4.6  # nf4 codes + one float32 absmax per 64 weights: 4 + 32/64
    # bpw_all is the element-weighted mean of nf4's bpw and 32 bits for the float matrices
    assert info["bpw_all"] == pytest.approx((info["bpw"] * nq + 32 * nf) / (nq + nf), rel=1e-9)


def test_shared_context_scoring_works_without_a_repeatable_cache(moe_dir):
    """Shared-context multiple choice on a hybrid cache (no batch_repeat_interleave on its linear-
    attention layers) falls back to one context pass per choice, and equals full passes."""
    from silentzone.backends import open_model
    from silentzone.bench.mc import full_logits, score_mc, shared_logits
    m = open_model(moe_dir, device="cpu")
    ctx, conts = [5, 17, 99, 3, 42, 7], [[11, 12], [13], [14, 15, 16]]
    c1, o1 = shared_logits(m, ctx, conts)
    c2, o2 = full_logits(m, ctx, conts)
    np.testing.assert_allclose(c1, c2, atol=1e-4)
    for a, b in zip(o1, o2):
        np.testing.assert_allclose(a, b, atol=1e-4)
    r = score_mc(m, ctx, conts, gold=1, n_chars=[2, 1, 3])
    assert np.isfinite(r["ll"]).all() and r["pred"] in (0, 1, 2)
