"""On-disk reference log-prob stores, written window by window (bounded memory, resumable).

Windows follow llama.cpp's perplexity tool: the corpus token ids (BOS first when the model adds
one) are cut into non-overlapping windows of `ctx` tokens, whatever is left over dropped; each
window is evaluated from an empty KV cache with its first token replaced by BOS (when the model
adds one). Scoring modes:
    half   positions ctx/2 .. ctx-2 predict tokens ctx/2+1 .. ctx-1: ctx - 1 - ctx/2 tokens per
           window, each with at least ctx/2 tokens of context. This is exactly what
           `llama-perplexity` scores, in its perplexity and its --kl-divergence modes (default).
    all    positions 0 .. ctx-2: every token after the first of each window.

A store directory holds:
    meta.json          ctx, scoring, first, n_vocab, n_windows, kinds, k, tokens_hash, probe ids...
    tokens.npy         int32 [n_windows, ctx]: the ids fed (after the BOS substitution)
    w00000.npz         compact store, per window, n = scored tokens: targets int32 [n], top1 int32
                       [n] (argmax of the float32 logits), target_logp float32 [n] (exact log-prob
                       of the target), top_idx int32 [n, k], top_logp float16 [n, k] (descending),
                       tail_logmass float32 [n] (log of the mass outside the top k), tail sample
    w00000.exact.npy   exact store: one record per scored token, 2 V + 4 bytes: float16 log-probs
                       [n_vocab] and the float32 target log-prob (meta exact_layout "record").
                       Targets are tokens.npy's; top-1 is the row's argmax (see below). Stores
                       written before this layout (no exact_layout: "plain") hold float16 [n, V]
                       here and targets, top1, target_logp in the .npz; they are read as before.
A window counts as done when its last file exists (the .npz, or the exact .npy of an exact-only
store; written by rename), so an interrupted capture resumes where it stopped and a finished one
is skipped.

Encodings and their cost (n_vocab V, per scored token):
    exact     float16 log-probs and the float32 target log-prob: 2 V + 4 bytes, 4 fewer than
              llama.cpp's base file (2 V + 8 bytes with its uint16 linear code over [max-16, max]
              and two floats), which covers the record file's .npy header (192 bytes) once a
              window scores 48 tokens (ctx 98 or more); tokens.npy holds what llama.cpp's file
              holds (4 bytes per window token).
              float16 has a relative step of 2^-11, so the log-prob of a likely token (|log p| <
              1) is off by < 2.5e-4 nats and of a log p = -16 tail token by < 0.008; log-probs
              are renormalised when read. The KLD error this leaves is measured against float32
              in tests/fidelity (< 1e-3 relative). Top-1 is not stored: float16 rounding is
              monotone, so the float32 argmax is a maximum of the float16 row; where an earlier
              entry ties with it there, the argmax entry is raised by one float16 step (so that
              the row's first maximum is the float32 argmax: every ulp of difference stays within
              the float16 error above) and top-1 is read back exactly.
    compact   the top-k log-probs (float16, ids int32), the log of the remaining "tail" mass, and
              a sample of m tail tokens (ids int32, float16 log-probs) drawn in proportion to the
              reference's probability: two independent systematic samples of m/2 (cumulative tail
              mass in vocabulary order, one seeded uniform offset each), 6 (k + m) + 16 bytes per
              token with the 12 bytes that both stores keep. The scorer adds the exact top-k part
              to an unbiased estimate of the tail part (kernels.compact_token_metrics): without
              the tail sample (m = 0) only the (k+1)-bucket coarsening is known, a lower bound that
              measured 11% low on real quants at k = 128 (tail mass is large in small LMs).
              DEFAULT_K = 128, DEFAULT_M = 64 (1,168 bytes/token: 84x below llama.cpp's base file
              for SmolLM2's 49,152-token vocabulary, 449x for Gemma 3's 262,144) was chosen on
              real quants of SmolLM2 (Q8_0, Q4_0, Q2_K, wiki, ctx 256, 1,524 tokens): mean KLD and
              JS within 0.25% of the exact store, reverse KLD within 1.7%, KLD p99 within 0.7%;
              k = 64, m = 64 (784 bytes) gave mean KLD within 0.6%; no tail sample (m = 0) gave
              -11% at k = 128 and -5% at k = 512.
              `silentzone.fidelity.score.store_error` re-measures it on any capture.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..io import atomic_write_text
from ..errors import SilentzoneError

SCORING = ("half", "all")
KINDS = ("exact", "compact")
DEFAULT_K = 128
DEFAULT_M = 64
FORMAT_VERSION = 1


class StoreError(SilentzoneError, RuntimeError):
    """A store is missing, incomplete or was made with other parameters (one-line message)."""


def first_scored(ctx: int, scoring: str) -> int:
    """Position of the first scored logit row in a window of `ctx` tokens."""
    if scoring not in SCORING:
        raise ValueError(f"scoring must be one of {SCORING}, got {scoring!r}")
    if ctx < 4:
        raise ValueError(f"ctx must be >= 4, got {ctx}")
    return ctx // 2 if scoring == "half" else 0


def make_windows(ids, ctx: int, bos_id: int | None) -> np.ndarray:
    """int32 [n_windows, ctx] windows of `ids` (leftover dropped), first token set to `bos_id`."""
    ids = np.asarray(ids, dtype=np.int32)
    n = len(ids) // ctx
    if n < 1:
        raise StoreError(f"{len(ids)} tokens make no window of ctx {ctx}")
    w = ids[: n * ctx].reshape(n, ctx).copy()
    if bos_id is not None:
        w[:, 0] = bos_id
    return w


def llama_base_bytes(n_vocab: int, ctx: int, n_windows: int) -> int:
    """Size of llama-perplexity's --kl-divergence-base file for the same windows (half scoring)."""
    nv = 2 * ((n_vocab + 1) // 2) + 4
    return 8 + 4 * 3 + 4 * n_windows * ctx + 2 * nv * n_windows * (ctx - 1 - ctx // 2)


def _save_npy(path: Path, arr) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, arr)
    os.replace(tmp, path)


def _tail_sample(lp, top_idx, m: int, rng: np.random.Generator, block: int = 32):
    """Ids [n, m] of tail tokens drawn by two systematic samples of m/2 (independent offsets)."""
    import torch
    n, V = lp.shape
    half = m // 2
    offs = torch.as_tensor(rng.random((n, 2)), dtype=torch.float64, device=lp.device)
    grid = torch.arange(half, dtype=torch.float64, device=lp.device)
    out = torch.empty((n, 2 * half), dtype=torch.int64, device=lp.device)
    for r in range(0, n, block):
        sl = slice(r, min(n, r + block))
        c = lp[sl].double().exp_().scatter_(-1, top_idx[sl], 0.0).cumsum(-1)  # in place: 2 copies fewer
        u = torch.cat([grid + offs[sl, :1], grid + offs[sl, 1:]], -1) / half * c[:, -1:]
        out[sl] = torch.searchsorted(c, u, right=True).clamp_max(V - 1)
    return out


def _exact_rows(lp, top1: np.ndarray) -> np.ndarray:
    """float16 log-probs [n, V] whose first maximum in each row is top1 (the float32 argmax): where
    an earlier entry ties with it in float16, the top1 entry goes up one float16 step."""
    e = lp.clamp_min(-65000.0).half().cpu().numpy()
    rows = np.nonzero(e.argmax(-1) != top1)[0]
    if len(rows):
        e[rows, top1[rows]] = np.nextafter(e[rows, top1[rows]], np.float16(np.inf))
    if (e.argmax(-1) != top1).any():  # float16 rounding is monotone: cannot happen
        raise StoreError("float16 log-probs lost the argmax")
    return e


def exact_dtype(n_vocab: int) -> np.dtype:
    """One exact-store record: float16 log-probs [n_vocab] and the float32 target log-prob."""
    return np.dtype([("logp", "<f2", (int(n_vocab),)), ("target_logp", "<f4")])


def encode_window(logits, targets, kinds=KINDS, k: int = DEFAULT_K, m: int = DEFAULT_M,
                  rng: np.random.Generator | None = None) -> dict:
    """Store arrays (numpy) of one window from float logits [n, V] (numpy, or a torch tensor on any
    device, where the work then happens) and the targets [n] they predict. `rng` draws the tail
    sample's offsets (default: seeded 0)."""
    import torch
    z = (logits if isinstance(logits, torch.Tensor) else torch.as_tensor(np.asarray(logits))).float()
    finite = (np.isfinite(z.detach().numpy()).all() if z.device.type == "cpu"  # 10x torch's on a CPU
              else torch.isfinite(z).all())
    if not finite:
        raise StoreError("reference logits are not finite")
    lp = z.log_softmax(-1)
    t = torch.as_tensor(np.asarray(targets, dtype=np.int64), device=z.device)
    # float16 by torch (vectorised; the same round-to-nearest-even as numpy's astype, 5x faster)
    np_ = lambda x, dt: (x.half() if dt == np.float16 else x).cpu().numpy().astype(dt)  # noqa: E731
    out = {"targets": np.asarray(targets, dtype=np.int32), "top1": np_(z.argmax(-1), np.int32),
           "target_logp": np_(lp.gather(-1, t[:, None])[:, 0], np.float32)}
    if "exact" in kinds:
        out["exact"] = _exact_rows(lp, out["top1"])
    if "compact" in kinds:
        if m % 2:
            raise ValueError(f"m (tail sample size) must be even, got {m}")
        k = min(k, lp.shape[1])
        v, i = lp.topk(k, dim=-1)  # sorted, descending
        out.update(top_idx=np_(i, np.int32), top_logp=np_(v, np.float16))
        if m:
            ti = _tail_sample(lp, i, m, rng if rng is not None else np.random.default_rng(0))
            out.update(tail_idx=np_(ti, np.int32),
                       tail_logp=np_(lp.gather(-1, ti).clamp_min(-65000.0), np.float16))
        # last use of lp: the top k masked in place (no copy of [n, V])
        out["tail_logmass"] = np_(lp.scatter_(-1, i, float("-inf")).logsumexp(-1), np.float32)
    return out


class Store:
    """A reference store directory (see the module doc)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        mf = self.path / "meta.json"
        if not mf.is_file():
            raise StoreError(f"{self.path}: no reference store here (capture it first)")
        self.meta = json.loads(mf.read_text())
        m = self.meta
        self.ctx, self.scoring, self.first = m["ctx"], m["scoring"], m["first"]
        self.n_vocab, self.n_windows, self.kinds = m["n_vocab"], m["n_windows"], m["kinds"]
        self.k, self.m, self.tokens_hash = m["k"], m["m"], m["tokens_hash"]
        self.exact_layout = m.get("exact_layout", "plain")
        self._windows = None

    @classmethod
    def create(cls, path: str | Path, windows: np.ndarray, *, n_vocab: int, scoring: str,
               kinds=("compact",), k: int = DEFAULT_K, m: int = DEFAULT_M,
               extra: dict | None = None) -> "Store":
        """Open the store at `path`, creating it; refuses one made with other windows/parameters."""
        from .corpora import tokens_hash
        path = Path(path)
        n_windows, ctx = windows.shape
        kinds = [x for x in KINDS if x in kinds]
        if not kinds:
            raise ValueError(f"kinds must name one of {KINDS}")
        meta = {"format": FORMAT_VERSION, "ctx": int(ctx), "scoring": scoring,
                "first": first_scored(ctx, scoring), "n_vocab": int(n_vocab),
                "n_windows": int(n_windows), "kinds": kinds, "k": int(k) if "compact" in kinds else 0,
                "m": int(m) if "compact" in kinds else 0,
                "tokens_hash": tokens_hash(windows), **(extra or {})}
        if "exact" in kinds:
            meta["exact_layout"] = "record"
        mf = path / "meta.json"
        if mf.is_file():
            old = json.loads(mf.read_text())
            same = ("format", "ctx", "scoring", "n_vocab", "n_windows", "kinds", "k", "m", "tokens_hash")
            diff = [key for key in same if old.get(key) != meta[key]]
            if diff:
                raise StoreError(f"{path}: store exists with other {', '.join(diff)} "
                                 f"({', '.join(f'{d}={old.get(d)!r}' for d in diff)}); remove it "
                                 "to capture again")
        else:
            path.mkdir(parents=True, exist_ok=True)
            _save_npy(path / "tokens.npy", windows.astype(np.int32))
            atomic_write_text(mf, json.dumps(meta, indent=2, sort_keys=True))
        return cls(path)

    def rng(self, i: int) -> np.random.Generator:
        """The generator of window i's tail sample: seeded by the tokens hash and i."""
        return np.random.default_rng([int(self.tokens_hash, 16) % 2**63, i])

    def windows(self) -> np.ndarray:
        if self._windows is None:
            self._windows = np.load(self.path / "tokens.npy")
        return self._windows

    def _npz(self, i: int) -> Path:
        return self.path / f"w{i:05d}.npz"

    def _exact(self, i: int) -> Path:
        return self.path / f"w{i:05d}.exact.npy"

    def _records(self) -> bool:
        """Exact windows as records (logp + target_logp) with nothing of theirs in an .npz."""
        return "exact" in self.kinds and self.exact_layout == "record"

    def _last(self, i: int) -> Path:
        """Window i's last file, written by rename: its completion marker (the .npz, or the exact
        records of an exact-only store, which has no .npz)."""
        return self._exact(i) if self._records() and "compact" not in self.kinds else self._npz(i)

    def done(self, i: int) -> bool:
        return self._last(i).is_file()

    def complete(self) -> bool:
        return all(self.done(i) for i in range(self.n_windows))

    def write(self, i: int, arrays: dict) -> None:
        """Write window i's arrays (from encode_window); the .npz last, so it marks completion."""
        arrays = dict(arrays)
        exact = arrays.pop("exact", None)
        if "exact" in self.kinds:
            if exact is None:
                raise StoreError(f"{self.path}: window {i} lacks the exact log-probs")
            if self._records():
                rec = np.empty(len(exact), dtype=exact_dtype(self.n_vocab))
                rec["logp"], rec["target_logp"] = exact, arrays["target_logp"]
                exact = rec
            _save_npy(self._exact(i), exact)
            if self._last(i) == self._exact(i):
                return
        tmp = self.path / f"w{i:05d}.tmp.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, self._npz(i))

    def read(self, i: int, kind: str) -> dict:
        """Window i's arrays for store `kind`: targets, top1, target_logp and either `logp`
        (exact, float16 [n, V], memory-mapped) or top_idx, top_logp, tail_logmass, tail_idx,
        tail_logp (compact)."""
        if kind not in self.kinds:
            raise StoreError(f"{self.path}: has no {kind} store (kinds {self.kinds})")
        if not self.done(i):
            raise StoreError(f"{self.path}: window {i} not captured (capture is incomplete)")
        out = {}
        if self._npz(i).is_file():
            with np.load(self._npz(i)) as z:
                out = {name: z[name] for name in z.files}
        if kind == "exact":
            a = np.load(self._exact(i), mmap_mode="r")
            if not self._records():
                return {**out, "logp": a}
            out["logp"] = a["logp"]  # a strided view of the records
            if "top1" not in out:  # exact-only: top-1 and targets are not stored separately
                out["target_logp"] = np.array(a["target_logp"], dtype=np.float32)
                out["targets"] = self.windows()[i, self.first + 1:].copy()
                out["top1"] = self._argmax(out["logp"])
        return out

    @staticmethod
    def _argmax(logp, block: int = 64) -> np.ndarray:
        """First maximum of each float16 row (the float32 argmax: _exact_rows), in row blocks."""
        import torch
        return np.concatenate([torch.from_numpy(np.asarray(logp[r:r + block], dtype=np.float32))
                               .argmax(-1).numpy().astype(np.int32)
                               for r in range(0, len(logp), block)])

    def nbytes(self, kind: str) -> int:
        """Bytes on disk: exact = the exact record files (float16 log-probs + target log-prob);
        compact = the per-window .npz files (top-k arrays plus the 12 bytes/token of targets, top1
        and target_logp)."""
        pattern = "w*.exact.npy" if kind == "exact" else "w?????.npz"
        return sum(f.stat().st_size for f in self.path.glob(pattern))
