"""Load-time quants: the artifact is the recipe; the model is quantized each time it is loaded.

    model = load("bnb", {"type": "nf4", "double_quant": True}, reference_hf, "cpu")   # eval mode
    info = read_back(model, "bnb", recipe)        # tensor-type histogram and bits per weight

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

import os
from collections import Counter

METHODS = ("bnb", "torchao", "quanto", "hqq")
PACKED_BLOCK_N = 32  # bitsandbytes' packed CPU layout needs out_features % 32 == 0 (and even in_features)
PACKED_ENV = "SILENTZONE_BNB_CPU_PACKED"  # "1": use the packed AVX512-BF16 kernel where it can run


class LoadtimeError(ValueError):
    """Unknown load-time method or recipe value (one line)."""


def _params(recipe: dict) -> dict:
    return {k: v for k, v in dict(recipe).items() if k != "method"}


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


def _check(method: str, recipe: dict) -> None:
    """Validate before any work: one-line LoadtimeError naming the method and key."""
    from ..config import METHODS as SPEC
    if method not in METHODS:
        raise LoadtimeError(f"unknown load-time method {method!r} (have {list(METHODS)})")
    spec = SPEC[method]
    r = _params(recipe)
    for k, v in r.items():
        if k not in spec:
            raise LoadtimeError(f"{method}: unknown recipe key {k!r} (expected one of {sorted(spec)})")
        check = spec[k][2]
        verdict = check(v) if check else True
        if verdict is not True:
            raise LoadtimeError(f"{method}.{k}: {verdict}")
    for k, (_, required, _) in spec.items():
        if required and k not in r:
            raise LoadtimeError(f"{method}: missing recipe key {k!r}")


def load(method: str, recipe: dict, reference_hf, device: str = "cpu", dtype: str | None = None):
    """The reference HF model quantized by `method` with `recipe`, in eval mode, on `device` (cpu
    or cuda: bitsandbytes then runs its CUDA kernels). `dtype` ("float32" | "bfloat16") is that of
    the unquantized parts; default float32 on the CPU, bfloat16 on a GPU."""
    _check(method, recipe)
    import torch
    from transformers import AutoModelForCausalLM
    from ..backends import torch_dtype
    r = _params(recipe)
    dtype = torch_dtype(device, dtype)
    if method == "bnb":
        from transformers import BitsAndBytesConfig
        cdt = getattr(torch, r.get("compute_dtype", "float32"))
        if r["type"] == "int8":
            cfg = BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=float(r.get("threshold", 6.0)))
        else:
            cfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=r["type"],
                                     bnb_4bit_use_double_quant=bool(r.get("double_quant", False)),
                                     bnb_4bit_compute_dtype=cdt)
        model = AutoModelForCausalLM.from_pretrained(reference_hf, quantization_config=cfg, dtype=dtype,
                                                     device_map=device)
        if r["type"] != "int8" and str(device) == "cpu":
            bnb_cpu_kernels(model)
        return model.eval()
    model = AutoModelForCausalLM.from_pretrained(reference_hf, dtype=dtype).to(device).eval()
    if method == "torchao":
        from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig, quantize_
        from torchao.quantization.granularity import PerGroup
        if r["type"] == "int8_weight_only":
            cfg = Int8WeightOnlyConfig()
        else:
            cfg = IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(r.get("group_size", 64)))
        quantize_(model, cfg, filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear) and
                  not fqn.endswith("lm_head"))
    elif method == "quanto":
        from optimum.quanto import freeze, qint2, qint4, qint8, quantize
        w = {"int8": qint8, "int4": qint4, "int2": qint2}[r["weights"]]
        quantize(model, weights=w, exclude=["lm_head"])
        freeze(model)
    elif method == "hqq":
        from hqq.core.quantize import BaseQuantizeConfig, HQQBackend, HQQLinear
        from hqq.models.hf.base import AutoHQQHFModel
        HQQLinear.set_backend(HQQBackend.PYTORCH)
        cfg = BaseQuantizeConfig(nbits=int(r["nbits"]), group_size=int(r.get("group_size", 64)),
                                 axis=int(r.get("axis", 1)))
        AutoHQQHFModel.quantize_model(model, quant_config=cfg, compute_dtype=dtype, device=device)
    return model.eval()


def packed_possible(out_features: int, in_features: int) -> bool:
    """Whether bitsandbytes' packed CPU layout can hold a [out, in] 4-bit weight."""
    return out_features % PACKED_BLOCK_N == 0 and in_features % 2 == 0


def bnb_cpu_kernels(model, packed: bool | None = None, fused_cpu: bool | None = None) -> str:
    """Choose the CPU kernel of every bitsandbytes 4-bit layer of `model`; return the record.

    packed: None reads SILENTZONE_BNB_CPU_PACKED ("1" = prefer the packed kernel; default the plain
    one). fused_cpu: whether this CPU has the packed kernel (None: ask bitsandbytes). A layer gets the
    packed kernel only when packed is asked, the CPU has it and `packed_possible` holds for its shape.
    Sets each layer's `support_avx512bf16_for_cpu` (what bitsandbytes' Linear4bit.forward reads) and
    model.silentzone_cpu_kernel to the record, e.g. "plain 210" or "packed 208, plain 2 (avx512_bf16)"
    (the CPU feature is named when present, since it decides what "packed" means).
    """
    from bitsandbytes.functional import has_avx512bf16
    from bitsandbytes.nn import Linear4bit
    if packed is None:
        packed = os.environ.get(PACKED_ENV, "0") == "1"
    if fused_cpu is None:
        fused_cpu = bool(has_avx512bf16())
    counts = Counter()
    for mod in model.modules():
        if not isinstance(mod, Linear4bit):
            continue
        qs = mod.weight.quant_state
        if getattr(qs, "packing_format_for_cpu", False):
            raise LoadtimeError("bnb_cpu_kernels must run before the first forward (weights already packed)")
        n, k = (int(v) for v in qs.shape)
        use = bool(packed and fused_cpu and packed_possible(n, k))
        mod.support_avx512bf16_for_cpu = use
        counts["packed" if use else "plain"] += 1
    record = ", ".join(f"{k} {counts[k]}" for k in ("packed", "plain") if counts[k])
    if fused_cpu and record:
        record += " (avx512_bf16)"
    model.silentzone_cpu_kernel = record
    return record


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
