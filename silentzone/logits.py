"""Logits from the two backends on the same token ids: llama.cpp (GGUF) and transformers (HF)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def load_llama(gguf: Path | str, n_ctx: int = 2048, threads: int | None = None, logits_all=True):
    """A llama_cpp.Llama for scoring: all positions' logits, fixed threads, quiet."""
    import llama_cpp
    t = threads or int(os.environ.get("SILENTZONE_THREADS", os.cpu_count() or 1))
    return llama_cpp.Llama(str(gguf), n_ctx=n_ctx, n_batch=min(n_ctx, 512), n_ubatch=min(n_ctx, 512),
                           logits_all=logits_all, n_threads=t, n_threads_batch=t, verbose=False,
                           seed=0)


def llama_logits(gguf_or_llm, ids: list[int], threads: int | None = None) -> np.ndarray:
    """float32 logits [len(ids), vocab] of llama.cpp for one sequence (fresh KV cache)."""
    llm = gguf_or_llm if not isinstance(gguf_or_llm, (str, Path)) else load_llama(
        gguf_or_llm, n_ctx=max(len(ids), 16), threads=threads)
    llm.reset()
    llm._ctx.kv_cache_clear() if hasattr(llm._ctx, "kv_cache_clear") else None
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32, copy=True)
