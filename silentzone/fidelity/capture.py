"""Reference capture: run the reference over a corpus in llama-perplexity windows and store its
log-probs window by window (see store.py for the windows, scoring modes and encodings).

    store = capture(ref.gguf, ids, ctx=512, out=dir, kinds=("exact", "compact"))
    stores = capture_study(study)         # every corpus x context of a study's profile

Also the small model helpers both capture and scoring use: `open_scorer`, `model_tokenize`,
`model_bos` and `window_logits` (one logits call for a batch of windows, scored rows only).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .store import DEFAULT_K, DEFAULT_M, Store, first_scored, make_windows


def pin_mmap_threshold(nbytes: int = 1 << 20) -> bool:
    """glibc only: serve every allocation of `nbytes` or more with its own mmap, returned to the
    system when freed. Capture's per-window temporaries (a window's logits, log-probs and
    encodings, tens of MiB each) otherwise end up on the heap once glibc's dynamic threshold has
    risen past them, and the heap fragments: peak RSS grew 1.24x for a 10x corpus
    (bench/memory.py), and stays flat with the threshold pinned. The same as
    MALLOC_MMAP_THRESHOLD_=1048576 in the environment. Returns False where there is no glibc."""
    import ctypes
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, int(nbytes)))  # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def probe_text() -> str:
    """The text whose token ids a candidate must share with the reference (models.CHECK_TEXT)."""
    from ..models import CHECK_TEXT
    return CHECK_TEXT


def open_scorer(path, n_ctx: int, device: str = "cpu", threads: int | None = None, name: str = ""):
    """backends.open_model, remembering the path it came from (for its tokenizer)."""
    from ..backends import open_model
    m = open_model(path, device=device, n_ctx=n_ctx, threads=threads, name=name)
    m.source = Path(path)
    return m


def _hf_tokenizer(m):
    """The HF tokenizer that belongs to a transformers model, or None if none is saved with it."""
    from transformers import AutoTokenizer
    cands = [getattr(m.model, "name_or_path", "") or "", str(getattr(m, "source", ""))]
    for c in cands:
        d = Path(c)
        if c and d.is_dir() and any((d / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
            return AutoTokenizer.from_pretrained(d)
    return None


def model_tokenize(m, text: str) -> list[int] | None:
    """Token ids of `text` by the model's own tokenizer (llama.cpp or HF); None if it has none."""
    if m.kind == "llama.cpp":
        return [int(i) for i in m.llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)]
    if not hasattr(m, "_tok"):
        m._tok = _hf_tokenizer(m)
    return None if m._tok is None else [int(i) for i in m._tok(text)["input_ids"]]


def model_bos(m) -> int | None:
    """The BOS id that windows start with, or None when the model's tokenizer adds no BOS."""
    if m.kind == "llama.cpp":
        model = m.llm._model
        return int(m.llm.token_bos()) if model.add_bos_token() else None
    ids = model_tokenize(m, "a")
    tok = getattr(m, "_tok", None)
    if ids and tok is not None and tok.bos_token_id is not None and ids[0] == tok.bos_token_id:
        return int(tok.bos_token_id)
    return None


def window_logits(m, windows: np.ndarray, first: int, out=None):
    """Logits at positions first .. ctx-2 of each window: [B, ctx-1-first, V] (torch on the model's
    device for transformers, numpy float32 for llama.cpp). Each window starts from an empty cache.
    llama.cpp only: `out` [B, ctx-first, V] (numpy, or a torch tensor, e.g. on the GPU where the
    metrics run) receives the rows first .. ctx-1; the returned array is out[:, :-1]."""
    windows = np.atleast_2d(windows)
    if m.kind == "llama.cpp":
        from ..logits import llama_logits
        if out is None:
            out = np.empty((len(windows), windows.shape[1] - first, m.vocab_size), dtype=np.float32)
        for b, w in enumerate(windows):
            llama_logits(m.llm, w, start=first, out=out[b])
        return out[:, :-1]
    import torch
    x = torch.from_numpy(windows.astype(np.int64))
    if str(m.device).startswith("cuda"):  # page-locked: the copy does not wait for the device
        x = x.pin_memory().to(m.device, non_blocking=True)
    else:
        x = x.to(m.device)
    keep = windows.shape[1] - first
    with torch.no_grad():  # not inference_mode: optimum-quanto int4 fails under it
        try:
            z = m.model(x, logits_to_keep=keep).logits
        except TypeError:
            z = m.model(x).logits
        return z[:, -keep:-1]


