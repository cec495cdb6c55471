"""GPTQ and AWQ through llm-compressor (oneshot), saved in compressed-tensors format.

    quantize("gptq", recipe, reference, out_dir, seed=0)   # writes an HF dir transformers loads
    info = read_back(out_dir)                              # histogram, bits per weight

The float32 reference HF model is calibrated on `n_samples` windows of `seq_len` tokens from the
calibration half of `corpus` (calib.calibration_windows). Every Linear except lm_head (tied to the
token embedding) is quantized to int weights (W<bits>A16) with groups of `group_size` columns
(-1: one scale per output channel). Group sizes must divide the input widths (576, 1536 for
SmolLM2; 640, 2048 for Gemma3): 32 or 64 work, 128 does not.

AWQ: `AWQModifier` (scale search) followed by `QuantizationModifier` (llm-compressor 0.14 splits
them). On CPU its IntermediatesCache.pin_memory needs a CUDA device, so it is patched to a no-op
(pinning only speeds up host-to-device copies, which do not happen on CPU).

Determinism: threads and seeds are pinned, but GPTQ/AWQ results are not bit-reproducible between
runs (float summation order in the Hessian/activation statistics); the manifest says so
(`deterministic` = False) and tests use tolerances.

Bits per weight (compressed-tensors), exact definition: over the quantized Linear weights, bpw =
8 * bytes(weight_packed + weight_scale + weight_zero_point + weight_g_idx, as stored in the
safetensors files) / elements(weight_shape). The float embedding is not counted (see bpw_all).
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter, defaultdict
from pathlib import Path

DEFAULTS = {
    "gptq": {"group_size": 64, "act_order": False, "symmetric": True, "corpus": "wiki", "seq_len": 512,
             "dampening": 0.01},
    "awq": {"group_size": 64, "symmetric": False, "corpus": "wiki", "seq_len": 512},
}


def requested_type(method: str, recipe: dict) -> str:
    """'w4g64', 'w8ch' (per channel), with '-act' for act-order and '-asym' for asymmetric."""
    gs = recipe.get("group_size", DEFAULTS[method]["group_size"])
    s = f"w{recipe['bits']}" + ("ch" if gs == -1 else f"g{gs}")
    if recipe.get("act_order"):
        s += "-act"
    if not recipe.get("symmetric", DEFAULTS[method]["symmetric"]):
        s += "-asym"
    return s


def _scheme(recipe: dict, method: str):
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    gs = int(recipe["group_size"])
    kw = dict(num_bits=int(recipe["bits"]), type="int", symmetric=bool(recipe["symmetric"]))
    if gs == -1:
        kw.update(strategy="channel")
    else:
        kw.update(strategy="group", group_size=gs)
    if method == "gptq":
        kw.update(actorder="group" if recipe.get("act_order") else None)
    return QuantizationScheme(targets=["Linear"], weights=QuantizationArgs(**kw))


@contextlib.contextmanager
def _cpu_pin_memory_noop():
    """llm-compressor's AWQ pins cached activations, which needs an accelerator: no-op on CPU."""
    import torch
    from llmcompressor.pipelines.cache import IntermediatesCache
    if torch.cuda.is_available():
        yield
        return
    orig = IntermediatesCache.pin_memory
    IntermediatesCache.pin_memory = lambda self, *a, **k: None
    try:
        yield
    finally:
        IntermediatesCache.pin_memory = orig


def quantize(method: str, recipe: dict, reference, out_dir: Path, seed: int = 0) -> None:
    """Run llm-compressor oneshot and save the compressed model + tokenizer into out_dir."""
    import torch
    from datasets import Dataset
    from llmcompressor import oneshot
    from .calib import calibration_windows
    torch.manual_seed(seed)
    tok = reference.tokenizer()
    n, L = int(recipe["n_samples"]), int(recipe["seq_len"])
    windows = calibration_windows(tok, recipe["corpus"], n, L)
    ds = Dataset.from_dict({"input_ids": windows, "attention_mask": [[1] * len(w) for w in windows]})
    model = reference.load_hf()
    scheme = _scheme(recipe, method)
    if method == "gptq":
        from llmcompressor.modifiers.gptq import GPTQModifier
        # actorder set on the modifier too: its default ("static") would override the scheme's None
        mods = [GPTQModifier(config_groups={"group_0": scheme}, ignore=["lm_head"],
                             actorder="group" if recipe.get("act_order") else None,
                             dampening_frac=float(recipe["dampening"]))]
    elif method == "awq":
        from llmcompressor.modifiers.transform.awq import AWQModifier
        from llmcompressor.modifiers.quantization import QuantizationModifier
        mods = [AWQModifier(), QuantizationModifier(config_groups={"group_0": scheme}, ignore=["lm_head"])]
    else:
        raise ValueError(f"hf.quantize: unknown method {method!r} (gptq | awq)")
    with _cpu_pin_memory_noop():
        oneshot(model=model, dataset=ds, recipe=mods, num_calibration_samples=n, max_seq_length=L,
                shuffle_calibration_samples=False, log_dir=None, output_dir=None)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, save_compressed=True)
    tok.save_pretrained(out_dir)


def read_back(hf_dir: Path) -> dict:
    """Histogram and bits per weight from the saved compressed-tensors safetensors (module doc)."""
    import torch
    from safetensors import safe_open
    hf_dir = Path(hf_dir)
    cfg = json.loads((hf_dir / "config.json").read_text()).get("quantization_config", {}) or {}
    groups = cfg.get("config_groups", {})
    w = next(iter(groups.values()), {}).get("weights", {}) if groups else {}
    label = (f"int{w.get('num_bits')}" + (f"g{w['group_size']}" if w.get("group_size") else "ch")
             if w else "quantized")
    mods: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    for f in sorted(hf_dir.glob("*.safetensors")):
        with safe_open(f, "pt") as st:
            for k in st.keys():
                prefix, _, leaf = k.rpartition(".")
                mods[prefix][leaf] = st.get_tensor(k)
    counts, elems, nbytes, float_bytes = Counter(), Counter(), Counter(), 0
    for prefix, ts in mods.items():
        if "weight_scale" in ts:
            shape = ts.get("weight_shape")
            n = int(torch.Size(shape.tolist()).numel()) if shape is not None else \
                ts.get("weight", ts.get("weight_packed")).numel()
            b = sum(t.numel() * t.element_size() for k, t in ts.items()
                    if k.startswith("weight") and k != "weight_shape")
            counts[label] += 1
            elems[label] += n
            nbytes[label] += b
        elif "weight" in ts and ts["weight"].dim() == 2:
            t = ts["weight"]
            ty = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}.get(t.dtype, str(t.dtype))
            counts[ty] += 1
            elems[ty] += t.numel()
            float_bytes += t.numel() * t.element_size()
    nq, total = elems[label], sum(elems.values())
    return {
        "tensor_types": dict(sorted(counts.items(), key=lambda kv: -elems[kv[0]])),
        "elements": dict(elems),
        "bpw": 8 * nbytes[label] / nq if nq else None,
        "bpw_all": 8 * (nbytes[label] + float_bytes) / total if total else None,
        "main_type": max(elems, key=elems.get) if elems else "",
        "fallback_frac": None,
    }
