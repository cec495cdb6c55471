"""Reference capture: run the reference over a corpus in llama-perplexity windows and store its
log-probs window by window (see store.py for the windows, scoring modes and encodings).

    store = capture(ref.gguf, ids, ctx=512, out=dir, kinds=("exact", "compact"))
    stores = capture_study(study)         # every corpus x context of a study's profile

Also the small model helpers both capture and scoring use: `open_scorer` (backends.open_model),
`model_tokenize`, `model_bos` and `window_logits` (one logits call for a batch of windows, scored
rows only), each the model's own method (backends.Model), whatever its engine.
"""

from __future__ import annotations

import contextlib
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..backends import open_model, reference_source
from .store import DEFAULT_K, DEFAULT_M, Store, first_scored, make_windows


def pin_mmap_threshold(nbytes: int = 1 << 20) -> bool:
    """glibc only: serve every allocation of `nbytes` or more with its own mmap, returned to the
    system when freed. Capture's per-window temporaries (a window's logits, log-probs and
    encodings, tens of MiB each) otherwise end up on the heap once glibc's dynamic threshold has
    risen past them, and the heap fragments: peak RSS grew 1.24x for a 10x corpus
    (perf/memory.py), and stays flat with the threshold pinned. The same as
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


def open_scorer(path, n_ctx: int, device: str = "cpu", threads: int | None = None, name: str = "",
                kv_cache: str | None = None):
    """backends.open_model, remembering the path it came from (for its tokenizer)."""
    m = open_model(path, device=device, n_ctx=n_ctx, threads=threads, name=name, kv_cache=kv_cache)
    m.source = Path(path)
    return m


def model_tokenize(m, text: str) -> list[int] | None:
    """Token ids of `text` by the model's own tokenizer (llama.cpp or HF); None if it has none."""
    return m.tokenize(text)


def model_bos(m) -> int | None:
    """The BOS id that windows start with, or None when the model's tokenizer adds no BOS."""
    return m.bos()


def window_logits(m, windows: np.ndarray, first: int, out=None):
    """Logits at positions first .. ctx-2 of each window: [B, ctx-1-first, V] (torch on the model's
    device for transformers, numpy float32 for llama.cpp; Model.window_logits). Each window starts
    from an empty cache. `out` (from m.window_buffers, where the engine writes its logits) receives
    the rows first .. ctx-1; the returned array is out[:, :-1]."""
    return m.window_logits(windows, first, out=out)


def capture(reference, ids, ctx: int, out, *, scoring: str = "half", kinds=("compact",),
            k: int = DEFAULT_K, m: int = DEFAULT_M, device: str = "cpu", threads: int | None = None,
            batch: int = 1, extra: dict | None = None, log=None) -> Store:
    """Capture the reference's log-probs over the windows of `ids` into the store at `out`.

    reference: a GGUF file, HF directory or an opened model (open_scorer). `ids` are the corpus ids
    (corpus_tokens). Windows already on disk are skipped. Returns the finished Store.
    """
    from .store import encode_window
    pin_mmap_threshold()
    model = reference if hasattr(reference, "window_logits") else open_scorer(
        reference, n_ctx=ctx, device=device, threads=threads)
    windows = make_windows(ids, ctx, model_bos(model))
    first = first_scored(ctx, scoring)
    meta = {"reference": str(getattr(model, "source", model.name)), "backend": model.kind,
            "probe_ids": model_tokenize(model, probe_text()), "attention": model.attention(),
            **(extra or {})}
    st = Store.create(out, windows, n_vocab=model.vocab_size, scoring=scoring, kinds=kinds, k=k, m=m,
                      extra=meta)
    todo = [i for i in range(st.n_windows) if not st.done(i)]
    buf = model.device_buffer(batch, ctx - first)
    overlap = buf is None and overlaps(model)
    ring = model.window_buffers(batch, ctx - first, 2 if overlap else 1, buf)
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
    """Whether to run the metrics beside the model's decode (Model.overlaps: a llama.cpp model on
    the CPU whose threads leave a core free; SILENTZONE_OVERLAP=0 turns it off)."""
    return model.overlaps()