def llama_gpu_buffer(m, batch: int, rows: int):
    """For a llama.cpp model opened on a GPU (a CUDA build offloads every layer), a float32 buffer
    [batch, rows, V] on that GPU for window_logits(out=): logits go there straight from llama.cpp's
    buffer and are encoded or scored on the GPU. None otherwise (numpy on the CPU)."""
    if m.kind != "llama.cpp" or not str(getattr(m, "device", "cpu")).startswith("cuda"):
        return None
    import torch
    if not torch.cuda.is_available():
        return None
    return torch.empty((batch, rows, m.vocab_size), dtype=torch.float32, device=str(m.device))


def llama_buffers(m, batch: int, rows: int, n: int, gpu_buf=None) -> list | None:
    """Buffers [batch, rows, V] for window_logits(out=), call j using buffers[j % len(buffers)].
    A llama.cpp model on a GPU: [gpu_buf] (llama_gpu_buffer; one, as its decode is synchronous). On
    the CPU: `n` float32 numpy buffers, so that logits land where pages are already mapped. A fresh
    array per window (tens to hundreds of MiB, each its own mmap: pin_mmap_threshold) was faulted in
    page by page on the decoding thread (the bench's store workflow: 0.3 s of 23 s). Two are enough
    beside a helper thread: one is decoded into while the other's window is encoded or scored.
    None for transformers, which returns its own tensors."""
    if gpu_buf is not None:
        return [gpu_buf]
    if m.kind != "llama.cpp" or str(getattr(m, "device", "cpu")) != "cpu":
        return None
    return [np.empty((batch, rows, m.vocab_size), dtype=np.float32) for _ in range(n)]


def capture(reference, ids, ctx: int, out, *, scoring: str = "half", kinds=("compact",),
            k: int = DEFAULT_K, m: int = DEFAULT_M, device: str = "cpu", threads: int | None = None,
            batch: int = 1, extra: dict | None = None, log=None) -> Store:
    """Capture the reference's log-probs over the windows of `ids` into the store at `out`.

    reference: a GGUF file, HF directory or an opened model (open_scorer). `ids` are the corpus ids
    (corpus_tokens). Windows already on disk are skipped. Returns the finished Store.
    """
    from .store import encode_window
    pin_mmap_threshold()
    model = reference if hasattr(reference, "kind") else open_scorer(reference, n_ctx=ctx, device=device,
                                                                     threads=threads)
    windows = make_windows(ids, ctx, model_bos(model))
    first = first_scored(ctx, scoring)
    meta = {"reference": str(getattr(model, "source", model.name)), "backend": model.kind,
            "probe_ids": model_tokenize(model, probe_text()), **(extra or {})}
    st = Store.create(out, windows, n_vocab=model.vocab_size, scoring=scoring, kinds=kinds, k=k, m=m,
                      extra=meta)
    todo = [i for i in range(st.n_windows) if not st.done(i)]
    buf = llama_gpu_buffer(model, batch, ctx - first)
    overlap = buf is None and overlaps(model)
    ring = llama_buffers(model, batch, ctx - first, 2 if overlap else 1, buf)
    t0 = time.perf_counter()

    def encode(z, idx):
        for r, i in enumerate(idx):
            st.write(i, encode_window(z[r], windows[i, first + 1:], kinds=st.kinds, k=k, m=m,
                                      rng=st.rng(i)))
        if log:
            log(f"capture {out}: window {idx[-1] + 1}/{st.n_windows} "
                f"({time.perf_counter() - t0:.1f} s)")

    # llama.cpp on the CPU with a core to spare: window j is encoded and written in a helper thread
    # while llama.cpp decodes window j+1 (its decode releases the GIL), as llama-perplexity
    # processes logits on threads beside -t. At most one window waits, so memory stays bounded.
    # (one_behind waits for window j-1's encode before j's is submitted, so the buffer that window
    # j+1 decodes into is free again)
    with one_behind(overlap) as run:
        for n, j in enumerate(range(0, len(todo), batch)):
            idx = todo[j:j + batch]
            z = window_logits(model, windows[idx], first,
                              out=ring[n % len(ring)][:len(idx)] if ring else None)
            run(encode, z, idx)
    return st


@contextlib.contextmanager
def one_behind(overlap: bool):
    """run(fn, *args): with `overlap`, fn runs in a helper thread while the caller goes on, after
    waiting for the previous call (so at most one waits, and its error is raised here, in order);
    the last call is waited for on leaving. Without, fn runs at once."""
    if not overlap:
        yield lambda fn, *args: fn(*args)
        return
    pending = []
    with ThreadPoolExecutor(1) as pool:
        def run(fn, *args):
            if pending:
                pending.pop().result()
            pending.append(pool.submit(fn, *args))
        yield run
        if pending:
            pending.pop().result()


