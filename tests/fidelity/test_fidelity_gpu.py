"""The kernels on a GPU: same numbers as on the CPU, and the cost of scoring next to a bare forward.

Runs where CUDA is (the lent GPU machine: `python3 -m pytest -m gpu tests/fidelity -s`). The model
is Gemma 3 270M's architecture with random weights (262,144-token vocabulary: the case where the
metric, not the model, dominates); the candidate is the same weights with noise added, so the two
disagree like a coarse quant. Nothing here needs the shipped weights.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

GEMMA3_270M = dict(vocab_size=262144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
                   num_attention_heads=4, num_key_value_heads=1, head_dim=256, sliding_window=512,
                   query_pre_attn_scalar=256, max_position_embeddings=32768, tie_word_embeddings=True,
                   layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 3)


@pytest.fixture(scope="module")
def models():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig
    torch.manual_seed(0)
    cfg = Gemma3TextConfig(**GEMMA3_270M)
    ref = Gemma3ForCausalLM(cfg).to("cuda", torch.bfloat16).eval()
    cand = Gemma3ForCausalLM(cfg).to("cuda", torch.bfloat16).eval()
    cand.load_state_dict(ref.state_dict())
    with torch.no_grad():
        for p in cand.parameters():
            if p.dim() == 2:
                p.add_(torch.randn_like(p) * p.float().std().to(p.dtype) * 0.3)
    return ref, cand


def _logits(model, x, first):
    with torch.no_grad():
        return model(x, logits_to_keep=x.shape[1] - first).logits[:, :-1]


def test_gpu_kernels_match_cpu_and_cost(models):
    from silentzone.fidelity.kernels import compact_token_metrics, summarize, token_metrics
    from silentzone.fidelity.store import encode_window
    ref, cand = models
    B, ctx = 8, 1024
    first = ctx // 2
    x = torch.randint(3, GEMMA3_270M["vocab_size"], (B, ctx), device="cuda",
                      generator=torch.Generator("cuda").manual_seed(1))
    zr, zc = _logits(ref, x, first), _logits(cand, x, first)
    targets = x[:, first + 1:].cpu().numpy()
    stores = [encode_window(zr[b], targets[b], rng=np.random.default_rng(b)) for b in range(B)]

    # the same numbers on the GPU as on the CPU, exact and compact
    g = token_metrics(zr[0], zc[0], targets[0])
    c = token_metrics(zr[0].float().cpu(), zc[0].float().cpu(), targets[0])
    gc = compact_token_metrics(stores[0], zc[0])
    cc = compact_token_metrics(stores[0], zc[0].float().cpu())
    for name in g:
        np.testing.assert_allclose(g[name], c[name], rtol=1e-3, atol=2e-5, err_msg=name)
        np.testing.assert_allclose(gc[name], cc[name], rtol=1e-3, atol=2e-5, err_msg=name)
    s_ex = summarize({k: np.stack([token_metrics(zr[b], zc[b], targets[b])[k] for b in range(B)])
                      for k in g})
    s_co = summarize({k: np.stack([compact_token_metrics(stores[b], zc[b])[k] for b in range(B)])
                      for k in g})
    assert s_ex["kld_mean"] > 0.05 and s_co["kld_mean"] == pytest.approx(s_ex["kld_mean"], rel=0.01)

    # throughput: bare forward vs forward + metrics, as score_store does it (one kernel call per
    # batch of windows), the reference already on the device
    flat = {k: torch.as_tensor(np.concatenate([st[k] for st in stores]), device="cuda") for k in stores[0]}
    exact_ref = zr.float().log_softmax(-1).half().reshape(-1, zr.shape[-1])
    flat_targets = torch.as_tensor(targets.reshape(-1), device="cuda")

    def timed(fn, reps=5):
        fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) / reps

    bare = timed(lambda: _logits(cand, x, first))

    def with_compact():
        z = _logits(cand, x, first)
        return compact_token_metrics(flat, z.reshape(-1, z.shape[-1]))

    def with_exact():
        z = _logits(cand, x, first)
        return token_metrics(exact_ref, z.reshape(-1, z.shape[-1]), flat_targets, flat["top1"],
                             flat["target_logp"])

    assert with_compact()["kld"].mean() == pytest.approx(s_co["kld_mean"], rel=1e-6)
    assert with_exact()["kld"].mean() == pytest.approx(s_ex["kld_mean"], rel=1e-3)
    t_co, t_ex = timed(with_compact), timed(with_exact)
    n = B * (ctx - 1 - first)
    print(f"\n{torch.cuda.get_device_name()}: Gemma3-270M shape, {B} x {ctx} windows, {n} scored tokens: "
          f"bare forward {n / bare:,.0f} tok/s; + compact metrics {n / t_co:,.0f} tok/s "
          f"({t_co / bare:.2f}x); + exact metrics {n / t_ex:,.0f} tok/s ({t_ex / bare:.2f}x)")
    assert t_co < 10 * bare and t_ex < 10 * bare


def test_score_store_on_gpu_equals_cpu_kernels(tmp_path):
    """score_store on CUDA (the next batch's forward queued before this one is scored on a side
    stream) gives what the CPU kernels give on the same logits, batch after batch, the exact tail
    fallback of _rest_logmass included: a peaked candidate puts less than 1e-3 of its mass outside
    the reference's top-k on many rows, so that sync and its rows run inside the pipelined loop."""
    from transformers import Qwen3Config, Qwen3ForCausalLM
    from silentzone.backends import HFModel
    from silentzone.fidelity.capture import capture, window_logits
    from silentzone.fidelity.kernels import _Cand, compact_token_metrics
    from silentzone.fidelity.score import score_store
    from silentzone.fidelity.store import Store
    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=5000, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                      max_position_embeddings=512, tie_word_embeddings=False)
    ref = Qwen3ForCausalLM(cfg).float().eval()
    cand = Qwen3ForCausalLM(cfg).float().eval()
    cand.load_state_dict(ref.state_dict())
    with torch.no_grad():
        ref.lm_head.weight.mul_(20.0)  # peaked: ~70% of rows take the fallback (on the CPU)
        cand.lm_head.weight.copy_(ref.lm_head.weight * 1.02)
    ids = np.random.default_rng(1).integers(0, 5000, 128 * 12)
    st = capture(HFModel(ref, "ref", "cpu"), ids, 128, tmp_path / "store", batch=4)
    m = HFModel(cand.cuda(), "cand", "cuda")
    got = score_store(m, Store(tmp_path / "store"), batch=4)
    windows, n_fallback, want = st.windows(), 0, {}
    for i in range(st.n_windows):
        z = window_logits(m, windows[i:i + 1], st.first)[0].float().cpu()
        r = st.read(i, "compact")
        c = _Cand(z, 0)
        rest = -torch.expm1(torch.logsumexp(c.logp(torch.from_numpy(np.asarray(r["top_idx"])).long()), -1))
        n_fallback += int((rest < 1e-3).sum())
        for k, v in compact_token_metrics(r, z).items():
            want.setdefault(k, []).append(v)
    assert n_fallback >= 20, f"the fallback path is not exercised ({n_fallback} rows)"
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k].shape == (12, 128 - 1 - st.first)
        # float32 log-sum-exp (different summation order on the GPU) shifts every log q by up to a
        # few ulp of lse (~2e-6 here); a batch scored against another batch's reference would be
        # off by the size of the values themselves (~5e-4)
        np.testing.assert_allclose(got[k], np.stack(v), rtol=1e-4, atol=2e-5, err_msg=k)