def store_dir(study, corpus: str, ctx: int, scoring: str = "half") -> Path:
    """Where a study's reference store for (corpus, ctx, scoring) lives."""
    from ..paths import reference_store_dir
    return reference_store_dir(study.study, study.profile_name, corpus, ctx, scoring)


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
    the same). With fidelity.divergent_tokens N in the study config, each store also gets the
    reference's greedy continuations of N tokens (fidelity.divergent.ensure_reference).
    """
    from .corpora import corpus_tokens
    from .divergent import ensure_reference
    ref = reference_of(study)
    n = study.profile.corpus_tokens
    tokens = {c: corpus_tokens(ref, c, n) for c in study.corpora}  # (ids, hash), cached on disk
    todo = []
    for c in study.corpora:
        for ctx in study.contexts:
            d = store_dir(study, c, ctx, scoring)
            if _complete(d, kinds, k, m, tokens[c][1], study.kv_cache):
                continue
            _drop_if_other_corpus(d, tokens[c][1], log, study.kv_cache)
            todo.append((c, ctx))
    model = None
    for c, ctx in todo:
        if model is None:
            model = open_scorer(reference_source(ref, backend, device), n_ctx=max(study.contexts),
                                device=device, threads=threads, name="reference", kv_cache=study.kv_cache)
        ids, h = tokens[c]
        capture(model, ids, ctx, store_dir(study, c, ctx, scoring), scoring=scoring, kinds=kinds,
                k=k, m=m, batch=model.window_batch(),
                extra={"corpus": c, "corpus_tokens_hash": h, "study": study.study,
                       **({"reference_kv_cache": study.kv_cache} if study.kv_cache != "f16" else {})},
                log=log)
    stores = [Store(store_dir(study, c, ctx, scoring)) for c in study.corpora for ctx in study.contexts]

    def reference_model():
        nonlocal model
        if model is None:
            model = open_scorer(reference_source(ref, backend, device), n_ctx=max(study.contexts),
                                device=device, threads=threads, name="reference", kv_cache=study.kv_cache)
        return model

    # opt-in (fidelity.divergent_tokens): the reference's greedy continuations, once per store
    for st in stores if study.fidelity.divergent_tokens else ():
        ensure_reference(st, study.fidelity.divergent_tokens, reference_model, log)
    return stores


def _complete(path: Path, kinds, k: int, m: int, corpus_hash: str | None = None,
              kv_cache: str = "f16") -> bool:
    """A finished store with these parameters, made from the corpus tokens `corpus_hash` with the
    reference's KV cache `kv_cache` (anything else goes to capture, which resumes it or refuses a
    mismatch with one line)."""
    try:
        st = Store(path)
    except Exception:  # noqa: BLE001 - missing or unreadable: capture it
        return False
    same = set(st.kinds) == set(kinds) and ("compact" not in kinds or (st.k, st.m) == (k, m))
    if corpus_hash is not None and st.meta.get("corpus_tokens_hash") != corpus_hash:
        return False
    if st.meta.get("reference_kv_cache", "f16") != kv_cache:
        return False
    return same and st.complete()


def _drop_if_other_corpus(path: Path, corpus_hash: str, log=None, kv_cache: str = "f16") -> None:
    """Remove a store made from other corpus tokens (the profile's corpus_tokens changed) or with
    another reference KV cache: it sits at the same path and would otherwise be taken as this
    corpus's reference. Renamed first, so an interruption never leaves a half-deleted store under
    the real name."""
    import shutil
    try:
        meta = Store(path).meta
    except Exception:  # noqa: BLE001 - missing or unreadable: nothing to drop
        return
    old, old_kv = meta.get("corpus_tokens_hash"), meta.get("reference_kv_cache", "f16")
    if old == corpus_hash and old_kv == kv_cache:
        return
    gone = path.with_name(path.name + ".stale")
    shutil.rmtree(gone, ignore_errors=True)
    path.rename(gone)
    shutil.rmtree(gone, ignore_errors=True)
    if log:
        why = (f"other corpus tokens ({old} != {corpus_hash})" if old != corpus_hash
               else f"a reference KV cache {old_kv} (now {kv_cache})")
        log(f"capture {path}: store made from {why}: captured again")


def stderr_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
