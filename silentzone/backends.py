"""Scoring backends: one interface over llama.cpp (GGUF) and transformers (HF formats).

    m = open_model(path_or_artifact_dir)    # GGUF file, HF dir, or a quant artifact dir
    logits = m.logits(ids)                   # float32 [len(ids), vocab], fresh context each call
    m.vocab_size, m.kind ("llama.cpp" | "transformers"), m.name

A quant artifact directory (written by `silentzone.quantize`) holds artifact.json:
    {"format": "gguf", "file": "model.gguf"}                       llama.cpp
    {"format": "hf", "dir": "hf"}                                  saved quantized HF model
    {"format": "loadtime", "method": "bnb", "recipe": {...},
     "reference_hf": "/path/to/hf-f32"}                            quantized when loaded
Load-time methods (bitsandbytes, torchao, quanto, hqq) are applied by
`silentzone.quantize.loadtime.load(method, recipe, reference_hf, device)`.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

import numpy as np


class BackendError(RuntimeError):
    """A model cannot be opened or scored (one-line message)."""


class LlamaCppModel:
    kind = "llama.cpp"

    def __init__(self, gguf: Path, n_ctx: int = 2048, threads: int | None = None, name: str = "",
                 device: str = "cpu"):
        from .logits import load_llama
        self.path = Path(gguf)
        self.name = name or self.path.stem
        self.n_ctx = n_ctx
        self.device = device
        self.llm = load_llama(self.path, n_ctx=n_ctx, threads=threads,
                              n_gpu_layers=0 if str(device) == "cpu" else -1)
        self.vocab_size = int(self.llm.n_vocab())

    def logits(self, ids: list[int]) -> np.ndarray:
        from .logits import llama_logits
        if len(ids) > self.n_ctx:
            raise BackendError(f"{self.name}: {len(ids)} tokens exceed n_ctx {self.n_ctx}")
        return llama_logits(self.llm, ids)

    def tokenize(self, text: str, add_bos: bool | None = None) -> list[int]:
        if add_bos is None:
            add_bos = bool(self.llm._model.add_bos_token()) if hasattr(self.llm._model, "add_bos_token") else True
        return self.llm.tokenize(text.encode(), add_bos=add_bos, special=False)


class HFModel:
    kind = "transformers"

    def __init__(self, model, name: str = "", device: str = "cpu"):
        self.model = model
        self.name = name
        self.device = device
        self.vocab_size = int(model.config.get_text_config().vocab_size)

    def logits(self, ids: list[int]) -> np.ndarray:
        import torch
        with torch.no_grad():  # not inference_mode: optimum-quanto int4 fails under it
            out = self.model(torch.tensor([ids], device=self.device)).logits[0]
        return out.float().cpu().numpy()


def open_model(path: str | Path, device: str = "cpu", n_ctx: int = 2048, threads: int | None = None,
               name: str = "", dtype: str | None = None):
    """Open a GGUF file, an HF directory or a quant artifact directory for scoring.

    device: cpu or cuda[:i] (llama.cpp offloads every layer when it is a CUDA build). dtype: the
    torch dtype of HF models and of load-time quants' unquantized parts, "float32" or "bfloat16";
    default float32 on the CPU and bfloat16 on a GPU."""
    path = Path(path)
    name = name or path.name
    if path.suffix == ".gguf":
        if not path.is_file():
            raise BackendError(f"{path}: GGUF file not found")
        return _llama(path, n_ctx, threads, name, device)
    if not path.is_dir():
        raise BackendError(f"{path}: not a GGUF file or a model directory")
    art = path / "artifact.json"
    meta = json.loads(art.read_text()) if art.is_file() else None
    if meta and meta.get("format") == "gguf":
        return _llama(path / meta["file"], n_ctx, threads, name, device)
    if threads:
        torch_threads(threads)
    if meta:
        fmt = meta.get("format")
        if fmt == "hf":
            return _hf(path / meta["dir"], device, name, dtype)
        if fmt == "loadtime":
            from .quantize import loadtime
            model = loadtime.load(meta["method"], meta["recipe"], meta["reference_hf"], device, dtype)
            return HFModel(model, name, device)
        raise BackendError(f"{art}: unknown artifact format {fmt!r}")
    if (path / "config.json").is_file():
        return _hf(path, device, name, dtype)
    raise BackendError(f"{path}: no artifact.json or config.json")


def _llama(gguf: Path, n_ctx: int, threads: int | None, name: str, device: str) -> LlamaCppModel:
    m = LlamaCppModel(gguf, n_ctx=n_ctx, threads=threads, name=name, device=device)
    if threads:  # after the load, so that the import does not hold the GIL during it
        torch_threads(threads, background=True)
    return m


def torch_threads(threads: int, background: bool = False) -> None:
    """torch's intra-op threads (for the metrics beside a model). `background`: import torch in a
    helper thread (1.3 s here) while the caller goes on, for llama.cpp models, which do not need it
    to open or decode; a later `import torch` elsewhere waits for that import to finish."""
    def f():
        import torch
        torch.set_num_threads(threads)
    if not background or "torch" in sys.modules:
        f()
    else:
        threading.Thread(target=f, name="silentzone-import-torch").start()


def torch_dtype(device: str, dtype: str | None = None):
    """The torch dtype for `dtype` ("float32" | "bfloat16"), or the device's default: float32 on
    the CPU (exact and fast there), bfloat16 on a GPU."""
    import torch
    if dtype is None:
        return torch.float32 if str(device) == "cpu" else torch.bfloat16
    if dtype not in ("float32", "bfloat16"):
        raise BackendError(f"dtype must be float32 or bfloat16, got {dtype!r}")
    return getattr(torch, dtype)


def _hf(d: Path, device: str, name: str, dtype: str | None = None) -> HFModel:
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch_dtype(device, dtype),
                                                 device_map=device).eval()
    return HFModel(model, name, device)


def default_threads() -> int:
    return int(os.environ.get("SILENTZONE_THREADS", os.cpu_count() or 1))
