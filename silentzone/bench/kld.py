"""Per-prompt KLD against stored reference distributions.

The reference pass stores, per item, the log-probs of its next-token distributions over the
item's tokens (context + gold continuation, or prompt + the reference's own response), so that a
quant pass needs only its own forward:

    store = RefStore(path, k=1024)       # <study_dir>/bench_ref/<task>.npz (+ .json manifest)
    store.put(item_id, ids, logits)      # reference pass; logits [T, V]
    store.save()                         # atomic
    kl = store.kld(item_id, ids, cand_logits)   # per-token KLD(reference || candidate), nats

k >= vocab stores the full distribution and `kld` is exactly
`silentzone.fidelity.kernels.token_kld`. Smaller k stores the reference's top-k log-probs and the
log of the remaining mass; the KLD is then taken over the coarsened distribution (top-k tokens
plus one "rest" bucket), a lower bound on the full KLD that is tight when the rest carries little
mass. Measured on SmolLM2 vs a Q4_0 quant (14 SciQ/LAMBADA items, per-item mean KLD): coarse /
exact = 0.92-0.99 (median 0.966) at k=1024, 0.84-0.99 (median 0.917) at k=256, 0.74 (min) at
k=64 -- a small downward bias, so the driver's default is k=1024 (8 bytes per token and k).
The ids of every item are hashed: a candidate scored on other ids is refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..fidelity.kernels import token_kld
from ..provenance import hash_obj
from ..errors import SilentzoneError


class RefStoreError(SilentzoneError, RuntimeError):
    """Reference distributions are missing or do not match (one-line message)."""


def _log_softmax_t(x, device=None):
    import torch
    x = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    if device is not None:
        x = x.to(device)
    return torch.log_softmax(x.float(), -1)


class RefStore:
    def __init__(self, path: str | Path, k: int = 1024):
        self.path = Path(path)
        self.k = int(k)
        self.manifest: dict = {"k": self.k, "items": {}}
        self.arrays: dict[str, np.ndarray] = {}

    # -- writing (reference pass) --
    def put(self, item_id: str, ids: list[int], logits: np.ndarray, device=None) -> None:
        """`device`: the torch device of the log-softmax and top-k (the model's metric_device(): on a
        GPU these [T, V] passes cost a host thread tens of ms per item); the stored arrays are the
        same numpy arrays wherever they were computed."""
        import torch
        if len(logits) != len(ids) - 1:
            raise RefStoreError(f"{item_id}: {len(logits)} logit rows for {len(ids)} ids (need T-1)")
        lp = _log_softmax_t(logits, device)
        n = len(self.manifest["items"])
        entry = {"ids_hash": hash_obj(list(ids)), "ids": list(ids), "key": f"a{n}",
                 "n_rows": len(logits)}
        key = entry["key"]
        if self.k >= lp.shape[-1]:
            self.arrays[key + "_lp"] = lp.cpu().numpy().astype(np.float32)
        else:
            top, idx = torch.topk(lp, self.k, dim=-1)
            rest = torch.log1p(-top.double().exp().sum(-1).clamp(max=1 - 1e-12))
            self.arrays[key + "_lp"] = top.cpu().numpy().astype(np.float32)
            self.arrays[key + "_idx"] = idx.cpu().numpy().astype(np.int32)
            self.arrays[key + "_rest"] = rest.cpu().numpy().astype(np.float64)
        self.manifest["items"][item_id] = entry

    def save(self, extra: dict | None = None) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.stem + ".tmp.npz")
        np.savez(tmp, **self.arrays)
        man = self.path.with_suffix(".json")
        mtmp = man.with_name(man.name + ".tmp")
        mtmp.write_text(json.dumps({**self.manifest, **(extra or {})}))
        os.replace(tmp, self.path)
        os.replace(mtmp, man)  # the manifest last: its presence marks a finished store
        return self.path

    # -- reading (quant passes) --
    @classmethod
    def load(cls, path: str | Path, expect: dict | None = None) -> "RefStore":
        path = Path(path)
        man = path.with_suffix(".json")
        if not (path.is_file() and man.is_file()):
            raise RefStoreError(f"{path}: reference distributions not found (run the reference first)")
        self = cls(path)
        self.manifest = json.loads(man.read_text())
        self.k = self.manifest["k"]
        if expect is not None and self.manifest.get("bench") != expect:
            raise RefStoreError(f"{path}: reference distributions were made for other items or task "
                                "version; rerun the reference for this task")
        with np.load(path) as z:
            self.arrays = {k: z[k] for k in z.files}
        return self

    @staticmethod
    def exists(path: str | Path) -> bool:
        path = Path(path)
        return path.is_file() and path.with_suffix(".json").is_file()

    def ids(self, item_id: str) -> list[int]:
        return self._entry(item_id)["ids"]

    def _entry(self, item_id: str) -> dict:
        try:
            return self.manifest["items"][item_id]
        except KeyError:
            raise RefStoreError(f"{self.path}: no reference for item {item_id!r}") from None

    def kld(self, item_id: str, ids: list[int], cand_logits: np.ndarray, device=None) -> np.ndarray:
        """Per-token KLD(reference || candidate) [T-1] for the candidate's logits on `ids`
        (`device`: where the top-k form's float64 log-softmax runs, as in put)."""
        import torch
        e = self._entry(item_id)
        if hash_obj(list(ids)) != e["ids_hash"]:
            raise RefStoreError(f"{self.path}: item {item_id!r} was scored on other token ids "
                                "than the reference (prompt mismatch)")
        key = e["key"]
        ref_lp = self.arrays[key + "_lp"]
        if len(cand_logits) != len(ref_lp):
            raise RefStoreError(f"{item_id}: {len(cand_logits)} candidate rows vs {len(ref_lp)} reference")
        if key + "_idx" not in self.arrays:
            if not isinstance(cand_logits, np.ndarray):  # a torch tensor (LlamaCppModel.rows_to)
                cand_logits = cand_logits.cpu().numpy()
            return token_kld(ref_lp, np.asarray(cand_logits, dtype=np.float32))
        return coarse_kld(ref_lp, self.arrays[key + "_idx"], self.arrays[key + "_rest"], cand_logits,
                          device)


KLD_CHUNK_BYTES = 256 << 20  # the float64 [rows, V] block coarse_kld widens at a time


def coarse_kld(ref_top_lp, ref_idx, ref_rest, cand_logits, device=None,
               chunk_bytes: int = KLD_CHUNK_BYTES) -> np.ndarray:
    """KLD over (top-k tokens of the reference + one bucket for the rest), nats, float64 [T].

    sum_{i in K} p_i (log p_i - log q_i) + P_rest (log P_rest - log Q_rest).
    `device`: the torch device it runs on (default the CPU); the result is a numpy array.
    Rows go through in blocks of at most `chunk_bytes` of float64 (every row's value is its own, so
    the blocks change no bit): a long item's whole [T, V] float64 log-softmax on Gemma 3's 262,144
    tokens was 2 MiB a row, several GiB an item, which each job's torch cache then kept; twelve
    bench jobs ran the H100 out of memory (Gemma 3's second lease, 2026-12-07).
    """
    import torch
    n, step = len(cand_logits), max(1, chunk_bytes // (8 * int(cand_logits.shape[-1])))
    if n > step:
        return np.concatenate([coarse_kld(ref_top_lp[i:i + step], ref_idx[i:i + step], ref_rest[i:i + step],
                                          cand_logits[i:i + step], device, chunk_bytes)
                               for i in range(0, n, step)])

    def t(a, dtype):
        return torch.from_numpy(np.asarray(a, dtype=dtype)).to(device or "cpu")
    # float32 logits travel as they are and widen where they land (the cast is exact: the same
    # float64 values as widening on the host, at half the copy and no [T, V] float64 host array)
    if isinstance(cand_logits, torch.Tensor):  # rows already on a device (LlamaCppModel.rows_to)
        cand = cand_logits.to(device or "cpu").double()
    else:
        cand = np.asarray(cand_logits)
        cand = t(cand, np.float32).double() if cand.dtype == np.float32 else t(cand, np.float64)
    q = torch.log_softmax(cand, -1)
    idx = t(ref_idx, np.int64)
    lp = t(ref_top_lp, np.float64)
    lq = q.gather(-1, idx)
    head = (lp.exp() * (lp - lq)).sum(-1)
    p_rest_log = t(ref_rest, np.float64)
    q_rest_log = torch.log1p(-lq.exp().sum(-1).clamp(max=1 - 1e-12))
    p_rest = p_rest_log.exp()
    tail = torch.where(p_rest > 0, p_rest * (p_rest_log - q_rest_log), torch.zeros_like(p_rest))
    return (head + tail).clamp(min=0).cpu().numpy()
