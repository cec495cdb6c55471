"""Manifest rows (result contract QUANTS), effective recipes, recipe hashes and artifact hashes.

The effective recipe is the config's recipe with every default filled in (calibration sizes come
from the study profile), so the manifest lists every parameter that shaped the artifact. The recipe
hash covers the effective recipe, the reference's identity, the versions of the tools that make the
artifact, and RECIPE_VERSION (bumped when this code changes what a recipe means).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..io import sha256_dir, sha256_file, sha256_text  # noqa: F401 - re-exported
from ..provenance import canonical_json, hash_obj, versions
from . import gguf_file, hf, loadtime
from .gguf import IMATRIX_CTX
from .hf import DEFAULTS

RECIPE_VERSION = 1

# Tools whose version can change an artifact, per method.
TOOLS = {
    "gguf": ("llama_cpp_python", "gguf"),
    "gptq": ("llmcompressor", "compressed-tensors", "transformers", "torch", "datasets"),
    "awq": ("llmcompressor", "compressed-tensors", "transformers", "torch", "datasets"),
    "bnb": ("bitsandbytes", "transformers", "torch"),
    "torchao": ("torchao", "transformers", "torch"),
    "quanto": ("optimum-quanto", "transformers", "torch"),
    "hqq": ("hqq", "transformers", "torch"),
    "gguf_file": ("gguf",),  # an existing file: no tool makes it (its sha256 is recorded)
}
# Whether re-running a recipe gives a bit-identical artifact (see the README's determinism note).
DETERMINISTIC = {"gguf": True, "gptq": False, "awq": False, "bnb": True, "torchao": True,
                 "quanto": True, "hqq": True, "gguf_file": True}
EXTRA_COLUMNS = ("reference", "artifact", "bpw_all", "main_type", "fallback_frac", "fallback_tensors",
                 "check_kld", "check_tokens", "check_s", "deterministic", "reused", "cpu_kernel")


def effective_recipe(method: str, params: dict, profile) -> dict:
    """Config params with defaults filled in (profile.calib_samples sets calibration sizes)."""
    p = dict(params)
    if method == "gguf":
        if p.get("imatrix"):
            p.setdefault("imatrix_chunks", profile.calib_samples)
            p["imatrix_ctx"] = IMATRIX_CTX
        p.setdefault("pure", False)
    elif method in ("gptq", "awq"):
        for k, v in DEFAULTS[method].items():
            p.setdefault(k, v)
        p.setdefault("n_samples", profile.calib_samples)
    elif method == "bnb":
        if p["type"] == "int8":
            p.setdefault("threshold", 6.0)
        else:
            p.setdefault("double_quant", False)
            p.setdefault("compute_dtype", "float32")
    elif method == "torchao":
        if p["type"] == "int4_weight_only":
            p.setdefault("group_size", 64)
    elif method == "hqq":
        p.setdefault("group_size", 64)
        p.setdefault("axis", 1)
    return {"method": method, **dict(sorted(p.items()))}


def reference_identity(reference) -> dict:
    """Cheap identity of a reference: its name, dtype and the sizes of its weight files."""
    hf = sum(f.stat().st_size for f in Path(reference.hf_dir).glob("*.safetensors"))
    gguf = Path(reference.gguf)
    return {"name": reference.name, "dtype": reference.dtype, "hf_bytes": hf,
            "gguf_bytes": gguf.stat().st_size if gguf.is_file() else 0}


def tool_versions(method: str) -> dict:
    return versions(TOOLS[method])


def recipe_hash(recipe: dict, reference, method: str) -> str:
    return hash_obj({"recipe": recipe, "reference": reference_identity(reference),
                     "tools": tool_versions(method), "recipe_version": RECIPE_VERSION})


def requested_type(recipe: dict) -> str:
    m = recipe["method"]
    if m == "gguf":
        return recipe["type"]
    if m == "gguf_file":
        return gguf_file.requested_type(recipe)
    if m in ("gptq", "awq"):
        return hf.requested_type(m, recipe)
    return loadtime.requested_type(m, recipe)


def row(study: str, quant_id: str, recipe: dict, rhash: str, reference, *, status: str = "ok",
        reason: str = "", info: dict | None = None, nbytes: int = 0, sha256: str = "",
        wall_s: float | None = None, artifact: str = "", **extra) -> dict:
    """One QUANTS row (plus the EXTRA_COLUMNS); `info` is a read_back() dict."""
    info = info or {}
    method = recipe["method"]
    out = {
        "study": study, "quant_id": quant_id, "method": method, "recipe": canonical_json(recipe),
        "recipe_hash": rhash, "requested_type": requested_type(recipe),
        "tensor_types": json.dumps(info.get("tensor_types", {}), sort_keys=False),
        "bpw": _num(info.get("bpw")), "bytes": int(nbytes), "sha256": sha256,
        "tool_versions": canonical_json(tool_versions(method)),
        "wall_s": _num(wall_s), "status": status, "reason": reason,
        "reference": reference.name, "artifact": artifact, "bpw_all": _num(info.get("bpw_all")),
        "main_type": info.get("main_type", ""), "fallback_frac": _num(info.get("fallback_frac")),
        "fallback_tensors": extra.pop("fallback_tensors", None), "check_kld": math.nan,
        "check_tokens": 0, "check_s": math.nan, "deterministic": DETERMINISTIC[method], "reused": False,
        # bitsandbytes 4-bit on the CPU: which kernel its layers ran in the check (loadtime.bnb_cpu_kernels)
        "cpu_kernel": info.get("cpu_kernel", ""),
    }
    out.update(extra)
    return out


def _num(x) -> float:
    return math.nan if x is None else float(x)
