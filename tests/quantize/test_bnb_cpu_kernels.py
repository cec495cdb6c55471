"""bitsandbytes 4-bit on the CPU: the kernel choice of `loadtime.bnb_cpu_kernels` (issue 22).

bitsandbytes 0.50.2 repacks a Linear4bit weight for a fused bfloat16 kernel at the first forward when
the CPU has AVX512-BF16, and asserts out_features % 32 == 0 there. These tests run the same layers
with the packed kernel forced off and (where the CPU has it) on, on a shape that is not a multiple of
32, and compare each output with a dequantization done here by hand from the stored codes. They pass
or fail the same way on CPUs with and without AVX512-BF16: where a branch depends on the CPU, each
side asserts what must hold on it.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
bnb = pytest.importorskip("bitsandbytes")

from silentzone.quantize.loadtime import bnb_cpu_kernels, packed_possible  # noqa: E402

SHAPES = ((40, 64), (64, 128))  # (out, in): 40 is not a multiple of 32, 64 is


def _layer(out_f: int, in_f: int, quant_type: str, seed: int):
    """A bitsandbytes Linear4bit [out_f, in_f], quantized on the CPU, float32 compute, eval mode."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out_f, in_f, generator=g) / in_f ** 0.5
    lin = bnb.nn.Linear4bit(in_f, out_f, bias=False, compute_dtype=torch.float32, quant_type=quant_type,
                            compress_statistics=False)
    # plain float32 absmax (no double quantization), so that `_by_hand` can read it directly
    lin.weight = bnb.nn.Params4bit(w, requires_grad=False, quant_type=quant_type,
                                   compress_statistics=False)._quantize("cpu")
    return lin.eval()


def _by_hand(lin) -> torch.Tensor:
    """The float32 weight from the stored 4-bit codes: two codes per byte (high nibble first), each
    looked up in the quant state's code table and scaled by its block's absmax."""
    qs = lin.weight.quant_state
    assert not qs.nested
    b = lin.weight.data.reshape(-1).to(torch.int64)
    idx = torch.stack([b >> 4, b & 0xF], dim=1).reshape(-1)
    n = int(torch.Size(qs.shape).numel())
    vals = qs.code.float()[idx[:n]]
    scale = qs.absmax.float().repeat_interleave(qs.blocksize)[:n]
    return (vals * scale).reshape(qs.shape)


def _model(quant_type: str = "nf4"):
    return torch.nn.Sequential(*[_layer(o, i, quant_type, seed) for seed, (o, i) in enumerate(SHAPES)]).eval()


def _run_each(model, x_by_layer):
    with torch.no_grad():
        return [layer(x) for layer, x in zip(model, x_by_layer)]


def _inputs():
    g = torch.Generator().manual_seed(7)
    return [torch.randn(5, i, generator=g) for _, i in SHAPES]


def test_packed_possible_rule():
    # bitsandbytes' _convert_weight_packed_for_cpu: N % 32 == 0 and K even
    assert packed_possible(64, 128) and packed_possible(32, 2)
    assert not packed_possible(40, 64) and not packed_possible(64, 127) and not packed_possible(4, 128)


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_plain_kernel_is_exact_dequantization(quant_type):
    """Default (packed not asked): every layer plain on any CPU; outputs equal x @ W_hand^T in float32."""
    model = _model(quant_type)
    record = bnb_cpu_kernels(model, packed=False)
    assert record.split(" (")[0] == "plain 2"
    xs = _inputs()
    exact = [x @ _by_hand(layer).T for layer, x in zip(model, xs)]
    for layer, e, y in zip(model, exact, _run_each(model, xs)):
        assert not getattr(layer.weight.quant_state, "packing_format_for_cpu", False)
        torch.testing.assert_close(y, e, rtol=1e-5, atol=1e-5)


def test_packed_asked_on_a_packed_cpu_keeps_odd_shapes_plain():
    """The failure of the issue, forced on any CPU: a CPU that claims the packed kernel and a layer
    of 40 outputs. Before the fix bitsandbytes asserted 'N must be divisible by block_n' here."""
    layer = _layer(40, 64, "nf4", 0)
    model = torch.nn.Sequential(layer).eval()
    assert bnb_cpu_kernels(model, packed=True, fused_cpu=True) == "plain 1 (avx512_bf16)"
    assert layer.support_avx512bf16_for_cpu is False
    x = _inputs()[0]
    exact = x @ _by_hand(layer).T
    with torch.no_grad():
        torch.testing.assert_close(model(x), exact, rtol=1e-5, atol=1e-5)


def test_packed_kernel_where_the_cpu_has_it():
    """packed=True with the real CPU: on an AVX512-BF16 CPU the 64-wide layer runs packed (its state
    says so after the forward; bfloat16 compute, so close to but not equal to the plain result) and
    the 40-wide one plain; without AVX512-BF16 both run plain and stay exact."""
    from bitsandbytes.functional import has_avx512bf16
    fused = bool(has_avx512bf16())
    model = _model("nf4")
    record = bnb_cpu_kernels(model, packed=True)
    xs = _inputs()
    exact = [x @ _by_hand(layer).T for layer, x in zip(model, xs)]  # before the forward repacks the codes
    ys = _run_each(model, xs)
    odd, even = model
    torch.testing.assert_close(ys[0], exact[0], rtol=1e-5, atol=1e-5)  # 40 wide: plain on every CPU
    if fused:
        assert record == "packed 1, plain 1 (avx512_bf16)"
        assert even.weight.quant_state.packing_format_for_cpu is True
        err = (ys[1] - exact[1]).abs().max().item()
        assert 0 < err < 0.05 * exact[1].abs().max().item()  # bfloat16 rounding, not garbage
    else:
        assert record == "plain 2"
        assert not getattr(even.weight.quant_state, "packing_format_for_cpu", False)
        torch.testing.assert_close(ys[1], exact[1], rtol=1e-5, atol=1e-5)


def test_environment_switch(monkeypatch):
    """SILENTZONE_BNB_CPU_PACKED=1 asks for the packed kernel; anything else leaves every layer plain."""
    monkeypatch.setenv("SILENTZONE_BNB_CPU_PACKED", "1")
    assert bnb_cpu_kernels(_model(), fused_cpu=True) == "packed 1, plain 1 (avx512_bf16)"
    monkeypatch.setenv("SILENTZONE_BNB_CPU_PACKED", "0")
    assert bnb_cpu_kernels(_model(), fused_cpu=True) == "plain 2 (avx512_bf16)"
    monkeypatch.delenv("SILENTZONE_BNB_CPU_PACKED")
    assert bnb_cpu_kernels(_model(), fused_cpu=False) == "plain 2"
