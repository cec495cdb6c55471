"""Logits from the two backends on the same token ids: llama.cpp (GGUF) and transformers (HF)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .settings import current


KV_CACHE_TYPES = {"f16": 1, "f32": 0}  # llama.cpp's ggml_type ids of the KV cache types we use

# ggml's log levels (enum ggml_log_level in ggml.h of the pinned llama.cpp): NONE 0, DEBUG 1, INFO 2,
# WARN 3, ERROR 4, CONT 5 (continues the previous message)
GGML_LOG_WARN, GGML_LOG_ERROR, GGML_LOG_CONT = 3, 4, 5
_LOG = {"callback": None, "last": 0}


def log_shown(level: int, last: int) -> bool:
    """Whether llama.cpp's message of `level` reaches stderr: warnings and errors, and the
    continuation lines of one; the rest (model loading, INFO, DEBUG) is dropped."""
    shown = (GGML_LOG_WARN, GGML_LOG_ERROR)
    return level in shown or (level == GGML_LOG_CONT and last in shown)


def install_log_callback() -> None:
    """llama.cpp's warnings and errors to stderr (idempotent). llama-cpp-python 0.3.36's own callback
    reads the levels by an older enum (ERROR = 3), so with verbose=False it drops llama.cpp's errors
    (4, read as DEBUG) and prints its warnings: a CUDA error's message (which call, which device)
    never reached the job's log, only ggml_abort's "CUDA error" line and a backtrace (Gemma 3's
    LAMBADA reference bench on the H100, 2026-12-07)."""
    if _LOG["callback"] is not None:
        return
    import sys

    import llama_cpp
    import llama_cpp._logger  # noqa: F401  (sets its own callback on import: ours comes after)

    @llama_cpp.llama_log_callback
    def callback(level, text, user_data):
        if log_shown(level, _LOG["last"]):
            sys.stderr.write(text.decode("utf-8", "replace"))
            sys.stderr.flush()
        if level != GGML_LOG_CONT:
            _LOG["last"] = level

    _LOG["callback"] = callback  # kept: ctypes must not free it while llama.cpp holds the pointer
    llama_cpp.llama_log_set(callback, None)


def load_llama(gguf: Path | str, n_ctx: int = 2048, threads: int | None = None, logits_all=True,
               n_gpu_layers: int = 0, kv_cache: str = "f16"):
    """A llama_cpp.Llama for scoring: all positions' logits, fixed threads, quiet. n_gpu_layers -1
    offloads every layer (a CUDA build of llama.cpp; a CPU build ignores it). With 0 the model runs
    on the host only: llama.cpp's op offload (a CUDA build sends a batch's matrix products to the
    card even with no layer there, where F32 products run in TF32) is turned off, so that a CUDA
    build's "CPU" numbers are the CPU's. Seen on the lent H100 (2026-12-07) before this: the reference
    check of Gemma 3's F32 GGUF (n_gpu_layers 0) found 5.4e-2 nats against transformers where a CPU
    build finds 1.1e-2, and refused the reference; op offload is the path by which that check
    reached the card; with it off and the card hidden, the next lease's check passed.

    Flash attention stays off unless SILENTZONE_FLASH_ATTN=1: it is faster on a CPU (and
    llama-perplexity's default) but moves logits (up to 0.036 on an F32 SmolLM2), so every shipped
    number was computed without it, and a study must not mix the two.

    kv_cache: "f16" (llama.cpp's default, what deployments run: quants keep it) or "f32" (a float
    reference: with the half-precision cache, SmolLM2's F32 GGUF is up to 5.8e-3 nats per token
    from transformers fp32, with an F32 cache 2.1e-5; issue 19)."""
    import llama_cpp
    install_log_callback()
    s = current()
    t = threads or s.threads
    fa = s.flash_attn
    if kv_cache not in KV_CACHE_TYPES:
        raise ValueError(f"kv_cache must be one of {sorted(KV_CACHE_TYPES)}, got {kv_cache!r}")
    kv = KV_CACHE_TYPES[kv_cache]
    return llama_cpp.Llama(str(gguf), n_ctx=n_ctx, n_batch=min(n_ctx, 512), n_ubatch=min(n_ctx, 512),
                           logits_all=logits_all, n_threads=t, n_threads_batch=t, verbose=False,
                           seed=0, n_gpu_layers=n_gpu_layers, op_offload=n_gpu_layers != 0, flash_attn=fa,
                           type_k=kv, type_v=kv)


def llama_logits(gguf_or_llm, ids, threads: int | None = None, start: int = 0, out=None):
    """float32 logits [len(ids) - start, vocab] of llama.cpp for one sequence (fresh KV cache).

    Row r holds the logits at position start + r (the prediction of token start + r + 1). Only
    positions >= start request an output, as llama-perplexity does for the second half of its
    windows: the output projection of the other positions is skipped, which matters for large
    vocabularies (Gemma 3: 262,144 rows of lm_head per token).

    `out` (optional): where to write them, a float32 numpy array or torch tensor (any device, e.g.
    CUDA: each decode's logits are copied from llama.cpp's buffer straight to the GPU, with no
    numpy copy between) of at least len(ids) - start rows; it is returned.
    """
    ids = [int(i) for i in ids]
    n = len(ids)
    if not 0 <= start < n:
        raise ValueError(f"start must be in [0, {n}), got {start}")
    llm = gguf_or_llm if not isinstance(gguf_or_llm, (str, Path)) else load_llama(
        gguf_or_llm, n_ctx=max(n, 16), threads=threads)
    if n > llm.n_ctx():
        raise ValueError(f"{n} tokens exceed the context of {llm.n_ctx()}")
    llm.reset()
    llm._ctx.kv_cache_clear()
    vocab = llm.n_vocab()
    out = np.empty((n - start, vocab), dtype=np.float32) if out is None else out
    to_torch = not isinstance(out, np.ndarray)
    b = llm._batch.batch
    nb = llm.n_batch
    row = 0
    for i in range(0, n, nb):
        m = min(nb, n - i)
        b.n_tokens = m
        for j in range(m):
            b.token[j] = ids[i + j]
            b.pos[j] = i + j
            b.seq_id[j][0] = 0
            b.n_seq_id[j] = 1
            b.logits[j] = (i + j) >= start
        n_out = max(0, i + m - max(i, start))
        llm._ctx.decode(llm._batch)
        if n_out:
            src = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_out * vocab,))
            if to_torch:  # synchronous: the next decode overwrites llama.cpp's buffer
                import torch
                out[row:row + n_out].copy_(torch.from_numpy(src.reshape(n_out, vocab)))
            else:
                out[row:row + n_out] = src.reshape(n_out, vocab)
            row += n_out
    llm.n_tokens = 0  # the Llama object's own bookkeeping: nothing of ours is reusable
    return out
