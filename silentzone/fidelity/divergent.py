"""Divergent Token Metrics (Deiseroth et al., NAACL 2024): where a quant's greedy choices leave the
reference's greedy continuation. An opt-in fidelity variant beside KLD (`fidelity.divergent_tokens`
in the study config).

    cuts = prompt_cuts(ctx, n)                                 # prompt lengths within a window
    ref = reference_tokens(reference_model, windows, cuts, n)   # int64 [P, n]: greedy continuations
    cand = teacher_forced_argmax(model, windows, cuts, ref)     # int64 [P, n]
    summary = divergent_summary(divergent_counts(ref, cand))    # fdt_mean, sdt_share, n_tokens

Prompts are prefixes of the capture store's windows (the same corpus tokens as the KLD rows, BOS
first): in a window of `ctx` tokens they end at ctx - n, ctx - 2 n, ... down to ctx / 2, so every
prompt has at least half a window of context, as the `half` KLD scoring does. The reference decodes
n tokens greedily after each prompt (Model.decode_steps: its KV cache); the quant reads the prompt
followed by those n tokens in one pass (teacher forcing, Model.window_logits) and at each of the n
positions its argmax is compared with the reference's token.

    fdt_mean   First Divergent Token: per prompt, the 0-based index of the first position where the
               quant's argmax differs from the reference's token, n when it never does; the mean
               over prompts. Higher is closer to the reference (analysis.cohort.HIGHER_IS_BETTER).
    sdt_share  Share of Divergent Tokens: divergent positions / all n x P positions, pooled over
               prompts. Higher is further from the reference.

Both are ratios of integers: the fidelity rows carry n_tokens = n x P, so sdt_share x n_tokens is the
count of divergent positions and fdt_mean x n_tokens / n the sum of first divergent indices (exact:
both counts are far below 2^53). Ties: an argmax is the lowest token id among equal maxima, as
numpy.argmax and torch.argmax give, for the reference's greedy choice and the quant's alike.
The reference's greedy decode runs on its KV cache and the quant's pass without one: on the CPU in
float32 the reference's own teacher-forced pass reproduces its greedy tokens (tested on SmolLM2),
so a quant's divergences are its own; in bfloat16 on a GPU the two paths can part at near-ties, a
floor under every quant's sdt_share that scoring the reference against itself measures.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..config import divergent_length
from .store import Store, StoreError

METRICS = ("fdt_mean", "sdt_share")
FILE = "divergent-{n}.npz"  # the reference's continuations, inside the capture store directory


def prompt_cuts(ctx: int, n: int) -> list[int]:
    """Prompt lengths within a window of `ctx` tokens, ascending: ctx - j n for j >= 1 while at least
    ctx / 2 (ctx 512, n 32: 256, 288, ..., 480; each continuation ends inside the window)."""
    verdict = divergent_length(n, ctx)
    if verdict is not True:
        raise ValueError(f"divergent_tokens: {verdict}")
    return sorted(range(ctx - n, ctx // 2 - 1, -n))


def first_divergent(ref: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """int64 [P]: per row, the first index where cand differs from ref, or n (the row length) when
    they agree everywhere. ref, cand: int [P, n] token ids."""
    ref, cand = np.atleast_2d(ref), np.atleast_2d(cand)
    if ref.shape != cand.shape:
        raise ValueError(f"token arrays differ in shape: {ref.shape} vs {cand.shape}")
    diff = ref != cand
    return np.where(diff.any(1), diff.argmax(1), ref.shape[1]).astype(np.int64)


def divergent_counts(ref: np.ndarray, cand: np.ndarray) -> dict:
    """The integer counts of the metrics: fdt int64 [P] (first_divergent), n_divergent (positions
    where cand != ref), n_positions (P x n), n_prompts, n (continuation length)."""
    ref, cand = np.atleast_2d(ref), np.atleast_2d(cand)
    fdt = first_divergent(ref, cand)
    return {"fdt": fdt, "n_divergent": int((ref != cand).sum()), "n_positions": int(ref.size),
            "n_prompts": int(ref.shape[0]), "n": int(ref.shape[1])}


def divergent_summary(counts: dict) -> dict:
    """{fdt_mean, sdt_share, n_tokens}: the fidelity values of divergent_counts (floats only here,
    from the integer sums), n_tokens = the positions compared."""
    P, N = counts["n_prompts"], counts["n_positions"]
    return {"fdt_mean": int(counts["fdt"].sum()) / P, "sdt_share": counts["n_divergent"] / N,
            "n_tokens": N}


def argmax_tokens(logits) -> np.ndarray:
    """int64 argmax over the last axis (lowest id among ties) of numpy or torch logits."""
    import torch
    return torch.as_tensor(logits).argmax(-1).cpu().numpy().astype(np.int64)


def greedy(model, prompt, n: int) -> np.ndarray:
    """int64 [n]: `model`'s greedy continuation of `prompt` (Model.decode_steps, its KV cache)."""
    steps = model.decode_steps([int(t) for t in prompt])
    out = []
    z = next(steps)
    for i in range(n):
        out.append(int(argmax_tokens(z)))
        if i + 1 < n:
            z = steps.send(out[-1])
    steps.close()
    return np.array(out, dtype=np.int64)


