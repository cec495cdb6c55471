"""Per-token divergence kernels shared by fidelity scoring and per-prompt benchmark KLD.

All take the candidate's logits (not probabilities) [T, V] and return float64 numpy [T] per metric.
KL(P || Q) = sum_v p_v (log p_v - log q_v), P the reference, Q the candidate, in nats.

`token_metrics` (exact reference: log-probs or logits over the full vocabulary) and
`compact_token_metrics` (reference known by its top-k log-probs, the mass of the rest and a
sample of that rest; see store.py) compute every per-token quantity in one pass over the
candidate's logits, in row blocks so that the temporaries stay bounded whatever T is. They run on
the device of the candidate's logits (a torch tensor on a GPU keeps the work there; numpy means
CPU), moving the reference there block by block.
"""

from __future__ import annotations

import math

import numpy as np

from ..settings import current

LN2 = math.log(2.0)
TOPK_KLD_K = 10  # k of the top-k KLD (candidate shows only its top-k log-probs)
PER_TOKEN = ("kld", "rkld", "js", "nll_q", "nll_p", "top1", "topk_kld")
FLOOR_PREFIX = "kld_top"  # per-token key of the paper's Eq. 5 variant: kld_top{k}_floor{floor}


def floor_kld_name(k: int, floor: float) -> str:
    """Per-token key (and metric stem) of the top-k KLD with a fixed log-probability floor,
    e.g. (20, -20.0) -> 'kld_top20_floor-20'; the summary metrics add _mean and _p99."""
    if int(k) < 1 or not (math.isfinite(floor) and floor < 0):
        raise ValueError(f"top-k floor KLD needs k >= 1 and a finite negative floor, got {k}, {floor}")
    return f"{FLOOR_PREFIX}{int(k)}_floor{float(floor):g}"


def parse_floor_kld_name(name: str) -> tuple[int, float] | None:
    """(k, floor) of a floor_kld_name key or of its _mean/_p99 metric; None for other names."""
    import re
    m = re.fullmatch(rf"{FLOOR_PREFIX}(\d+)_floor(-[0-9.e+-]+?)(?:_mean|_p99)?", name)
    return (int(m.group(1)), float(m.group(2))) if m else None


def _torch(x, device=None):
    """A torch view of x (numpy copies only when needed), moved to `device` when given."""
    import torch
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    return t if device is None else t.to(device, non_blocking=True)


def token_kld(ref_logits, cand_logits) -> np.ndarray:
    """KL(reference || candidate) per token, nats. Inputs [T, V] logits; output float64 [T]."""
    return token_metrics(ref_logits, cand_logits, what=("kld",))["kld"]


