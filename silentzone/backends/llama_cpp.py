"""llama.cpp (GGUF) through llama-cpp-python: `LlamaCppModel`.

Logits come from llama.cpp's own buffer (logits.llama_logits), one sequence per decode, on the CPU
or, with a CUDA build, every layer offloaded to the GPU. Multiple choice shares the context's KV
cache across the choices (sequential: truncate and continue; batched: one KV stream per choice in a
second context, `_Streams`); see bench/mc.py for what each way gives.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..logits import llama_logits, load_llama
from ..settings import current
from .base import BackendError, Model

MAX_STREAMS = 16  # more choices than this fall back to one continuation call each


class LlamaCppModel(Model):
    kind = "llama.cpp"
    # where shared_logits/full_logits put the context's [T, V] rows (the bench's multiple choice):
    # "auto" = the GPU when the model was opened on one (a torch tensor filled straight from
    # llama.cpp's pinned output buffer: no host copy, no host concatenate, no pageable upload before
    # the KLD or the reference's top-k, which run there anyway), else numpy; "numpy" = always numpy
    # (the path before; perf/gpu/bench_scaling.py's gpu-numpy jobs compare the two); a torch device
    # name = torch tensors there (tests run the torch path on the CPU). The values are the same bits.
    rows_to = "auto"

    def __init__(self, gguf: Path, n_ctx: int = 2048, threads: int | None = None, name: str = "",
                 device: str = "cpu", kv_cache: str | None = None):
        self.path = Path(gguf)
        self.name = name or self.path.stem
        self.n_ctx = n_ctx
        self.device = device
        self.kv_cache = kv_cache or "f16"
        self.llm = load_llama(self.path, n_ctx=n_ctx, threads=threads,
                              n_gpu_layers=0 if str(device) == "cpu" else -1, kv_cache=self.kv_cache)
        self.vocab_size = int(self.llm.n_vocab())

    def attention(self) -> dict:
        from ..settings import current
        return {"engine": self.kind, "kv_cache": self.kv_cache,
                "attention": "flash" if current().flash_attn else "ggml (no flash attention)"}

    def logits(self, ids: list[int], out=None) -> np.ndarray:
        """`out`: as llama_logits (a torch tensor receives them on its device)."""
        if len(ids) > self.n_ctx:
            raise BackendError(f"{self.name}: {len(ids)} tokens exceed n_ctx {self.n_ctx}")
        return llama_logits(self.llm, ids, out=out)

    def tokenize(self, text: str, add_bos: bool | None = True) -> list[int]:
        """llama.cpp's token ids of `text`, a BOS first (add_bos None: as the model's metadata
        says), special tokens read as text."""
        if add_bos is None:
            add_bos = bool(self.llm._model.add_bos_token()) if hasattr(self.llm._model, "add_bos_token") else True
        return [int(i) for i in self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=False)]

    def bos(self) -> int | None:
        return int(self.llm.token_bos()) if self.llm._model.add_bos_token() else None

    def window_logits(self, windows: np.ndarray, first: int, out=None):
        """numpy float32 [B, ctx-1-first, V]. `out` [B, ctx-first, V] (numpy, or a torch tensor, e.g.
        on the GPU where the metrics run) receives the rows first .. ctx-1; the returned array is
        out[:, :-1]."""
        windows = np.atleast_2d(windows)
        if out is None:
            out = np.empty((len(windows), windows.shape[1] - first, self.vocab_size), dtype=np.float32)
        for b, w in enumerate(windows):
            llama_logits(self.llm, w, start=first, out=out[b])
        return out[:, :-1]

    def device_buffer(self, batch: int, rows: int):
        """Opened on a GPU (a CUDA build offloads every layer): a float32 buffer [batch, rows, V] on
        that GPU; logits go there straight from llama.cpp's buffer and are encoded or scored on the
        GPU. None otherwise (numpy on the CPU)."""
        if not str(self.device).startswith("cuda"):
            return None
        import torch
        if not torch.cuda.is_available():
            return None
        return torch.empty((batch, rows, self.vocab_size), dtype=torch.float32, device=str(self.device))

    def window_buffers(self, batch: int, rows: int, n: int, gpu_buf=None) -> list | None:
        """On a GPU: [gpu_buf] (device_buffer; one, as its decode is synchronous). On the CPU: `n`
        float32 numpy buffers, so that logits land where pages are already mapped. A fresh array per
        window (tens to hundreds of MiB, each its own mmap: capture.pin_mmap_threshold) was faulted
        in page by page on the decoding thread (the bench's store workflow: 0.3 s of 23 s). Two are
        enough beside a helper thread: one is decoded into while the other's window is encoded or
        scored."""
        if gpu_buf is not None:
            return [gpu_buf]
        if str(self.device) != "cpu":
            return None
        return [np.empty((batch, rows, self.vocab_size), dtype=np.float32) for _ in range(n)]

    def overlaps(self) -> bool:
        """On the CPU with threads that leave at least one core of this process's free (else the two
        would contend, and llama.cpp's threads spin at barriers while one of them waits for a core):
        llama.cpp's decode releases the GIL, so the metrics run beside it.
        SILENTZONE_OVERLAP=0 turns it off."""
        if str(self.device) != "cpu":
            return False
        if not current().overlap:  # off: for benchmarks and debugging
            return False
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cores = os.cpu_count() or 1
        return int(getattr(self.llm, "n_threads", cores)) < cores

    def window_batch(self) -> int:
        return 1

    def metric_device(self):
        """The GPU when the model was opened on one (its logits are copied there straight from
        llama.cpp's buffer), else the CPU."""
        import torch
        return torch.device(str(self.device)) if self.device_buffer(1, 0) is not None else torch.device("cpu")

    def rows_device(self):
        """The torch device of the context rows that shared_logits/full_logits return, or None for
        numpy (rows_to above)."""
        if self.rows_to == "numpy":
            return None
        import torch
        if self.rows_to == "auto":
            dev = self.metric_device()
            return dev if dev.type == "cuda" else None
        return torch.device(self.rows_to)

    def shared_logits(self, ctx_ids, conts, batched: bool):
        return (self._batched if batched else self._sequential)(ctx_ids, conts)

    def pass_logits(self, ids):
        """One full pass (Model.full_logits): on rows_device() a torch tensor there, as in
        shared_logits; else logits(ids)."""
        dev = self.rows_device()
        if dev is None:
            return self.logits(ids)
        import torch
        return self.logits(ids, out=torch.empty((len(ids), self.vocab_size), dtype=torch.float32, device=dev))

    def _sequential(self, ctx_ids, conts):
        """The context once, then one call per continuation (truncating the KV cache back to it)."""
        llm = self.llm
        n = len(ctx_ids)
        need = n + max(len(c) for c in conts)
        if need > llm.n_ctx():
            raise ValueError(f"{self.name}: {need} tokens exceed n_ctx {llm.n_ctx()}")
        llm.reset()
        llm.eval(list(ctx_ids))
        ctx_logits = np.array(llm.scores[:n], dtype=np.float32, copy=True)
        outs = []
        for c in conts:
            llm.n_tokens = n  # eval() removes the KV cells from n_tokens on, then appends c
            llm.eval(list(c))
            outs.append(np.array(llm.scores[n: n + len(c)], dtype=np.float32, copy=True))
        return ctx_logits, outs

    def _batched(self, ctx_ids, conts):
        n, k = len(ctx_ids), len(conts)
        if k == 1:  # nothing to share: one full pass is one call over the weights instead of two
            return self.full_logits(ctx_ids, conts)
        if k > MAX_STREAMS:
            return self._sequential(ctx_ids, conts)
        L = max(len(c) for c in conts)
        st = self._streams(k, n + L)
        st.ctx.kv_cache_clear()
        nb = st.n_batch
        ctx_toks = [(t, i, 0, True) for i, t in enumerate(ctx_ids)]
        ctx_logits = st.decode([ctx_toks[i: i + nb] for i in range(0, n, nb)], self.rows_device())
        for s in range(1, k):
            st.ctx.kv_cache_seq_cp(0, s, -1, -1)
        # a ubatch of a multi-stream cache takes as many tokens from each stream: every continuation
        # is padded to the longest, and a chunk spans whole positions of all streams
        step = max(1, nb // k)
        chunks = [[(c[j] if j < len(c) else c[-1], n + j, s, j < len(c))
                   for s, c in enumerate(conts) for j in range(j0, min(L, j0 + step))]
                  for j0 in range(0, L, step)]
        rows = st.decode(chunks)  # the real tokens' rows, in chunk order
        outs = [np.empty((len(c), st.vocab), np.float32) for c in conts]
        for r, (_, j, s, _) in enumerate(t for ch in chunks for t in ch if t[3]):
            outs[s][j - n] = rows[r]
        st.ctx.kv_cache_clear()
        return ctx_logits, outs

    def _streams(self, k: int, need: int) -> _Streams:
        """The model's stream context, rebuilt larger when an item needs more choices or cells.
        Streams are sized to the items (a power of two from 512 cells, at most the model's n_ctx),
        not to n_ctx: the context's cells are copied to each stream as whole buffers, so their size
        is paid per item."""
        n_ctx = int(self.llm.n_ctx())
        if need > n_ctx:
            raise ValueError(f"{self.name}: {need} tokens exceed n_ctx {n_ctx}")
        st = getattr(self, "_mc_streams", None)
        if st is None or st.n_seq < k or st.n_ctx_seq < need:
            size = max(512, 1 << (need - 1).bit_length(), st.n_ctx_seq if st else 0)
            n_seq = max(k, 4, st.n_seq if st else 0)
            self._mc_streams = None  # free the old one first
            st = self._mc_streams = _Streams(self.llm, n_seq, min(size, n_ctx))
        return st

    def decode_steps(self, prompt_ids):
        llm = self.llm
        if len(prompt_ids) >= llm.n_ctx():
            raise ValueError(f"{self.name}: prompt of {len(prompt_ids)} tokens exceeds n_ctx {llm.n_ctx()}")
        llm.reset()
        llm.eval(list(prompt_ids))
        while True:
            tok = yield np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
            if llm.n_tokens >= llm.n_ctx():
                return
            llm.eval([tok])


class _Streams:
    """A llama.cpp context of `n_seq` KV streams of `n_ctx_seq` cells each, beside the model's own
    (which stays single-sequence: fidelity scoring and generation use it)."""

    def __init__(self, llm, n_seq: int, n_ctx_seq: int):
        import llama_cpp
        from llama_cpp import _internals
        p = llama_cpp.llama_context_default_params()
        for f, _ in llama_cpp.llama_context_params._fields_:
            setattr(p, f, getattr(llm.context_params, f))
        p.n_seq_max, p.kv_unified, p.n_ctx = n_seq, False, n_seq * n_ctx_seq
        self.ctx = _internals.LlamaContext(model=llm._model, params=p, verbose=False)
        self.n_ctx_seq = int(llama_cpp.llama_n_ctx(self.ctx.ctx)) // n_seq
        self.n_seq, self.n_batch = n_seq, int(p.n_batch)
        self.batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self.vocab = int(llm.n_vocab())
        self._llama_cpp = llama_cpp

    def __del__(self):
        try:
            self._llama_cpp.llama_batch_free(self.batch)
            self.ctx.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def decode(self, chunks, device=None):
        """Decode each chunk of (token, pos, seq, wants_logits), one llama_decode call per chunk (at
        most n_batch tokens each); the logit rows asked for, in order: numpy, or with `device` a
        torch tensor there, copied from llama.cpp's buffer before the next decode overwrites it."""
        lc, b, out = self._llama_cpp, self.batch, []
        if device is not None:
            import torch
        for chunk in chunks:
            b.n_tokens = len(chunk)
            n_out = 0
            for j, (t, pos, seq, want) in enumerate(chunk):
                b.token[j], b.pos[j], b.n_seq_id[j], b.logits[j] = t, pos, 1, want
                b.seq_id[j][0] = seq
                n_out += bool(want)
            rc = lc.llama_decode(self.ctx.ctx, b)
            if rc != 0:
                raise RuntimeError(f"llama_decode returned {rc}")
            if n_out:
                src = np.ctypeslib.as_array(lc.llama_get_logits(self.ctx.ctx), shape=(n_out, self.vocab))
                if device is None:
                    out.append(src.copy())
                else:  # copy_ is synchronous from a host tensor torch did not pin
                    out.append(torch.empty((n_out, self.vocab), dtype=torch.float32,
                                           device=device).copy_(torch.from_numpy(src)))
        if len(out) == 1:  # one chunk (most items): no second [T, V] copy
            return out[0]
        if device is not None:
            return torch.cat(out, 0) if out else torch.empty((0, self.vocab), device=device)
        return np.concatenate(out, 0) if out else np.empty((0, self.vocab), np.float32)
