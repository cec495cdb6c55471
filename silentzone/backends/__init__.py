"""Scoring backends: one interface (`Model`) over llama.cpp (GGUF) and transformers (HF formats).

    m = open_model(path_or_artifact_dir)    # GGUF file, HF dir, or a quant artifact dir
    logits = m.logits(ids)                   # float32 [len(ids), vocab], fresh context each call
    m.vocab_size, m.name, m.device, m.kind ("llama.cpp" | "transformers", for the record)

One class per engine, with the same methods (base.Model): llama_cpp.LlamaCppModel and
hf.HFModel (load-time quants are transformers models, loaded by loadtime.load). Callers never
branch on the engine: what differs (tokenizer, scoring windows, where logits land, multiple-choice
scoring, generation) is a method of the model.

A quant artifact directory (written by `silentzone.quantize`) holds artifact.json:
    {"format": "gguf", "file": "model.gguf"}                       llama.cpp
    {"format": "hf", "dir": "hf"}                                  saved quantized HF model
    {"format": "loadtime", "method": "bnb", "recipe": {...},
     "reference_hf": "/path/to/hf-f32"}                            quantized when loaded
"""

from __future__ import annotations

import json
from pathlib import Path

from . import loadtime
from .base import BackendError, Model, torch_dtype, torch_threads
from .hf import HFModel, load_hf
from .llama_cpp import LlamaCppModel

__all__ = ["open_model", "reference_source", "BackendError", "Model", "LlamaCppModel", "HFModel",
           "ENGINES", "torch_dtype", "torch_threads"]

ENGINES = ("llama.cpp", "transformers")


def open_model(path: str | Path, device: str = "cpu", n_ctx: int = 2048, threads: int | None = None,
               name: str = "", dtype: str | None = None, kv_cache: str | None = None) -> Model:
    """Open a GGUF file, an HF directory or a quant artifact directory for scoring.

    device: cpu or cuda[:i] (llama.cpp offloads every layer when it is a CUDA build). dtype: the
    torch dtype of HF models and of load-time quants' unquantized parts, "float32" or "bfloat16";
    default float32 on the CPU and bfloat16 on a GPU. kv_cache: the KV cache type of a llama.cpp
    model, "f16" (the engine's default, what quants keep) or "f32" (a float reference; the study's
    reference.kv_cache); transformers keeps its cache in the model's dtype."""
    path = Path(path)
    name = name or path.name
    if path.suffix == ".gguf":
        if not path.is_file():
            raise BackendError(f"{path}: GGUF file not found")
        return _llama(path, n_ctx, threads, name, device, kv_cache)
    if not path.is_dir():
        raise BackendError(f"{path}: not a GGUF file or a model directory")
    art = path / "artifact.json"
    meta = json.loads(art.read_text()) if art.is_file() else None
    if meta and meta.get("format") == "gguf":
        return _llama(path / meta["file"], n_ctx, threads, name, device, kv_cache)
    if threads:
        torch_threads(threads)
    if meta:
        fmt = meta.get("format")
        if fmt == "hf":
            return load_hf(path / meta["dir"], device, name, dtype)
        if fmt == "loadtime":
            model = loadtime.load(meta["method"], meta["recipe"], meta["reference_hf"], device, dtype)
            return HFModel(model, name, device)
        raise BackendError(f"{art}: unknown artifact format {fmt!r}")
    if (path / "config.json").is_file():
        return load_hf(path, device, name, dtype)
    raise BackendError(f"{path}: no artifact.json or config.json")


def llama_offloads() -> bool:
    """Whether the installed llama.cpp can offload layers to a GPU (a CUDA build). A CPU build says
    False, and so does an import that fails."""
    try:
        import llama_cpp
        return bool(llama_cpp.llama_supports_gpu_offload())
    except Exception:  # noqa: BLE001 - no llama.cpp, or an old binding: no offload
        return False


def reference_path(ref, device: str = "cpu") -> str:
    """What the float reference is scored from: its GGUF through llama.cpp on the CPU and on a GPU
    where llama.cpp is a CUDA build (the same engine, weights and F32 KV cache as the captures), else
    its HF export through transformers (opened in float32: the reference stays float)."""
    if str(device) == "cpu" or llama_offloads():
        return str(ref.gguf)
    return str(ref.hf_dir)


def _llama(gguf: Path, n_ctx: int, threads: int | None, name: str, device: str,
           kv_cache: str | None = None) -> LlamaCppModel:
    m = LlamaCppModel(gguf, n_ctx=n_ctx, threads=threads, name=name, device=device, kv_cache=kv_cache)
    if threads:  # after the load, so that the import does not hold the GIL during it
        torch_threads(threads, background=True)
    return m


def reference_source(reference, engine: str | None = None, device: str = "cpu") -> Path:
    """The file of a float reference (models.resolve) that `engine` opens: its F32/BF16 GGUF for
    llama.cpp (the default on the CPU), its HF export for transformers (the default on a GPU)."""
    engine = engine or ("llama.cpp" if str(device) == "cpu" else "transformers")
    if engine not in ENGINES:
        raise BackendError(f"engine must be one of {list(ENGINES)}, got {engine!r}")
    return reference.gguf if engine == "llama.cpp" else reference.hf_dir
