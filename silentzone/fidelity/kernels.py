"""Per-token divergence kernels shared by fidelity scoring and per-prompt benchmark KLD.

All take the candidate's logits (not probabilities) [T, V] and return float64 numpy [T] per metric.
KL(P || Q) = sum_v p_v (log p_v - log q_v), P the reference, Q the candidate, in nats.

`token_metrics` (exact reference: log-probs or logits over the full vocabulary) and
`compact_token_metrics` (reference known as its top-k log-probs plus the log of the remaining mass)
compute every per-token quantity in one pass over the candidate's logits, in row blocks so that the
temporaries stay below ~`block_elems` floats whatever T is. The compact kernel evaluates the
divergences between the two distributions coarsened to k+1 outcomes (the reference's top-k tokens
and one "rest" bucket): by the log-sum inequality this never exceeds the full-vocabulary value, and
the gap is tail_mass x KL(reference tail || candidate tail) (measured in tests/fidelity and
silentzone/fidelity/store.py's doc).
"""

from __future__ import annotations

import math

import numpy as np

LN2 = math.log(2.0)
TOPK_KLD_K = 10  # k of the top-k KLD (candidate shows only its top-k log-probs)
PER_TOKEN = ("kld", "rkld", "js", "nll_q", "nll_p", "top1", "topk_kld")


def _torch(x):
    import torch
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))


def token_kld(ref_logits, cand_logits) -> np.ndarray:
    """KL(reference || candidate) per token, nats. Inputs [T, V] logits; output float64 [T]."""
    return token_metrics(ref_logits, cand_logits, what=("kld",))["kld"]


