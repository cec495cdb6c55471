"""Likelihood scoring on both backends, with the context shared across choices.

    ctx_logits, cont_logits = shared_logits(model, ctx_ids, [cont_ids, ...])
    res = score_mc(model, ctx_ids, conts, gold, n_chars)       # acc, acc_norm, margin, ...
    res = score_lastword(model, ctx_ids, target_ids)           # greedy exact match (LAMBADA)

`model` is what `silentzone.backends.open_model` returns. The context is evaluated once and every
continuation reuses its KV cache. Two ways, the first the default:
  sequential    llama.cpp: eval(context); for each choice: truncate n_tokens back to the context
                length (the binding drops the KV cells past it) and eval the continuation.
                transformers: one forward of the context with use_cache, then the cache repeated
                across the choices and all continuations run as one right-padded batch (right
                padding needs no mask: a real token never attends to a later pad).
  batched       (batched=True, or SILENTZONE_MC_BATCHED=1; provenance records mc_batched)
                llama.cpp: a second context with one KV stream per choice (n_seq_max = k, a
                non-unified cache): the context decoded in stream 0, its cells copied to the other
                streams (llama_memory_seq_cp), then every continuation decoded in one call, padded
                to the longest (pads come after the real tokens, ask for no logits and are never
                attended to). One pass over the weights for all choices instead of one per choice,
                and each stream's cells lie exactly as in a per-choice full pass (a unified cache
                interleaves the choices' cells, which moved the F32 reference's log-likelihoods by
                up to 6e-3 nats: measured, not used). A single continuation is one full pass.
                transformers: one forward of context + all choices under a tree-shaped 4D mask.
                3.1x / 3.7x a full pass per choice (perf/mc_scoring.py), and on the F32 reference
                the per-choice passes' bits (llama.cpp) or within 3e-5 nats (transformers).
                Not the default: on quantized models the logits of a token depend on the batch it
                is in (measured: the K-quant and IQ GGUFs moved, Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 did not,
                which points at the kernels llama.cpp picks per type and batch shape; bitsandbytes
                int8 picks its outlier columns over the whole batch), so margins move
                by ~1e-3 nats against the sequential path that made the shipped samples (a
                smollm2 default DAG measured 0-2 answers and 23-120 margins per quant moving), and
                the per-prompt benchmark stage was only 8% faster there (its contexts dominate).
`shared=False` scores each choice with its own full forward pass instead (the slow reference that
tests compare against). All logits are float32 [tokens, vocab]: numpy arrays, except the context's
rows of a llama.cpp model on a GPU, a torch tensor there (LlamaCppModel.rows_to): `kld_logits` then
stays on the GPU for the KLD or the reference's top-k, and only the few rows that score the choices
come to the host. Each engine's way is a method of its model class (silentzone.backends:
LlamaCppModel, HFModel).
"""

from __future__ import annotations

import numpy as np

from ..settings import current


def full_logits(model, ctx_ids: list[int], conts: list[list[int]]):
    """Per-choice full passes: the same outputs as `shared_logits`, computed the slow way."""
    return model.full_logits(ctx_ids, conts)


def batched_default() -> bool:
    """Whether shared-context scoring is batched when not said (SILENTZONE_MC_BATCHED=1)."""
    return current().mc_batched


def shared_logits(model, ctx_ids: list[int], conts: list[list[int]], batched: bool | None = None):
    """(context logits [Lc, V], [continuation logits [Li, V] per choice]) with one context pass;
    `batched`: see the module doc (None: batched_default()). The engine's own way is
    model.shared_logits (backends: LlamaCppModel, HFModel)."""
    if not ctx_ids or any(len(c) == 0 for c in conts):
        raise ValueError("empty context or continuation")
    batched = batched_default() if batched is None else batched
    return model.shared_logits(ctx_ids, conts, batched)