def overlaps(model) -> bool:
    """Whether to run the metrics beside llama.cpp's decode: a llama.cpp model on the CPU whose
    threads leave at least one core of this process's free (else the two would contend, and
    llama.cpp's threads spin at barriers while one of them waits for a core).
    SILENTZONE_OVERLAP=0 turns it off."""
    if model.kind != "llama.cpp" or str(getattr(model, "device", "cpu")) != "cpu":
        return False
    if os.environ.get("SILENTZONE_OVERLAP", "1") == "0":  # off: for benchmarks and debugging
        return False
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return int(getattr(model.llm, "n_threads", cores)) < cores


def store_dir(study, corpus: str, ctx: int, scoring: str = "half") -> Path:
    """Where a study's reference store for (corpus, ctx, scoring) lives."""
    from ..paths import study_dir
    return study_dir(study.study, study.profile_name) / "reference" / corpus / f"ctx={ctx}-{scoring}"


def reference_of(study):
    """The study's float reference (models.resolve: exported and checked once)."""
    from ..models import resolve
    return resolve(study.reference.model, study.reference.dtype)


def capture_study(study, *, kinds=("compact",), k: int = DEFAULT_K, m: int = DEFAULT_M,
                  scoring: str = "half", backend: str | None = None, device: str = "cpu",
                  threads: int | None = None, log=None) -> list[Store]:
    """Capture every (corpus, ctx) of the study's profile; finished stores are skipped.

    The reference runs in llama.cpp on its F32/BF16 GGUF (backend "llama.cpp", the default on the
    CPU) or in transformers from its HF export (backend "transformers", the default on a GPU); token
    ids always come from llama.cpp's tokenizer (models.resolve has checked the HF tokenizer gives
    the same).
    """
    backend = backend or ("llama.cpp" if str(device) == "cpu" else "transformers")
    from .corpora import corpus_tokens
    ref = reference_of(study)
    n = study.profile.corpus_tokens
    tokens = {c: corpus_tokens(ref, c, n) for c in study.corpora}  # (ids, hash), cached on disk
    todo = []
    for c in study.corpora:
        for ctx in study.contexts:
            d = store_dir(study, c, ctx, scoring)
            if _complete(d, kinds, k, m, tokens[c][1]):
                continue
            _drop_if_other_corpus(d, tokens[c][1], log)
            todo.append((c, ctx))
    model = None
    for c, ctx in todo:
        if model is None:
            path = ref.gguf if backend == "llama.cpp" else ref.hf_dir
            model = open_scorer(path, n_ctx=max(study.contexts), device=device, threads=threads,
                                name="reference")
        ids, h = tokens[c]
        capture(model, ids, ctx, store_dir(study, c, ctx, scoring), scoring=scoring, kinds=kinds,
                k=k, m=m, batch=window_batch(model),
                extra={"corpus": c, "corpus_tokens_hash": h, "study": study.study}, log=log)
    return [Store(store_dir(study, c, ctx, scoring)) for c in study.corpora for ctx in study.contexts]


def window_batch(model) -> int:
    """Windows per logits call: 8 on a GPU; 1 on a CPU, where memory stays at one window's logits."""
    return 1 if model.kind == "llama.cpp" or str(getattr(model, "device", "cpu")) == "cpu" else 8


def _complete(path: Path, kinds, k: int, m: int, corpus_hash: str | None = None) -> bool:
    """A finished store with these parameters, made from the corpus tokens `corpus_hash` (anything
    else goes to capture, which resumes it or refuses a mismatch with one line)."""
    try:
        st = Store(path)
    except Exception:  # noqa: BLE001 - missing or unreadable: capture it
        return False
    same = set(st.kinds) == set(kinds) and ("compact" not in kinds or (st.k, st.m) == (k, m))
    if corpus_hash is not None and st.meta.get("corpus_tokens_hash") != corpus_hash:
        return False
    return same and st.complete()


def _drop_if_other_corpus(path: Path, corpus_hash: str, log=None) -> None:
    """Remove a store made from other corpus tokens (the profile's corpus_tokens changed): it sits
    at the same path and would otherwise be taken as this corpus's reference. Renamed first, so an
    interruption never leaves a half-deleted store under the real name."""
    import shutil
    try:
        old = Store(path).meta.get("corpus_tokens_hash")
    except Exception:  # noqa: BLE001 - missing or unreadable: nothing to drop
        return
    if old == corpus_hash:
        return
    gone = path.with_name(path.name + ".stale")
    shutil.rmtree(gone, ignore_errors=True)
    path.rename(gone)
    shutil.rmtree(gone, ignore_errors=True)
    if log:
        log(f"capture {path}: store made from other corpus tokens ({old} != {corpus_hash}): captured again")


def stderr_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
