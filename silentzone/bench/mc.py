"""Likelihood scoring on both backends, with the context shared across choices.

    ctx_logits, cont_logits = shared_logits(model, ctx_ids, [cont_ids, ...])
    res = score_mc(model, ctx_ids, conts, gold, n_chars)       # acc, acc_norm, margin, ...
    res = score_lastword(model, ctx_ids, target_ids)           # greedy exact match (LAMBADA)

`model` is what `silentzone.backends.open_model` returns. The context is evaluated once and every
continuation reuses its KV cache:
  llama.cpp     eval(context); for each choice: truncate n_tokens back to the context length (the
                binding drops the KV cells past it) and eval the continuation;
  transformers  one forward of the context with use_cache, then the cache is repeated across the
                choices and all continuations run as one right-padded batch (right padding needs
                no mask: a real token never attends to a later pad).
`shared=False` scores each choice with its own full forward pass instead (the slow reference that
tests compare against). All logits are float32 numpy arrays [tokens, vocab].
"""

from __future__ import annotations

import numpy as np


def full_logits(model, ctx_ids: list[int], conts: list[list[int]]):
    """Per-choice full passes: the same outputs as `shared_logits`, computed the slow way."""
    ctx_logits, outs = None, []
    for c in conts:
        lg = model.logits(list(ctx_ids) + list(c))
        if ctx_logits is None:
            ctx_logits = lg[: len(ctx_ids)]
        outs.append(lg[len(ctx_ids):])
    return ctx_logits, outs


def shared_logits(model, ctx_ids: list[int], conts: list[list[int]]):
    """(context logits [Lc, V], [continuation logits [Li, V] per choice]) with one context pass."""
    if not ctx_ids or any(len(c) == 0 for c in conts):
        raise ValueError("empty context or continuation")
    if model.kind == "llama.cpp":
        return _llama_shared(model, ctx_ids, conts)
    return _hf_shared(model, ctx_ids, conts)


def _llama_shared(model, ctx_ids, conts):
    llm = model.llm
    n = len(ctx_ids)
    need = n + max(len(c) for c in conts)
    if need > llm.n_ctx():
        raise ValueError(f"{model.name}: {need} tokens exceed n_ctx {llm.n_ctx()}")
    llm.reset()
    llm.eval(list(ctx_ids))
    ctx_logits = np.array(llm.scores[:n], dtype=np.float32, copy=True)
    outs = []
    for c in conts:
        llm.n_tokens = n  # eval() removes the KV cells from n_tokens on, then appends c
        llm.eval(list(c))
        outs.append(np.array(llm.scores[n: n + len(c)], dtype=np.float32, copy=True))
    return ctx_logits, outs


def _hf_shared(model, ctx_ids, conts):
    import torch
    m, dev = model.model, model.device
    lens = [len(c) for c in conts]
    batch = torch.zeros((len(conts), max(lens)), dtype=torch.long)
    for i, c in enumerate(conts):
        batch[i, : len(c)] = torch.tensor(c)
        batch[i, len(c):] = c[-1]  # any real id: pads sit after the real tokens
    with torch.no_grad():  # not inference_mode: optimum-quanto int4 fails under it
        out = m(input_ids=torch.tensor([list(ctx_ids)], device=dev), use_cache=True)
        cache = out.past_key_values
        if len(conts) > 1:
            try:
                cache.batch_repeat_interleave(len(conts))
            except (AttributeError, NotImplementedError):
                # caches with recurrent layers (Qwen3.5/3.6 Gated DeltaNet) cannot be repeated:
                # run the context once per continuation, as one batch
                ctx = torch.tensor([list(ctx_ids)] * len(conts), device=dev)
                cache = m(input_ids=ctx, use_cache=True).past_key_values
        out2 = m(input_ids=batch.to(dev), past_key_values=cache, use_cache=True)
    ctx_logits = out.logits[0].float().cpu().numpy()
    cl = out2.logits.float().cpu().numpy()
    return ctx_logits, [cl[i, : lens[i]] for i in range(len(conts))]


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64, copy=False)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def continuation_logprobs(ctx_logits: np.ndarray, cont_logits: np.ndarray, cont: list[int]):
    """log p of each continuation token and the log-prob gap to the best other token, [L] each.

    Token j is predicted by the row before it: the last context row for j=0, else cont row j-1.
    """
    rows = np.concatenate([ctx_logits[-1:], cont_logits[: len(cont) - 1]], 0)
    lp = _log_softmax(rows)
    idx = np.arange(len(cont))
    tok = lp[idx, cont]
    other = lp.copy()
    other[idx, cont] = -np.inf
    return tok, tok - other.max(-1)


def score_mc(model, ctx_ids, conts, gold: int, n_chars, shared: bool = True) -> dict:
    """Multiple choice by log-likelihood.

    Returns ll (per choice, nats), pred, correct (argmax ll == gold), correct_norm (argmax of ll
    per character == gold), margin (ll[gold] - max wrong ll), kld_logits (logits over context +
    gold continuation, the rows that predict its tokens 1..T-1) and ids (context + gold).
    """
    ctx_logits, outs = (shared_logits if shared else full_logits)(model, ctx_ids, conts)
    ll = np.array([continuation_logprobs(ctx_logits, o, c)[0].sum() for o, c in zip(outs, conts)])
    norm = ll / np.maximum(np.asarray(n_chars, dtype=np.float64), 1)
    wrong = np.delete(ll, gold)
    gold_cont = conts[gold]
    return {
        "ll": ll, "pred": int(np.argmax(ll)), "correct": bool(np.argmax(ll) == gold),
        "correct_norm": bool(np.argmax(norm) == gold),
        "margin": float(ll[gold] - wrong.max()) if len(wrong) else float("nan"),
        "ll_gold": float(ll[gold]),
        "kld_logits": np.concatenate([ctx_logits, outs[gold][: len(gold_cont) - 1]], 0),
        "ids": list(ctx_ids) + list(gold_cont),
    }


def score_lastword(model, ctx_ids, target: list[int], shared: bool = True) -> dict:
    """LAMBADA: correct when every target token is the greedy (argmax) choice given the context.

    margin = the smallest log-prob gap between the target token and the best other token over the
    target's positions (> 0 exactly when the greedy continuation is the target word).
    """
    ctx_logits, (out,) = (shared_logits if shared else full_logits)(model, ctx_ids, [target])
    tok, gap = continuation_logprobs(ctx_logits, out, target)
    return {"correct": bool((gap > 0).all()), "margin": float(gap.min()), "ll_gold": float(tok.sum()),
            "pred": int(0), "correct_norm": bool((gap > 0).all()),
            "kld_logits": np.concatenate([ctx_logits, out[: len(target) - 1]], 0),
            "ids": list(ctx_ids) + list(target)}