def _host(x) -> np.ndarray:
    """numpy rows of `x` (a torch tensor's copy on the host)."""
    return x if isinstance(x, np.ndarray) else x.cpu().numpy()


def _rows(ctx_logits, cont_rows: np.ndarray):
    """The context's rows, then the continuation's: where the context's are (numpy or torch)."""
    if isinstance(ctx_logits, np.ndarray):
        return np.concatenate([ctx_logits, cont_rows], 0)
    import torch
    return torch.cat([ctx_logits, torch.from_numpy(np.ascontiguousarray(cont_rows)).to(ctx_logits.device)], 0)


def continuation_logprobs(ctx_logits: np.ndarray, cont_logits: np.ndarray, cont: list[int]):
    """log p of each continuation token and the log-prob gap to the best other token, [L] each.

    Token j is predicted by the row before it: the last context row for j=0, else cont row j-1.
    """
    rows = np.concatenate([_host(ctx_logits[-1:]), cont_logits[: len(cont) - 1]], 0).astype(np.float64)
    idx = np.arange(len(cont))
    # the float64 log-softmax lp = (x - max) - log(sum(exp(x - max))), taken only where it is read:
    # at each row's token, and at the best other token, which is the best other x less the same
    # constant (rounding is monotone, so the bits are those of the full [L, V] log-softmax; tested)
    d = rows - rows.max(-1, keepdims=True)
    log_s = np.log(np.exp(d).sum(-1))
    tok_d = d[idx, cont]
    d[idx, cont] = -np.inf
    tok = tok_d - log_s
    return tok, tok - (d.max(-1) - log_s)


def _logits(model, ctx_ids, conts, shared: bool, batched: bool | None):
    return shared_logits(model, ctx_ids, conts, batched) if shared else full_logits(model, ctx_ids, conts)


def score_mc(model, ctx_ids, conts, gold: int, n_chars, shared: bool = True,
             batched: bool | None = None) -> dict:
    """Multiple choice by log-likelihood.

    Returns ll (per choice, nats), pred, correct (argmax ll == gold), correct_norm (argmax of ll
    per character == gold), margin (ll[gold] - max wrong ll), kld_logits (logits over context +
    gold continuation, the rows that predict its tokens 1..T-1) and ids (context + gold).
    """
    ctx_logits, outs = _logits(model, ctx_ids, conts, shared, batched)
    ll = np.array([continuation_logprobs(ctx_logits, o, c)[0].sum() for o, c in zip(outs, conts)])
    norm = ll / np.maximum(np.asarray(n_chars, dtype=np.float64), 1)
    wrong = np.delete(ll, gold)
    gold_cont = conts[gold]
    return {
        "ll": ll, "pred": int(np.argmax(ll)), "correct": bool(np.argmax(ll) == gold),
        "correct_norm": bool(np.argmax(norm) == gold),
        "margin": float(ll[gold] - wrong.max()) if len(wrong) else float("nan"),
        "ll_gold": float(ll[gold]),
        "kld_logits": _rows(ctx_logits, outs[gold][: len(gold_cont) - 1]),
        "ids": list(ctx_ids) + list(gold_cont),
    }


def score_lastword(model, ctx_ids, target: list[int], shared: bool = True,
                   batched: bool | None = None) -> dict:
    """LAMBADA: correct when every target token is the greedy (argmax) choice given the context.

    margin = the smallest log-prob gap between the target token and the best other token over the
    target's positions (> 0 exactly when the greedy continuation is the target word).
    """
    ctx_logits, (out,) = _logits(model, ctx_ids, [target], shared, batched)
    tok, gap = continuation_logprobs(ctx_logits, out, target)
    return {"correct": bool((gap > 0).all()), "margin": float(gap.min()), "ll_gold": float(tok.sum()),
            "pred": int(0), "correct_norm": bool((gap > 0).all()),
            "kld_logits": _rows(ctx_logits, out[: len(target) - 1]),
            "ids": list(ctx_ids) + list(target)}
