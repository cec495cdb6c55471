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
                3.1x / 3.7x a full pass per choice (bench/mc_scoring.py), and on the F32 reference
                the per-choice passes' bits (llama.cpp) or within 3e-5 nats (transformers).
                Not the default: on quantized models the logits of a token depend on the batch it
                is in (measured: the K-quant and IQ GGUFs moved, Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 did not,
                which points at the kernels llama.cpp picks per type and batch shape; bitsandbytes
                int8 picks its outlier columns over the whole batch), so margins move
                by ~1e-3 nats against the sequential path that made the shipped samples (a
                smollm2 default DAG measured 0-2 answers and 23-120 margins per quant moving), and
                the per-prompt benchmark stage was only 8% faster there (its contexts dominate).
`shared=False` scores each choice with its own full forward pass instead (the slow reference that
tests compare against). All logits are float32 numpy arrays [tokens, vocab].
"""

from __future__ import annotations

import os

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


def batched_default() -> bool:
    """Whether shared-context scoring is batched when not said (SILENTZONE_MC_BATCHED=1)."""
    return os.environ.get("SILENTZONE_MC_BATCHED", "0") == "1"


def shared_logits(model, ctx_ids: list[int], conts: list[list[int]], batched: bool | None = None):
    """(context logits [Lc, V], [continuation logits [Li, V] per choice]) with one context pass;
    `batched`: see the module doc (None: batched_default())."""
    if not ctx_ids or any(len(c) == 0 for c in conts):
        raise ValueError("empty context or continuation")
    batched = batched_default() if batched is None else batched
    if model.kind == "llama.cpp":
        return (_llama_batched if batched else _llama_sequential)(model, ctx_ids, conts)
    if batched and len(conts) > 1 and _packable(model, len(ctx_ids) + max(len(c) for c in conts)):
        return _hf_packed(model, ctx_ids, conts)
    return _hf_shared(model, ctx_ids, conts)


MAX_STREAMS = 16  # more choices than this fall back to one continuation call each


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

    def decode(self, chunks) -> np.ndarray:
        """Decode each chunk of (token, pos, seq, wants_logits), one llama_decode call per chunk (at
        most n_batch tokens each); the logit rows asked for, in order."""
        lc, b, out = self._llama_cpp, self.batch, []
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
                out.append(np.ctypeslib.as_array(lc.llama_get_logits(self.ctx.ctx),
                                                 shape=(n_out, self.vocab)).copy())
        return np.concatenate(out, 0) if out else np.empty((0, self.vocab), np.float32)


def _streams(model, k: int, need: int) -> _Streams:
    """The model's stream context, rebuilt larger when an item needs more choices or cells. Streams
    are sized to the items (a power of two from 512 cells, at most the model's n_ctx), not to n_ctx:
    the context's cells are copied to each stream as whole buffers, so their size is paid per item."""
    n_ctx = int(model.llm.n_ctx())
    if need > n_ctx:
        raise ValueError(f"{model.name}: {need} tokens exceed n_ctx {n_ctx}")
    st = getattr(model, "_mc_streams", None)
    if st is None or st.n_seq < k or st.n_ctx_seq < need:
        size = max(512, 1 << (need - 1).bit_length(), st.n_ctx_seq if st else 0)
        n_seq = max(k, 4, st.n_seq if st else 0)
        model._mc_streams = None  # free the old one first
        st = model._mc_streams = _Streams(model.llm, n_seq, min(size, n_ctx))
    return st


def _llama_batched(model, ctx_ids, conts):
    n, k = len(ctx_ids), len(conts)
    if k == 1:  # nothing to share: one full pass is one call over the weights instead of two
        return full_logits(model, ctx_ids, conts)
    if k > MAX_STREAMS:
        return _llama_sequential(model, ctx_ids, conts)
    L = max(len(c) for c in conts)
    st = _streams(model, k, n + L)
    st.ctx.kv_cache_clear()
    nb = st.n_batch
    ctx_toks = [(t, i, 0, True) for i, t in enumerate(ctx_ids)]
    ctx_logits = st.decode([ctx_toks[i: i + nb] for i in range(0, n, nb)])
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


def _llama_sequential(model, ctx_ids, conts):
    """The context once, then one call per continuation (truncating the KV cache back to it)."""
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


def _packable(model, total: int) -> bool:
    """Whether one forward over context + all continuations (a tree mask) equals per-choice passes:
    every layer is attention (no recurrent state, which would run through the other choices) and
    no sliding window is shorter than the packed length (a custom mask replaces it)."""
    cfg = model.model.config.get_text_config()
    kinds = set(getattr(cfg, "layer_types", None) or ["full_attention"])
    if not kinds <= {"full_attention", "sliding_attention"}:
        return False
    win = getattr(cfg, "sliding_window", None)
    return not ("sliding_attention" in kinds and win and total > win)


def _hf_packed(model, ctx_ids, conts):
    """One forward of [context, choice 1, ..., choice k]: each choice token attends to the context
    and to its own earlier tokens (a 4D mask), at the positions it has in its own full pass."""
    import torch
    m, dev = model.model, model.device
    n = len(ctx_ids)
    ids = list(ctx_ids) + [t for c in conts for t in c]
    pos = list(range(n)) + [n + j for c in conts for j in range(len(c))]
    T = len(ids)
    allow = torch.zeros((T, T), dtype=torch.bool)
    allow[:n, :n] = torch.ones((n, n), dtype=torch.bool).tril()
    allow[n:, :n] = True
    o = n
    for c in conts:
        allow[o: o + len(c), o: o + len(c)] = torch.ones((len(c), len(c)), dtype=torch.bool).tril()
        o += len(c)
    dtype = m.dtype  # an additive float mask: what eager attention adds and sdpa accepts
    mask = torch.zeros((1, 1, T, T), dtype=dtype)
    mask.masked_fill_(~allow, torch.finfo(dtype).min)
    with torch.no_grad():  # not inference_mode: optimum-quanto int4 fails under it
        out = m(input_ids=torch.tensor([ids], device=dev), attention_mask=mask.to(dev),
                position_ids=torch.tensor([pos], device=dev), use_cache=False)
    lg = out.logits[0].float().cpu().numpy()
    outs, o = [], n
    for c in conts:
        outs.append(lg[o: o + len(c)])
        o += len(c)
    return lg[:n], outs


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
        "kld_logits": np.concatenate([ctx_logits, outs[gold][: len(gold_cont) - 1]], 0),
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
            "kld_logits": np.concatenate([ctx_logits, out[: len(target) - 1]], 0),
            "ids": list(ctx_ids) + list(target)}
