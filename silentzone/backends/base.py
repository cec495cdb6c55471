"""What every engine's model offers (`Model`), the backends' error, and torch's threads and dtype.

Callers hold a `Model` and call its methods; they never ask which engine it is. An engine that has
nothing to do for a method (no device buffer, no overlap) inherits the default here.
"""

from __future__ import annotations

import sys
import threading

import numpy as np

from ..errors import SilentzoneError


class BackendError(SilentzoneError, RuntimeError):
    """A model cannot be opened or scored (one-line message)."""


class Model:
    """A causal language model opened for scoring (open_model).

    kind         the engine, "llama.cpp" | "transformers": recorded as the `backend` of stores
                 and samples (for the record only: nothing branches on it)
    name, device, vocab_size, n_ctx (llama.cpp) ...; `source` (the path it was opened from) is set by
    fidelity.capture.open_scorer, and absent otherwise
    logits(ids)                        float32 [len(ids), V] numpy, fresh context each call
    attention()                        {engine, kv_cache, attention}: recorded in provenance
    tokenize(text)                     the model's own token ids of text, or None without a tokenizer
    bos()                              the BOS id windows start with, or None
    window_logits(windows, first, out) logits of the scored rows of a batch of windows
    device_buffer / window_buffers     where window_logits may write (None: it returns its own)
    overlaps(), window_batch(), metric_device()    how capture and scoring schedule the work
    shared_logits(ctx_ids, conts, batched)         one context, several continuations (bench.mc)
    full_logits(ctx_ids, conts)                    the same, one full pass per continuation
    decode_steps(prompt_ids)                       greedy generation's logits, step by step
    """

    kind = ""
    name = ""
    device = "cpu"
    vocab_size = 0

    def logits(self, ids: list[int]) -> np.ndarray:
        raise NotImplementedError

    def attention(self) -> dict:
        """How this model attends, for provenance: engine, kv_cache (the KV cache's number type) and
        attention (the attention path)."""
        raise NotImplementedError

    def tokenize(self, text: str) -> list[int] | None:
        raise NotImplementedError

    def bos(self) -> int | None:
        raise NotImplementedError

    def window_logits(self, windows: np.ndarray, first: int, out=None):
        """Logits at positions first .. ctx-2 of each window: [B, ctx-1-first, V]. Each window
        starts from an empty cache. `out`: see the engine's method."""
        raise NotImplementedError

    def device_buffer(self, batch: int, rows: int):
        """A float32 buffer [batch, rows, V] on the model's GPU for window_logits(out=), where its
        logits can land straight from the engine; None when the engine returns its own tensors."""
        return None

    def window_buffers(self, batch: int, rows: int, n: int, gpu_buf=None) -> list | None:
        """Buffers [batch, rows, V] for window_logits(out=), call j using buffers[j % len(buffers)];
        [gpu_buf] when given (device_buffer), None when the engine returns its own tensors."""
        return None if gpu_buf is None else [gpu_buf]

    def overlaps(self) -> bool:
        """Whether the metrics of window j run in a helper thread while window j+1 is computed."""
        return False

    def window_batch(self) -> int:
        """Windows per logits call: 8 on a GPU; 1 on a CPU, where memory stays at one window's
        logits."""
        return 1 if str(self.device) == "cpu" else 8

    def metric_device(self):
        """The torch device where the metrics against this model's logits run."""
        import torch
        return torch.device(str(self.device))

    def shared_logits(self, ctx_ids: list[int], conts: list[list[int]], batched: bool):
        """(context logits [Lc, V], [continuation logits [Li, V] per choice]), the context evaluated
        once (see bench.mc for the two ways, sequential and batched)."""
        raise NotImplementedError

    def full_logits(self, ctx_ids: list[int], conts: list[list[int]]):
        """Per-choice full passes: the same outputs as `shared_logits`, computed the slow way. The
        context's rows are what `pass_logits` returns (numpy, or a torch tensor where an engine keeps
        them on its device); each continuation's few rows come as numpy."""
        ctx_logits, outs = None, []
        for c in conts:
            lg = self.pass_logits(list(ctx_ids) + list(c))
            if ctx_logits is None:
                ctx_logits = lg[: len(ctx_ids)]
            rest = lg[len(ctx_ids):]
            outs.append(rest if isinstance(rest, np.ndarray) else rest.cpu().numpy())
        return ctx_logits, outs

    def pass_logits(self, ids: list[int]):
        """The logits of one full pass over `ids`, for full_logits: `logits(ids)` unless the engine
        keeps the rows elsewhere."""
        return self.logits(ids)

    def decode_steps(self, prompt_ids: list[int]):
        """A generator: yields the float32 logits [V] after the prompt, then after each token sent
        to it (greedy generation on the model's KV cache)."""
        raise NotImplementedError


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
