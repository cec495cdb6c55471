"""Load-time quants: the artifact is the recipe; the model is quantized each time it is loaded.

    model = load("bnb", {"type": "nf4", "double_quant": True}, reference_hf, "cpu")   # eval mode
    info = read_back(model, "bnb", recipe)        # tensor-type histogram and bits per weight
(`load`, `check_recipe` and `bnb_cpu_kernels` live in silentzone.backends.loadtime, with the engine
that runs these models, and are re-exported here.)

Methods (all run on CPU; recipe keys are config.METHODS[method]):
    bnb      bitsandbytes through transformers' BitsAndBytesConfig: nf4, fp4 (optionally double
             quantization of the absmax), int8 (LLM.int8 with an outlier `threshold`)
    torchao  torchao.quantize_: Int8WeightOnlyConfig; int4 as IntxWeightOnlyConfig(torch.int4,
             PerGroup(group_size)) (Int4WeightOnlyConfig has no CPU path)
    quanto   optimum-quanto quantize + freeze (int8/int4/int2 weights); scored under no_grad,
             never inference_mode (quanto int4 fails there)
    hqq      HQQ's own API (AutoHQQHFModel.quantize_model; transformers 5 has no HqqConfig path)
bitsandbytes 4-bit on the CPU has two kernels. On a CPU with AVX512-BF16 (`bitsandbytes.functional.
has_avx512bf16`) its Linear4bit repacks a layer's weight at the first forward for a fused kernel that
computes in bfloat16, and asserts that the output features are a multiple of 32; elsewhere it
dequantizes and multiplies in the compute dtype. Left to itself, the same quant therefore gives
different logits on different CPUs (measured: up to 9e-3 absolute per output on a 576x576 nf4 layer
with float32 compute, against exactly 0 for the plain kernel) and fails on layers of other widths.
`bnb_cpu_kernels` picks per layer: the plain kernel by default on every CPU (results independent of
the processor), the packed one only when asked (SILENTZONE_BNB_CPU_PACKED=1) and only where both the
CPU and the layer's shape allow it. The choice is recorded (`read_back`'s cpu_kernel, the quants.csv
column of the same name).

The lm_head (tied to the token embedding in SmolLM2 and Gemma3) stays in float for every method
here, as it does for GPTQ and AWQ; GGUF quantizes token_embd (see gguf.py).

Bits per weight for these in-memory quants: over the quantized Linear weights, bpw =
(nominal_bits * elements + 8 * bytes of every other stored tensor of the weight (scales, zeros,
absmax, nested absmax, codebooks)) / elements. The quantized values are counted at their nominal
width because some CPU kernels keep int4 values unpacked in int8 storage.
"""

from __future__ import annotations

from collections import Counter

# loading lives with the engine that runs these models (backends.loadtime); its names are kept here
from ..backends.loadtime import (METHODS, PACKED_BLOCK_N, PACKED_ENV, LoadtimeError,  # noqa: F401
                                 bnb_cpu_kernels, check_recipe, load, packed_possible)
from ..backends.loadtime import recipe_params as _params


def nominal_bits(method: str, recipe: dict) -> int:
    r = _params(recipe)
    if method == "bnb":
        return 8 if r["type"] == "int8" else 4
    if method == "torchao":
        return 8 if r["type"] == "int8_weight_only" else 4
    if method == "quanto":
        return {"int8": 8, "int4": 4, "int2": 2}[r["weights"]]
    if method == "hqq":
        return int(r["nbits"])
    raise LoadtimeError(f"unknown load-time method {method!r} (have {list(METHODS)})")


def requested_type(method: str, recipe: dict) -> str:
    r = _params(recipe)
    if method == "bnb":
        return r["type"] + ("-dq" if r.get("double_quant") else "")
    if method == "torchao":
        return "int8" if r["type"] == "int8_weight_only" else f"int4g{r.get('group_size', 64)}"
    if method == "quanto":
        return r["weights"]
    if method == "hqq":
        return f"{r['nbits']}bit-g{r.get('group_size', 64)}"
    raise LoadtimeError(f"unknown load-time method {method!r} (have {list(METHODS)})")


