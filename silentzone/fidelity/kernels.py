"""Per-token divergence kernels shared by fidelity scoring and per-prompt benchmark KLD.

All take logits (not probabilities) as float arrays/tensors [T, V] and return float64 numpy [T].
KL(P || Q) = sum_v p_v (log p_v - log q_v), P the reference, Q the candidate, in nats.
"""

from __future__ import annotations

import numpy as np


def _torch(x):
    import torch
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))


def token_kld(ref_logits, cand_logits) -> np.ndarray:
    """KL(reference || candidate) per token, nats. Inputs [T, V] logits; output float64 [T]."""
    import torch
    p = torch.log_softmax(_torch(ref_logits).float(), -1)
    q = torch.log_softmax(_torch(cand_logits).float(), -1)
    return (p.exp() * (p - q)).sum(-1).double().numpy()
