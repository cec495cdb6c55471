"""One pass over a block of candidate logits on a GPU (Triton): log-sum-exp, argmax and the maxima
of 512-id chunks, which kernels._Cand otherwise takes in three full-vocabulary passes (a compiled
logsumexp, argmax, and the chunk maxima that kernels._topk selects candidates with). The rows are
read once, in bf16/fp16/fp32, and reduced in float32 with an online log-sum-exp.

`row_stats(z)` returns (lse float32 [t], argmax int64 [t], chunk maxima float32 [t, V // 512]) or
None when Triton is missing or z is not a CUDA tensor with contiguous rows; callers then take the
torch path. Ties in the argmax go to the first index, as torch.argmax's do.
"""

from __future__ import annotations

CHUNK = 512
_KERNEL = None


def _kernel():
    global _KERNEL
    if _KERNEL is None:
        import triton
        import triton.language as tl

        @triton.jit
        def row_stats_kernel(z_ptr, stride, V, n_chunks, lse_ptr, arg_ptr, cmax_ptr,
                             CHUNK: tl.constexpr, NC: tl.constexpr):
            row = tl.program_id(0).to(tl.int64)
            base = z_ptr + row * stride
            offs = tl.arange(0, NC)[:, None] * CHUNK + tl.arange(0, CHUNK)[None, :]   # [NC, CHUNK]
            m = tl.full((), float("-inf"), tl.float32)
            s = tl.full((), 0.0, tl.float32)
            best_i = tl.full((), 0, tl.int64)
            for start in range(0, V, NC * CHUNK):
                idx = start + offs
                x = tl.load(base + idx, mask=idx < V, other=float("-inf")).to(tl.float32)
                cm = tl.max(x, axis=1)                                       # [NC]
                cid = start // CHUNK + tl.arange(0, NC)
                tl.store(cmax_ptr + row * n_chunks + cid, cm, mask=cid < n_chunks)
                bm = tl.max(cm, axis=0)
                first = tl.min(tl.min(tl.where(x == bm, idx, V), axis=1), axis=0).to(tl.int64)
                best_i = tl.where(bm > m, first, best_i)   # strictly greater: earlier ties win
                m_new = tl.maximum(m, bm)
                safe = tl.where(m_new == float("-inf"), 0.0, m_new)
                s = s * tl.exp(m - safe) + tl.sum(tl.sum(tl.exp(x - safe), axis=1), axis=0)
                m = m_new
            safe = tl.where(m == float("-inf"), 0.0, m)
            tl.store(lse_ptr + row, tl.log(s) + safe)
            tl.store(arg_ptr + row, best_i)

        _KERNEL = row_stats_kernel
    return _KERNEL


def row_stats(z, chunk: int = CHUNK, nc: int = 4):
    """(lse, argmax, chunk maxima) of z [t, V] on a GPU in one pass, or None (see module doc)."""
    import torch
    if not (isinstance(z, torch.Tensor) and z.is_cuda and z.dim() == 2 and z.stride(1) == 1
            and z.dtype in (torch.bfloat16, torch.float16, torch.float32) and chunk == CHUNK):
        return None
    try:
        kern = _kernel()
    except ImportError:
        return None
    t, V = z.shape
    n_chunks = V // chunk
    lse = torch.empty(t, dtype=torch.float32, device=z.device)
    arg = torch.empty(t, dtype=torch.int64, device=z.device)
    cmax = torch.empty((t, max(n_chunks, 1)), dtype=torch.float32, device=z.device)
    if t:
        kern[(t,)](z, z.stride(0), V, n_chunks, lse, arg, cmax, CHUNK=chunk, NC=nc, num_warps=4)
    return lse, arg, cmax[:, :n_chunks]