def _flat(t) -> list:
    """The plain tensors that store `t` (tensor subclasses are unpacked via __tensor_flatten__)."""
    import torch
    if t is None or not isinstance(t, torch.Tensor):
        return []
    if hasattr(t, "__tensor_flatten__") and type(t) not in (torch.Tensor, torch.nn.Parameter):
        try:
            names, _ = t.__tensor_flatten__()
        except Exception:  # noqa: BLE001 - a subclass that cannot be flattened is counted as is
            return [t]
        if names:
            return [x for n in names for x in _flat(getattr(t, n))]
    return [t]


def _stored(module) -> tuple[list, int] | None:
    """(stored tensors, weight elements) of a quantized Linear-like module, or None if not quantized."""
    import torch
    name = type(module).__name__
    if name == "HQQLinear":
        meta = getattr(module, "meta", {}) or {}
        extra = [v for k, v in meta.items() if isinstance(v, torch.Tensor)
                 and k in ("scale", "zero", "scale_q", "zero_q", "meta_scale", "meta_zero")]
        shape = meta.get("shape")
        n = int(torch.Size(shape).numel()) if shape is not None else module.W_q.numel()
        return [module.W_q, *extra], n
    w = getattr(module, "weight", None)
    if w is None or not isinstance(w, torch.Tensor):
        return None
    if name in ("Linear4bit",):
        qs = w.quant_state
        extra = [v for v in qs.as_dict(packed=False).values() if isinstance(v, torch.Tensor)]
        return [w.data, *extra], int(torch.Size(qs.shape).numel())
    if name in ("Linear8bitLt",):
        scb = getattr(w, "SCB", None)
        return [w.data] + ([scb] if scb is not None else []), w.numel()
    flat = _flat(w)
    if len(flat) > 1 or (flat and flat[0] is not w and not w.is_floating_point()):
        return flat, w.numel()
    if hasattr(module, "qweight") or type(w).__module__.startswith("optimum.quanto"):
        return flat, w.numel()
    return None


def read_back(model, method: str, recipe: dict) -> dict:
    """Tensor-type histogram and bits per weight of an in-memory quantized model (see module doc)."""
    import torch
    bits = nominal_bits(method, recipe)
    label = requested_type(method, recipe)
    counts, elems, stored_bits = Counter(), Counter(), 0.0
    quantized_params = set()
    for _, mod in model.named_modules():
        s = _stored(mod)
        if s is None:
            continue
        tensors, n = s
        data = max(tensors, key=lambda t: t.numel())
        meta_bytes = sum(t.numel() * t.element_size() for t in tensors if t is not data)
        stored_bits += bits * n + 8 * meta_bytes
        counts[label] += 1
        elems[label] += n
        for p in mod.parameters(recurse=False):
            quantized_params.add(id(p))
    float_bytes = 0
    for _, p in model.named_parameters():  # deduplicated: a tied embedding/lm_head counts once
        if p.dim() >= 2 and id(p) not in quantized_params and p.is_floating_point() and \
                type(p.data) in (torch.Tensor,):
            ty = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}.get(p.dtype, str(p.dtype))
            counts[ty] += 1
            elems[ty] += p.numel()
            float_bytes += p.numel() * p.element_size()
    nq = elems[label]
    total = sum(elems.values())
    return {
        "tensor_types": dict(sorted(counts.items(), key=lambda kv: -elems[kv[0]])),
        "elements": dict(elems),
        "bpw": stored_bits / nq if nq else None,
        "bpw_all": (stored_bits + 8 * float_bytes) / total if total else None,
        "main_type": max(elems, key=elems.get) if elems else "",
        "fallback_frac": None,
        "cpu_kernel": getattr(model, "silentzone_cpu_kernel", ""),
    }