def reference_tokens(model, windows: np.ndarray, cuts, n: int) -> np.ndarray:
    """int64 [P, n]: the greedy continuation of every prompt windows[i, :c], window-major, cuts in
    order (P = n_windows x len(cuts))."""
    return np.stack([greedy(model, w[:c], n) for w in windows for c in cuts])


def teacher_forced_argmax(model, windows: np.ndarray, cuts, ref: np.ndarray) -> np.ndarray:
    """int64 [P, n]: `model`'s argmax at each position of the prompts of reference_tokens followed by
    the reference's tokens `ref` [P, n] (one pass per prompt, Model.window_logits: row j predicts
    position c + j after prompt + ref[:j]). Prompts of one cut go through in batches of
    model.window_batch()."""
    windows = np.asarray(windows)
    ref = np.asarray(ref, dtype=np.int64)
    n, k = ref.shape[1], len(cuts)
    out = np.empty_like(ref)
    rows = np.arange(len(windows)) * k
    batch = model.window_batch()
    for j, c in enumerate(cuts):
        seqs = np.concatenate([windows[:, :c], ref[rows + j]], axis=1)  # [W, c + n]
        for b in range(0, len(seqs), batch):
            # rows c-1 .. c+n-2 of prompt + ref: window_logits(first=c-1) drops the last row
            z = model.window_logits(seqs[b:b + batch], c - 1)
            out[rows[b:b + batch] + j] = argmax_tokens(z)
    return out


def reference_file(store: Store, n: int) -> Path:
    return store.path / FILE.format(n=n)


def load_reference(store: Store, n: int) -> np.ndarray | None:
    """The cached continuations of `store` for length n, or None (absent or made from other tokens)."""
    f = reference_file(store, n)
    if not f.is_file():
        return None
    with np.load(f) as z:
        if str(z["tokens_hash"]) != store.tokens_hash or list(z["cuts"]) != prompt_cuts(store.ctx, n):
            return None
        return z["tokens"].astype(np.int64)


def save_reference(store: Store, n: int, tokens: np.ndarray, source: str = "") -> Path:
    """Write the continuations beside the store's windows (temporary name, then rename)."""
    f = reference_file(store, n)
    tmp = f.with_name(f.name + f".{os.getpid()}.tmp.npz")
    np.savez(tmp, tokens=tokens.astype(np.int32), cuts=np.array(prompt_cuts(store.ctx, n)),
             tokens_hash=np.array(store.tokens_hash), reference=np.array(source))
    os.replace(tmp, f)
    return f


def ensure_reference(store: Store, n: int, open_reference, log=None) -> np.ndarray:
    """The reference's continuations for `store` (int64 [P, n]): cached, or computed with the model
    that open_reference() returns and cached. The capture stage computes them (once per corpus x
    context); scoring a quant finds them there."""
    if not store.complete():
        raise StoreError(f"{store.path}: capture is incomplete")
    tokens = load_reference(store, n)
    if tokens is None:
        model = open_reference()
        tokens = reference_tokens(model, store.windows(), prompt_cuts(store.ctx, n), n)
        save_reference(store, n, tokens, str(getattr(model, "source", model.name)))
        if log:
            log(f"divergent tokens {store.path}: {len(tokens)} greedy continuations of {n} tokens")
    return tokens


def score_divergent(model, store: Store, ref: np.ndarray) -> tuple[dict, dict]:
    """(summary {fdt_mean, sdt_share, n_tokens}, counts) of `model` against the reference's
    continuations `ref` of `store` (ensure_reference)."""
    n = ref.shape[1]
    cand = teacher_forced_argmax(model, store.windows(), prompt_cuts(store.ctx, n), ref)
    counts = divergent_counts(ref, cand)
    return divergent_summary(counts), counts