def _blocks(n_rows: int, vocab: int, block_elems: int):
    step = max(1, block_elems // max(vocab, 1))
    for i in range(0, n_rows, step):
        yield slice(i, min(n_rows, i + step))


def _divergences(lp, lq, out: dict, sl, what) -> None:
    """KLD, reverse KLD and Jensen-Shannon of normalised log-probs lp, lq [t, n] into out[*][sl]."""
    import torch
    d = lp - lq
    p = lp.exp()
    if "kld" in what:
        out["kld"][sl] = (p * d).sum(-1, dtype=torch.float64)
    if "rkld" in what or "js" in what:
        q = lq.exp()
        if "rkld" in what:
            out["rkld"][sl] = -(q * d).sum(-1, dtype=torch.float64)
        if "js" in what:
            lm = torch.logaddexp(lp, lq) - LN2  # log of the mixture (p + q) / 2
            out["js"][sl] = 0.5 * ((p * (lp - lm)).sum(-1, dtype=torch.float64)
                                   + (q * (lq - lm)).sum(-1, dtype=torch.float64))


def _topk_kld(lp_top, idx_top, lq, k: int):
    """KL over the reference's top-k tokens, both renormalised on that set; a token outside the
    candidate's top-k gets the candidate's k-th log-prob (the most that its top-k list allows)."""
    import torch
    k = min(k, lq.shape[-1], lp_top.shape[-1])
    lp_top, idx_top = lp_top[:, :k], idx_top[:, :k]
    floor = lq.topk(k, dim=-1).values[:, -1:]
    lqs = torch.maximum(lq.gather(-1, idx_top), floor)
    a = lp_top.log_softmax(-1)
    b = lqs.log_softmax(-1)
    return (a.exp() * (a - b)).sum(-1, dtype=torch.float64)


def _empty(n: int, what) -> dict:
    import torch
    return {m: torch.empty(n, dtype=torch.float64) for m in what}


def _finish(out: dict) -> dict:
    return {k: v.numpy() for k, v in out.items()}


def _cand_part(cand_logits, sl, targets, out, what, k_topk):
    import torch
    z = cand_logits[sl].float()
    lq = z.log_softmax(-1)
    if "nll_q" in what:
        out["nll_q"][sl] = -lq.gather(-1, targets[sl, None])[:, 0].double()
    return z, lq


def token_metrics(ref, cand_logits, targets=None, ref_top1=None, ref_target_logp=None,
                  what=PER_TOKEN, k_topk: int = TOPK_KLD_K, block_elems: int = 1 << 23) -> dict:
    """Per-token metrics of a candidate against a full-vocabulary reference.

    ref: [T, V] reference logits or log-probs (any float dtype; renormalised here, so a float16
    store's rounding never leaves an unnormalised P). cand_logits: [T, V]. targets: [T] the token
    each position predicts (needed for nll_q, nll_p). ref_top1 / ref_target_logp: the reference's
    argmax and exact target log-prob when `ref` is a rounded store (else taken from `ref`).
    Returns {metric: float64 [T]} for metric in `what` (subset of PER_TOKEN); top1 is 1.0 when the
    candidate's argmax equals the reference's.
    """
    import torch
    ref, cand_logits = _torch(ref), _torch(cand_logits)
    if ref.shape != cand_logits.shape or ref.dim() != 2:
        raise ValueError(f"reference {tuple(ref.shape)} and candidate {tuple(cand_logits.shape)} "
                         "must both be [T, V]")
    if targets is not None:
        targets = _torch(targets).long()
    if ref_top1 is not None:
        ref_top1 = _torch(ref_top1).long()
    if ref_target_logp is not None:
        ref_target_logp = _torch(ref_target_logp).double()
    T, V = ref.shape
    out = _empty(T, what)
    with torch.no_grad():
        for sl in _blocks(T, V, block_elems):
            z, lq = _cand_part(cand_logits, sl, targets, out, what, k_topk)
            lp = ref[sl].float().log_softmax(-1)
            _divergences(lp, lq, out, sl, what)
            if "nll_p" in what:
                out["nll_p"][sl] = (-ref_target_logp[sl] if ref_target_logp is not None
                                    else -lp.gather(-1, targets[sl, None])[:, 0].double())
            if "top1" in what:
                top_p = ref_top1[sl] if ref_top1 is not None else lp.argmax(-1)
                out["top1"][sl] = (z.argmax(-1) == top_p).double()
            if "topk_kld" in what:
                v, i = lp.topk(min(k_topk, V), dim=-1)
                out["topk_kld"][sl] = _topk_kld(v, i, lq, k_topk)
    return _finish(out)


def compact_token_metrics(top_idx, top_logp, tail_logmass, cand_logits, targets, ref_top1,
                          ref_target_logp, what=PER_TOKEN, k_topk: int = TOPK_KLD_K,
                          block_elems: int = 1 << 23) -> dict:
    """Per-token metrics against a compact reference: top-k ids [T, k] (sorted by descending
    log-prob), their log-probs [T, k], log of the remaining mass [T]. Divergences are those of the
    (k+1)-bucket coarsenings (a lower bound, see the module doc); nll_p, top1 use the stored exact
    target log-prob and argmax.
    """
    import torch
    top_idx, top_logp = _torch(top_idx).long(), _torch(top_logp)
    tail_logmass, cand_logits = _torch(tail_logmass), _torch(cand_logits)
    targets, ref_top1 = _torch(targets).long(), _torch(ref_top1).long()
    ref_target_logp = _torch(ref_target_logp).double()
    T, V = cand_logits.shape
    k = top_idx.shape[1]
    if k < k_topk and "topk_kld" in what:
        raise ValueError(f"compact store keeps k={k} < {k_topk} tokens needed by topk_kld")
    out = _empty(T, what)
    with torch.no_grad():
        for sl in _blocks(T, V, block_elems):
            z, lq = _cand_part(cand_logits, sl, targets, out, what, k_topk)
            idx = top_idx[sl]
            lq_top = lq.gather(-1, idx)
            lq_rest = lq.scatter(-1, idx, float("-inf")).logsumexp(-1, keepdim=True)
            lp_b = torch.cat([top_logp[sl].float(), tail_logmass[sl, None].float()], -1)
            lp_b = lp_b.log_softmax(-1)
            lq_b = torch.cat([lq_top, lq_rest], -1)
            # exp(-inf) = 0 buckets (a reference whose top-k holds all the mass) contribute 0:
            lp_b = lp_b.clamp_min(-1e4)
            lq_b = lq_b.clamp_min(-1e4)
            _divergences(lp_b, lq_b, out, sl, what)
            if "nll_p" in what:
                out["nll_p"][sl] = -ref_target_logp[sl]
            if "top1" in what:
                out["top1"][sl] = (z.argmax(-1) == ref_top1[sl]).double()
            if "topk_kld" in what:
                out["topk_kld"][sl] = _topk_kld(top_logp[sl, :k_topk].float(), idx[:, :k_topk], lq,
                                                k_topk)
    return _finish(out)


def summarize(per_token: dict) -> dict:
    """Aggregate per-token arrays (flattened) into the FIDELITY metrics, plain floats.

    Percentiles interpolate linearly between order statistics, as llama-perplexity's do.
    """
    kld = np.ravel(per_token["kld"])
    n = kld.size
    out = {"kld_mean": kld.mean(), "kld_median": np.median(kld)}
    for name, f in (("p90", 90), ("p95", 95), ("p99", 99), ("p999", 99.9)):
        out[f"kld_{name}"] = np.percentile(kld, f)
    out["kld_max"] = kld.max()
    for m in ("rkld", "js", "topk_kld"):
        if m in per_token:
            x = np.ravel(per_token[m])
            out[f"{m}_mean"] = x.mean()
            out[f"{m}_p99"] = np.percentile(x, 99)
    if "top1" in per_token:
        out["top1_agreement"] = np.ravel(per_token["top1"]).mean()
    if "nll_q" in per_token and "nll_p" in per_token:
        nq, npr = np.ravel(per_token["nll_q"]), np.ravel(per_token["nll_p"])
        out["ppl_quant"] = math.exp(nq.mean())
        out["ppl_ref"] = math.exp(npr.mean())
        out["delta_ppl"] = out["ppl_quant"] - out["ppl_ref"]
        out["ln_ppl_ratio_mean"] = (nq - npr).mean()  # = ln(PPL(Q)/PPL(ref))
        out["ppl_ratio"] = math.exp(out["ln_ppl_ratio_mean"])
        dp = np.exp(-nq) - np.exp(-npr)  # probability of the correct token, candidate - reference
        out["dp_mean"] = dp.mean()
        out["dp_rms"] = math.sqrt((dp * dp).mean())
        for name, f in (("p01", 1), ("p05", 5), ("p50", 50), ("p95", 95), ("p99", 99)):
            out[f"dp_{name}"] = np.percentile(dp, f)
        out["dp_max_abs"] = np.abs(dp).max()
    out["n_tokens"] = n
    return {k: (int(v) if k == "n_tokens" else float(v)) for k, v in out.items()}
