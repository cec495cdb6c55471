"""Loading a load-time quant: the reference HF model quantized by a method and recipe as it loads.

    model = load("bnb", {"type": "nf4", "double_quant": True}, reference_hf, "cpu")   # eval mode

Methods, their recipes and the bitsandbytes CPU kernel choice are described in
silentzone/quantize/loadtime.py, which makes these artifacts and reads their tensors back; the
loading lives here, with the engine that runs them (transformers), so that opening a model never
imports the quantize stage.
"""

from __future__ import annotations

from collections import Counter

from ..config import METHODS as RECIPE_KEYS
from ..errors import SilentzoneError
from ..settings import current
from .base import torch_dtype

METHODS = ("bnb", "torchao", "quanto", "hqq")
PACKED_BLOCK_N = 32  # bitsandbytes' packed CPU layout needs out_features % 32 == 0 (and even in_features)
PACKED_ENV = "SILENTZONE_BNB_CPU_PACKED"  # "1": use the packed AVX512-BF16 kernel where it can run


class LoadtimeError(SilentzoneError, ValueError):
    """Unknown load-time method or recipe value (one line)."""


def recipe_params(recipe: dict) -> dict:
    """The recipe without its `method` key."""
    return {k: v for k, v in dict(recipe).items() if k != "method"}


def check_recipe(method: str, recipe: dict) -> None:
    """Validate before any work: one-line LoadtimeError naming the method and key."""
    if method not in METHODS:
        raise LoadtimeError(f"unknown load-time method {method!r} (have {list(METHODS)})")
    spec = RECIPE_KEYS[method]
    r = recipe_params(recipe)
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
    check_recipe(method, recipe)
    import torch
    from transformers import AutoModelForCausalLM
    r = recipe_params(recipe)
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
        packed = current().bnb_cpu_packed
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
