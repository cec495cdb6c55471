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


def _crossfit(f, g, mean_g, clip: float = 2.0):
    """Unbiased mean of f over a sample [t, m] made of two independent halves, with control variate g
    (known mean `mean_g` [t]): each half's coefficient is fitted on the other half (cross-fitting),
    so the coefficient never depends on the points it corrects."""
    import torch
    h = f.shape[-1] // 2
    fa, fb, ga, gb = f[:, :h], f[:, h:], g[:, :h], g[:, h:]

    def beta(ff, gg):
        fc, gc = ff - ff.mean(-1, keepdim=True), gg - gg.mean(-1, keepdim=True)
        var = (gc * gc).mean(-1)
        b = (fc * gc).mean(-1) / var.clamp_min(1e-300)
        return torch.where(var > 0, b, torch.zeros_like(b)).clamp(-clip, clip)

    ea = fa.mean(-1) - beta(fb, gb) * (ga.mean(-1) - mean_g)
    eb = fb.mean(-1) - beta(fa, ga) * (gb.mean(-1) - mean_g)
    return 0.5 * (ea + eb)


def compact_token_metrics(ref: dict, cand_logits, what=PER_TOKEN, k_topk: int = TOPK_KLD_K,
                          block_elems: int = 1 << 23) -> dict:
    """Per-token metrics against a compact reference window (store.encode_window / Store.read):
    top_idx [T, k] sorted by descending log-prob, top_logp [T, k], tail_logmass [T] (log of the
    remaining mass), targets, top1, target_logp [T], and optionally a tail sample tail_idx,
    tail_logp [T, m] drawn in proportion to the reference's tail probabilities.

    Every divergence is a sum over the vocabulary of p_v f(d_v), d = log p - log q: the top-k part
    is summed exactly; the tail part is tail_mass x E_tail[f(d)], estimated from the sample with the
    control variate exp(-d) = q/p, whose tail mean is known exactly (candidate tail mass / reference
    tail mass), fitted by cross-fitting (_crossfit): unbiased, and its variance is that of the
    second-order remainder for near-identical models (Q8_0) and of f itself for distant ones.
    Without a tail sample the divergences are those of the (k+1)-bucket coarsening (lower bounds).
    nll_p and top1 use the stored exact target log-prob and argmax.
    """
    import torch
    top_idx, top_logp = _torch(ref["top_idx"]).long(), _torch(ref["top_logp"])
    tail_logmass, cand_logits = _torch(ref["tail_logmass"]), _torch(cand_logits)
    targets, ref_top1 = _torch(ref["targets"]).long(), _torch(ref["top1"]).long()
    ref_target_logp = _torch(ref["target_logp"]).double()
    sampled = "tail_idx" in ref and np.shape(ref["tail_idx"])[-1] >= 2
    if sampled:
        tail_idx, tail_logp = _torch(ref["tail_idx"]).long(), _torch(ref["tail_logp"])
    T, V = cand_logits.shape
    k_topk = min(k_topk, top_idx.shape[1])
    out = _empty(T, what)
    with torch.no_grad():
        for sl in _blocks(T, V, block_elems):
            z, lq = _cand_part(cand_logits, sl, targets, out, what, k_topk)
            idx = top_idx[sl]
            lp_h = top_logp[sl].double()
            lp_rest = tail_logmass[sl].double()
            # renormalise the float16-rounded reference (the shift applies to the tail sample too)
            norm = torch.cat([lp_h, lp_rest[:, None]], -1).logsumexp(-1, keepdim=True)
            lp_h, lp_rest = lp_h - norm, lp_rest - norm[:, 0]
            lq_h = lq.gather(-1, idx).double()
            lq_rest = lq.scatter(-1, idx, float("-inf")).logsumexp(-1).double()
            if sampled:
                d_h = lp_h - lq_h
                p_h = lp_h.exp()
                d_t = tail_logp[sl].double() - norm - lq.gather(-1, tail_idx[sl]).double()
                r_t = torch.exp(-d_t)                   # q/p of each sampled tail token
                mean_r = torch.exp(lq_rest - lp_rest)   # its exact tail mean
                mass = lp_rest.exp()
                terms = {"kld": (d_h, d_t), "rkld": (-d_h * torch.exp(-d_h), -d_t * r_t),
                         "js": (_js_f(d_h), _js_f(d_t))}
                for name, (fh, ft) in terms.items():
                    if name in what:
                        out[name][sl] = (p_h * fh).sum(-1) + mass * _crossfit(ft, r_t, mean_r)
            else:
                lp_b = torch.cat([lp_h, lp_rest[:, None]], -1)
                lq_b = torch.cat([lq_h, lq_rest[:, None]], -1)
                # exp(-inf) = 0 buckets (a reference whose top-k holds all the mass) contribute 0:
                _divergences(lp_b.clamp_min(-1e4), lq_b.clamp_min(-1e4), out, sl, what)
            if "nll_p" in what:
                out["nll_p"][sl] = -ref_target_logp[sl]
            if "top1" in what:
                out["top1"][sl] = (z.argmax(-1) == ref_top1[sl]).double()
            if "topk_kld" in what:
                out["topk_kld"][sl] = _topk_kld(top_logp[sl, :k_topk].float(), idx[:, :k_topk], lq,
                                                k_topk)
    return _finish(out)


def _js_f(d):
    """Jensen-Shannon summand divided by p, as a function of d = log p - log q:
    [p log(p/m) + q log(q/m)] / (2p) with m = (p + q)/2."""
    import torch
    e = torch.exp(-d)
    l1 = torch.log1p(e)
    return 0.5 * (LN2 - l1) + 0.5 * e * (LN2 - d - l1)


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