@pytest.mark.parametrize("V", [151936, 262144, 5000, 300])
def test_triton_row_stats_equal_torch(V):
    """The fused pass (lse, argmax, 512-id chunk maxima) gives torch's values: argmax and chunk
    maxima exactly (ties to the first index), the log-sum-exp to float32 rounding."""
    from silentzone.fidelity._triton import row_stats
    g = torch.Generator(device="cuda").manual_seed(V)
    for dtype in (torch.bfloat16, torch.float32):
        z = (torch.randn(257, V, device="cuda", generator=g) * 4).to(dtype)
        z[3, :] = 1.0                          # all tied: argmax 0
        z[5, V // 2] = z[5, V - 1] = 50.0      # a tie between two maxima: the first wins
        lse, arg, cmax = row_stats(z)
        want_lse = torch.logsumexp(z.float(), -1)
        torch.testing.assert_close(lse, want_lse, rtol=2e-6, atol=2e-6)
        assert torch.equal(arg, z.argmax(-1))
        assert arg[3] == 0 and arg[5] == V // 2
        main = V - V % 512
        assert torch.equal(cmax, z[:, :main].float().reshape(257, main // 512, 512).amax(-1))
        half = z[::2]                          # rows with a stride: still one pass, same values
        assert torch.equal(row_stats(half)[1], half.argmax(-1))