def _blocks(n_rows: int, vocab: int, block_elems: int | None, device):
    if block_elems is None:  # ~32 MB float temporaries on CPU; on a GPU the compiled
        # kernels materialise none, so blocks can be large (fewer launches)
        block_elems = 1 << 23 if str(device) == "cpu" else 1 << 30
    step = max(1, block_elems // max(vocab, 1))
    for i in range(0, n_rows, step):
        yield slice(i, min(n_rows, i + step))


def compiled(fn, device):
    """torch.compile(fn) on a GPU (fuses the full-vocabulary passes into a few kernels); the eager
    fn on the CPU, when SILENTZONE_COMPILE=0, or if compiling fails."""
    import torch
    if device.type != "cuda" or not current().compile:
        return fn
    if fn not in _COMPILED:
        _COMPILED[fn] = torch.compile(fn, dynamic=True)
    c = _COMPILED[fn]

    def run(*args):
        try:
            return c(*args)
        except Exception:  # noqa: BLE001 - a compiler failure must not stop scoring
            _COMPILED[fn] = fn
            return fn(*args)
    return run


_COMPILED: dict = {}


def _exact_divergences(lp_raw, zf, lse_q, want_rkld: bool, want_js: bool):
    """KLD, reverse KLD, JS [t] (float64; zeros when not wanted) of reference log-probs or logits
    lp_raw [t, V] (renormalised here) against candidate logits zf [t, V] (any float dtype) with
    logsumexp lse_q [t]. Sums run in float32 (cascade summation: relative error ~1e-7 of the sum of
    |terms|, far below the divergences), which is 3x faster on a CPU than float64 accumulation."""
    import torch
    lp = lp_raw.float()
    lp = lp - torch.logsumexp(lp, -1, keepdim=True)
    d = lp - (zf.float() - lse_q[:, None].float())       # log p - log q
    p = lp.exp()
    kld = (p * d).sum(-1).double()
    zero = torch.zeros_like(kld)
    if not (want_rkld or want_js):
        return kld, zero, zero, lp
    lq = lp - d
    q = lq.exp()
    rkld = -(q * d).sum(-1).double() if want_rkld else zero
    js = zero
    if want_js:
        lm = torch.logaddexp(lp, lq) - LN2  # log of the mixture (p + q) / 2
        js = 0.5 * ((p * (lp - lm)).sum(-1) + (q * (lq - lm)).sum(-1)).double()
    return kld, rkld, js, lp


def _topk_kld(lp_top, lq_top, floor):
    """KL over the reference's top-k tokens, both renormalised on that set; a token outside the
    candidate's top-k gets the candidate's k-th log-prob `floor` (the most its top-k list allows).
    lp_top, lq_top: [t, k] log-probs of the reference's top-k tokens; floor [t]."""
    import torch
    a = lp_top.double().log_softmax(-1)
    b = torch.maximum(lq_top.double(), floor.double()[:, None]).log_softmax(-1)
    return (a.exp() * (a - b)).sum(-1)


def _floor_kld(lp_top, lq_top, kth_q, floor: float):
    """The paper's Eq. 5 as read here (docs/paper.md: "a top-k KLD with a fixed log-probability floor
    for reference tokens outside the candidate's top-k"; the formula itself is not public):

        D_k,floor = sum over v in TopK(P) of p_v (log p_v - l_v),
        l_v = max(log q_v, floor) if v is in TopK(Q), else floor,

    with p and q the full-vocabulary probabilities (no renormalisation on the top-k set). A
    candidate that reveals only its top-k log-probs is scored with what it reveals; the floor is
    the fixed log-prob charged for a reference token it does not list. With k = V and a floor
    below every log q_v this is the exact KLD; for k < V it leaves out the reference tail's terms.
    lp_top [t, k]: reference log-probs of its top-k tokens; lq_top [t, k]: the candidate's
    log-probs of the same tokens; kth_q [t]: the candidate's k-th largest log-prob (membership of
    its top-k: log q_v >= kth_q; a tie at the k-th value counts as inside)."""
    import torch
    lp, lq = lp_top.double(), lq_top.double()
    fl = torch.full_like(lq, float(floor))
    ell = torch.where(lq >= kth_q.double()[:, None], torch.maximum(lq, fl), fl)
    return (lp.exp() * (lp - ell)).sum(-1)


def _floor_klds(out: dict, sl, floors, lp_top_idx, c):
    """Fill out[floor_kld_name(k, f)][sl] for (k, f) in floors. lp_top_idx(k) -> (reference
    log-probs [t, k] of its top-k tokens, their ids [t, k]); c: the candidate's _Cand."""
    for k, f in floors:
        lp_k, idx = lp_top_idx(k)
        kth = _topk(c.z, min(k, c.z.shape[-1]))[0][:, -1].double() - c.lse
        out[floor_kld_name(k, f)][sl] = _floor_kld(lp_k, c.logp(idx), kth, f)


def _empty(n: int, what, device) -> dict:
    import torch
    return {m: torch.empty(n, dtype=torch.float64, device=device) for m in what}


def _finish(out: dict, numpy: bool = True) -> dict:
    """numpy float64 arrays (one device-to-host copy each), or the tensors where they are when a
    caller gathers many blocks first (score_store: one copy at the end, no sync per batch)."""
    return {k: v.cpu().numpy() for k, v in out.items()} if numpy else out


def _topk(z, k: int, chunk: int = 512, cmax=None):
    """torch.topk(z, k) along the last axis ([t, V]; values descending, indices), computed from the
    k chunks of `chunk` ids with the largest maxima: every top-k element lies in one of them (a
    chunk holding one has a maximum at least that large, and fewer than k chunks can beat it). One
    cheap max pass instead of a radix select over the whole row (8x faster for V = 262,144 on H100).
    A vocabulary that is no multiple of `chunk` adds its last V % chunk ids to the candidates
    (Qwen's 151,936 fell back to the full radix select: 4.5 ms per 4,088 rows on an H100).
    `cmax` [t, V // chunk]: the chunk maxima, when the caller has them already."""
    import torch
    t, V = z.shape
    main = V - V % chunk  # whole chunks; the last V % chunk ids join the candidates as they are
    if main // chunk <= k:
        return tuple(z.topk(k, dim=-1))
    zc = z[:, :main].reshape(t, main // chunk, chunk)                  # a view: rows keep stride V
    best = (zc.amax(-1) if cmax is None else cmax).topk(k, dim=-1).indices  # [t, k] chunk ids
    cand = zc.gather(1, best[:, :, None].expand(-1, -1, chunk)).reshape(t, k * chunk)
    if main < V:  # e.g. Qwen's 151,936 = 296 x 512 + 384
        cand = torch.cat([cand, z[:, main:]], -1)
    v, j = cand.topk(k, dim=-1)
    inside = j < k * chunk
    jj = j.clamp_max(k * chunk - 1)
    return v, torch.where(inside, best.gather(1, jj // chunk) * chunk + jj % chunk, main + j - k * chunk)


def _lse(z):
    import torch
    return torch.logsumexp(z.float(), -1).double()


def _lse_shifted(z, m):
    """torch.logsumexp(z, -1) of float32 z [t, V], as float64, given its row maxima m [t]: ATen's
    own steps (an infinite maximum shifts by 0; same sums, so the same bits), minus its max pass."""
    import torch
    m = torch.where(m.abs() == float("inf"), torch.zeros_like(m), m)
    return ((z - m[:, None]).exp_().sum(-1).log_() + m).double()


class _Cand:
    """One row block of candidate logits z [t, V] (kept in their own dtype): log-normaliser,
    argmax and k-th largest value; log-probs are gathered where needed, never materialised."""

    def __init__(self, z, k_floor: int, chunk: int = 512):
        import torch
        self.z = z
        t, V = z.shape
        cmax = None
        if z.device.type == "cpu" and z.dtype == torch.float32 and V % chunk == 0:
            # one pass of chunk maxima serves the argmax, the logsumexp's shift and the top-k
            # floor (three full-vocabulary max passes before)
            zc = z.reshape(t, V // chunk, chunk)
            cmax = zc.amax(-1)                                         # [t, V / chunk]
            best = cmax.argmax(-1)                                     # first chunk with the max
            self.top1 = best * chunk + zc[torch.arange(t), best].argmax(-1)  # = z.argmax(-1)
            self.lse = _lse_shifted(z, cmax.amax(-1))
        else:
            stats = None
            if z.device.type == "cuda" and current().triton:
                from ._triton import row_stats  # one pass: lse, argmax, chunk maxima
                stats = row_stats(z, chunk)
            if stats is not None:
                lse, self.top1, cmax = stats
                self.lse = lse.double()
            else:
                self.lse = compiled(_lse, z.device)(z)
                self.top1 = z.argmax(-1)
        self.floor = (_topk(z, min(k_floor, V), chunk, cmax)[0][:, -1].double() - self.lse
                      if k_floor else None)

    def logp(self, idx):
        """Candidate log-probs (float64) at ids idx [t, j]."""
        return self.z.gather(-1, idx).double() - self.lse[:, None]


def token_metrics(ref, cand_logits, targets=None, ref_top1=None, ref_target_logp=None,
                  what=PER_TOKEN, k_topk: int = TOPK_KLD_K, block_elems: int | None = None,
                  numpy: bool = True, floors=()) -> dict:
    """Per-token metrics of a candidate against a full-vocabulary reference.

    ref: [T, V] reference logits or log-probs (any float dtype; renormalised here, so a float16
    store's rounding never leaves an unnormalised P). cand_logits: [T, V]. targets: [T] the token
    each position predicts (needed for nll_q, nll_p). ref_top1 / ref_target_logp: the reference's
    argmax and exact target log-prob when `ref` is a rounded store (else taken from `ref`).
    Returns {metric: float64 [T]} for metric in `what` (subset of PER_TOKEN); top1 is 1.0 when the
    candidate's argmax equals the reference's. numpy=False returns float64 tensors on the
    candidate's device instead (no device-to-host copy, no sync).
    floors: ((k, floor), ...) adds the top-k KLD with a fixed log-probability floor (_floor_kld,
    the paper's Eq. 5) under the key floor_kld_name(k, floor); opt-in, none by default.
    """
    import torch
    cand_logits = _torch(cand_logits)
    dev = cand_logits.device
    ref = _torch(ref)
    if ref.shape != cand_logits.shape or ref.dim() != 2:
        raise ValueError(f"reference {tuple(ref.shape)} and candidate {tuple(cand_logits.shape)} "
                         "must both be [T, V]")
    if targets is not None:
        targets = _torch(targets, dev).long()
    if ref_top1 is not None:
        ref_top1 = _torch(ref_top1, dev).long()
    if ref_target_logp is not None:
        ref_target_logp = _torch(ref_target_logp, dev).double()
    T, V = ref.shape
    floors = tuple((int(k), float(f)) for k, f in floors)
    out = _empty(T, (*what, *(floor_kld_name(k, f) for k, f in floors)), dev)
    divs = compiled(_exact_divergences, dev)
    with torch.no_grad():
        for sl in _blocks(T, V, block_elems, dev):
            c = _Cand(cand_logits[sl], k_topk if "topk_kld" in what else 0)
            kld, rkld, js, lp = divs(ref[sl].to(dev), c.z, c.lse, "rkld" in what, "js" in what)
            for name, v in (("kld", kld), ("rkld", rkld), ("js", js)):
                if name in what:
                    out[name][sl] = v
            if "nll_q" in what:
                out["nll_q"][sl] = -c.logp(targets[sl, None])[:, 0]
            if "nll_p" in what:
                out["nll_p"][sl] = (-ref_target_logp[sl] if ref_target_logp is not None
                                    else -lp.gather(-1, targets[sl, None])[:, 0].double())
            if "top1" in what:
                top_p = ref_top1[sl] if ref_top1 is not None else lp.argmax(-1)
                out["top1"][sl] = (c.top1 == top_p).double()
            if "topk_kld" in what:
                v, i = _topk(lp, min(k_topk, V))
                out["topk_kld"][sl] = _topk_kld(v, c.logp(i), c.floor)
            if floors:
                _floor_klds(out, sl, floors, lambda k, lp=lp: _topk(lp, min(k, V)), c)
    return _finish(out, numpy)


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
                          block_elems: int | None = None, numpy: bool = True, floors=()) -> dict:
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
    nll_p and top1 use the stored exact target log-prob and argmax. numpy=False: float64 tensors
    on the candidate's device (see token_metrics). floors: as in token_metrics; each k must be at
    most the store's k (the reference's top-k must be known).
    """
    import torch
    cand_logits = _torch(cand_logits)
    dev = cand_logits.device
    top_idx, top_logp = _torch(ref["top_idx"], dev).long(), _torch(ref["top_logp"], dev)
    tail_logmass = _torch(ref["tail_logmass"], dev)
    targets, ref_top1 = _torch(ref["targets"], dev).long(), _torch(ref["top1"], dev).long()
    ref_target_logp = _torch(ref["target_logp"], dev).double()
    sampled = "tail_idx" in ref and tuple(ref["tail_idx"].shape)[-1] >= 2
    if sampled:
        tail_idx, tail_logp = _torch(ref["tail_idx"], dev).long(), _torch(ref["tail_logp"], dev)
    T, V = cand_logits.shape
    k_topk = min(k_topk, top_idx.shape[1])
    floors = tuple((int(k), float(f)) for k, f in floors)
    for k, _ in floors:
        if k > top_idx.shape[1]:
            raise ValueError(f"top-k floor KLD with k={k} needs a store of k >= {k} "
                             f"(this one keeps {top_idx.shape[1]})")
    out = _empty(T, (*what, *(floor_kld_name(k, f) for k, f in floors)), dev)
    with torch.no_grad():
        for sl in _blocks(T, V, block_elems, dev):
            c = _Cand(cand_logits[sl], k_topk if "topk_kld" in what else 0)
            idx = top_idx[sl]
            lp_h = top_logp[sl].double()
            lp_rest = tail_logmass[sl].double()
            # renormalise the float16-rounded reference (the shift applies to the tail sample too)
            norm = torch.cat([lp_h, lp_rest[:, None]], -1).logsumexp(-1, keepdim=True)
            lp_h, lp_rest = lp_h - norm, lp_rest - norm[:, 0]
            lq_h = c.logp(idx)
            lq_rest = _rest_logmass(c, idx, lq_h)
            if sampled:
                d_h = lp_h - lq_h
                p_h = lp_h.exp()
                d_t = tail_logp[sl].double() - norm - c.logp(tail_idx[sl])
                r_t = torch.exp(-d_t)                   # q/p of each sampled tail token
                mean_r = torch.exp(lq_rest - lp_rest)   # its exact tail mean
                mass = lp_rest.exp()
                terms = {"kld": (d_h, d_t), "rkld": (-d_h * torch.exp(-d_h), -d_t * r_t),
                         "js": (_js_f(d_h), _js_f(d_t))}
                for name, (fh, ft) in terms.items():
                    if name in what:
                        out[name][sl] = (p_h * fh).sum(-1) + mass * _crossfit(ft, r_t, mean_r)
            else:  # the (k+1)-bucket coarsening; an empty bucket (log 0) contributes 0
                lp_b = torch.cat([lp_h, lp_rest[:, None]], -1).clamp_min(-1e4)
                lq_b = torch.cat([lq_h, lq_rest[:, None]], -1).clamp_min(-1e4)
                divs = _exact_divergences(lp_b, lq_b.float(), torch.zeros_like(lp_rest), True, True)
                for name, v in zip(("kld", "rkld", "js"), divs):
                    if name in what:
                        out[name][sl] = v
            if "nll_q" in what:
                out["nll_q"][sl] = -c.logp(targets[sl, None])[:, 0]
            if "nll_p" in what:
                out["nll_p"][sl] = -ref_target_logp[sl]
            if "top1" in what:
                out["top1"][sl] = (c.top1 == ref_top1[sl]).double()
            if "topk_kld" in what:
                out["topk_kld"][sl] = _topk_kld(lp_h[:, :k_topk], lq_h[:, :k_topk], c.floor)
            if floors:
                _floor_klds(out, sl, floors, lambda k, lp_h=lp_h, idx=idx: (lp_h[:, :k], idx[:, :k]), c)
    return _finish(out, numpy)


def _rest_logmass(c: _Cand, idx, lq_h):
    """log of the candidate's mass outside the ids idx [t, k]: 1 - (mass on idx) in float64, or,
    for rows where that difference would lose digits (rest < 1e-3), an exact logsumexp."""
    import torch
    rest = -torch.expm1(torch.logsumexp(lq_h, -1))
    out = torch.log(rest.clamp_min(1e-300))
    bad = rest < 1e-3
    if bool(bad.any()):
        rows = bad.nonzero()[:, 0]
        zr = c.z[rows].float().scatter(-1, idx[rows], float("-inf"))
        out[rows] = torch.logsumexp(zr, -1).double() - c.lse[rows]
    return out


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
    for m in sorted(k for k in per_token if parse_floor_kld_name(k)):  # opt-in Eq. 5 variants
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
