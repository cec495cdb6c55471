"""Score candidates against the reference: per-token metrics in one pass, summaries, the cohort table.

    summary, per_token = score_text(reference, candidate, text, ctx=512)     # ad hoc (CLI `kld`)
    per_token = score_store(model, Store(dir), kind="compact")              # against a capture
    frame = score_cohort(study)                                             # study_dir/fidelity.csv

A candidate is opened with `silentzone.backends.open_model` (GGUF -> llama.cpp, HF or quant artifact
directory -> transformers). It is refused with one line (ScoreRefused) when its vocabulary size
differs from the reference's, or its tokenizer gives other ids for a probe text. Non-finite logits
raise NonFiniteLogits; the cohort driver marks that quant x corpus x ctx failed with the reason.
"""

from __future__ import annotations

import contextlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..backends import BackendError, reference_source
from .capture import one_behind, open_scorer, probe_text, reference_of, store_dir
from .divergent import METRICS as DIVERGENT, ensure_reference, score_divergent
from .kernels import PER_TOKEN, compact_token_metrics, compiled, floor_kld_name, summarize, token_metrics
from .store import KINDS, Store, StoreError, first_scored, make_windows
from ..errors import SilentzoneError


class ScoreRefused(SilentzoneError, RuntimeError):
    """The candidate cannot be compared with the reference (vocabulary or token ids differ)."""


class NonFiniteLogits(SilentzoneError, RuntimeError):
    """The candidate produced NaN or infinite logits."""


METRICS = tuple(k for k in summarize({m: np.zeros(4) for m in PER_TOKEN}) if k != "n_tokens")


def floor_metrics(floors) -> tuple[str, ...]:
    """FIDELITY metric names of the opt-in top-k floor KLD variants (paper Eq. 5), e.g.
    ((20, -20.0),) -> ('kld_top20_floor-20_mean', 'kld_top20_floor-20_p99'). Not in METRICS: the
    default metric set (and so the shipped fidelity tables) stays as it was."""
    return tuple(f"{floor_kld_name(k, f)}_{s}" for k, f in floors for s in ("mean", "p99"))


def check_compatible(m, n_vocab: int, probe_ids, label: str = "") -> None:
    """Refuse (ScoreRefused, one line) a candidate whose vocabulary or probe token ids differ."""
    label = label or m.name
    if int(m.vocab_size) != int(n_vocab):
        raise ScoreRefused(f"{label}: vocabulary size {m.vocab_size} differs from the reference's "
                           f"{n_vocab}; refusing to compare")
    ids = m.tokenize(probe_text())
    if probe_ids is not None and ids is not None and list(ids) != list(probe_ids):
        i = next((j for j, (a, b) in enumerate(zip(ids, probe_ids)) if a != b), min(len(ids), len(probe_ids)))
        raise ScoreRefused(f"{label}: token ids differ from the reference's at probe token {i} "
                           f"({list(ids[i:i + 3])} vs {list(probe_ids[i:i + 3])}); refusing to compare")


def check_finite(z, where: str) -> None:
    import torch
    t = z if isinstance(z, torch.Tensor) else torch.from_numpy(np.asarray(z))
    if t.device.type == "cpu" and t.dtype in (torch.float32, torch.float16, torch.float64):
        ok = bool(np.isfinite(t.detach().numpy()).all())  # 10x torch's isfinite().all() on a CPU
    else:
        ok = bool(torch.isfinite(t).all())
    if not ok:
        n_nan = int(torch.isnan(t).sum())
        n_inf = int(torch.isinf(t).sum())
        raise NonFiniteLogits(f"non-finite logits ({n_nan} NaN, {n_inf} inf) in {where}")


def _stack(parts: list[dict]) -> dict:
    return {k: np.stack([p[k] for p in parts]) for k in parts[0]}


def _read_batch(store: Store, idx: list[int], kind: str, pin: bool) -> dict:
    """The store arrays of windows idx, rows concatenated; page-locked when `pin` (so the copy to
    the GPU is asynchronous). Runs in a helper thread, one batch ahead of the forward."""
    import torch
    refs = [store.read(i, kind) for i in idx]
    ref = {k: np.concatenate([np.asarray(r[k]) for r in refs]) for k in refs[0]}
    if pin:
        ref = {k: torch.from_numpy(v).pin_memory() for k, v in ref.items()}
    return ref


def _nonfinite(z):
    """[number of NaN, number of inf] in z (a device tensor; no sync)."""
    import torch
    return torch.stack([torch.isnan(z).sum(), torch.isinf(z).sum()])


def _nonfinite_scored(z, rows: int):
    """_nonfinite of the rows that are scored: z [B * rows, V] holds `rows` rows per window, the
    last of which (position ctx-1, no target) is left out. Row counts first, so the read of z
    stays contiguous."""
    import torch
    nan = torch.isnan(z).sum(-1).view(-1, rows)[:, :-1].sum()
    inf = torch.isinf(z).sum(-1).view(-1, rows)[:, :-1].sum()
    return torch.stack([nan, inf])


def _window_rows(z):
    """All rows of the windows as one [B * (n+1), V] view, when z [B, n, V] is rows 0..n-1 of a
    contiguous [B, n+1, V] (window_logits' slice of logits_to_keep=n+1, or of llama.cpp's buffer);
    else None. Flattening z itself copies it (1.2 GB per batch of 8 x 511 x 151,936 bf16: ~1 ms
    on an H100); this view copies nothing, at the cost of one extra scored row per window."""
    import torch
    if not isinstance(z, torch.Tensor) or z.dim() != 3 or z.shape[0] < 2:
        return None
    B, n, V = z.shape
    if z.stride() != ((n + 1) * V, V, 1):
        return None
    if z.untyped_storage().nbytes() < (z.storage_offset() + B * (n + 1) * V) * z.element_size():
        return None
    return z.as_strided((B * (n + 1), V), (V, 1))


def _pad_rows(ref: dict, B: int, n: int, dev) -> dict:
    """The compact reference of B windows of n rows each, on `dev`, with each window's last row
    repeated once (the extra row _window_rows scores; its metrics are dropped)."""
    import torch
    r = torch.arange(n + 1, device=dev).clamp_max(n - 1)
    rows = (torch.arange(B, device=dev)[:, None] * n + r[None]).reshape(-1)
    out = {}
    for k, v in ref.items():
        t = v if isinstance(v, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(v))
        out[k] = t.to(dev, non_blocking=True).index_select(0, rows)
    return out


def _score_batch(z, ref, kind: str, n: int, dev, gpu: bool, bad: list, where: str, floors=()):
    """Per-token metrics of one batch of windows' logits z [B, n, V] against its store arrays
    (tensors left on the device), and the number of rows per window they cover (n, or n + 1 when
    every row of the windows was scored without a copy). On a GPU the non-finite counts are
    appended to `bad` (checked after the loop); on a CPU non-finite logits raise here."""
    # one kernel call per batch of windows (rows concatenated): fewer launches on a GPU
    zz = _window_rows(z) if kind == "compact" else None
    rows = n
    if zz is not None:  # every row of the windows, no copy; the reference padded to match
        rows = n + 1
        ref = _pad_rows(ref, z.shape[0], n, dev)
    else:
        zz = z.reshape(-1, z.shape[-1])
    if gpu:  # on the contiguous rows: the strided slice read at a fifth of the bandwidth
        bad.append(compiled(_nonfinite, dev)(zz) if rows == n
                   else compiled(_nonfinite_scored, dev)(zz, rows))
    else:
        check_finite(z, where)
    if kind == "exact":
        pt = token_metrics(ref["logp"], zz, ref["targets"], ref["top1"], ref["target_logp"],
                           numpy=False, floors=floors)
    else:
        pt = compact_token_metrics(ref, zz, numpy=False, floors=floors)
    return pt, rows


def score_store(m, store: Store, kind: str = "compact", batch: int = 1, label: str = "",
                timings: dict | None = None, floors=()) -> dict:
    """Per-token metrics {metric: float64 [n_windows, n_scored]} of model `m` against a store.

    On a GPU the device does not idle inside the loop: the store is read one batch ahead in a
    helper thread (page-locked, copied asynchronously); with transformers the next batch's forward
    is queued before this batch is scored on a side stream, so the one sync in the metrics (which
    rows need the exact tail fallback) waits for the scoring, not for an empty device; the metrics
    stay on the device until the end; the finiteness check is counted there and raised
    (NonFiniteLogits) after the loop.
    timings: forward_s and metrics_s are then launch times, not device times (they need a sync).
    floors: ((k, floor), ...) adds the opt-in top-k floor KLD variants (kernels._floor_kld).
    """
    import torch
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    if not store.complete():
        raise StoreError(f"{store.path}: capture is incomplete")
    check_compatible(m, store.n_vocab, store.meta.get("probe_ids"), label)
    windows = store.windows()
    dev = m.metric_device()  # llama.cpp: the GPU when opened on one, else the CPU
    gpu = dev.type == "cuda"
    where = f"{label or m.name} on {store.path.name}"
    batches = [list(range(j, min(store.n_windows, j + batch))) for j in range(0, store.n_windows, batch)]
    n = store.ctx - 1 - store.first
    buf = m.device_buffer(batch, n + 1)  # llama.cpp on a GPU: logits land there directly
    parts, bad = [], []
    t_fwd = t_met = 0.0
    # transformers on a GPU: the next batch's forward is queued on the main stream before this
    # batch is scored on a side stream, so the syncs inside the metrics (the exact fallback of
    # kernels._rest_logmass needs to know which rows) wait for the scoring only, and the GPU works
    # through the next forward meanwhile instead of idling while the eager metric ops are launched.
    # Not for llama.cpp: its logits land in one reused buffer (and its decode blocks the host).
    side = torch.cuda.Stream(device=dev) if gpu and buf is None else None
    # llama.cpp on the CPU with a core to spare: the next window decodes in a helper thread while
    # this one is scored (capture.overlaps)
    ahead_fwd = ThreadPoolExecutor(1) if not gpu and buf is None and m.overlaps() else None
    # llama.cpp on the CPU: logits land in reused buffers, taken in turn (batch b+1 decodes into
    # one while batch b, in the other, is scored)
    ring = m.window_buffers(batch, n + 1, 2 if ahead_fwd else 1, buf)

    def forward(b):
        nonlocal t_fwd
        t0 = time.perf_counter()
        z = m.window_logits(windows[batches[b]], store.first,
                            out=ring[b % len(ring)][:len(batches[b])] if ring else None)
        t_fwd += time.perf_counter() - t0
        return z

    with ThreadPoolExecutor(1) as pool, ahead_fwd or contextlib.nullcontext():
        ahead = pool.submit(_read_batch, store, batches[0], kind, gpu)
        z_next = forward(0)
        for b, idx in enumerate(batches):
            z, last = z_next, b + 1 == len(batches)
            if ahead_fwd is not None:
                z = z.result() if b else z
                z_next = None if last else ahead_fwd.submit(forward, b + 1)
            if side is not None:
                ready = torch.cuda.current_stream(dev).record_event()  # z is complete here
                z_next = None if last else forward(b + 1)
            t1 = time.perf_counter()
            ref = ahead.result()
            if not last:
                ahead = pool.submit(_read_batch, store, batches[b + 1], kind, gpu)
            if z.shape[-1] != store.n_vocab:
                raise ScoreRefused(f"{label or m.name}: logits have {z.shape[-1]} columns, reference "
                                   f"vocabulary {store.n_vocab}; refusing to compare")
            with torch.cuda.stream(side) if side is not None else contextlib.nullcontext():
                if side is not None:
                    side.wait_event(ready)
                    z.record_stream(side)  # its memory is not reused before the side stream is done
                pt, rows = _score_batch(z, ref, kind, n, dev, gpu, bad, f"{where} window {idx[0]}",
                                        floors)
            parts.append((pt, rows))
            del z
            t_met += time.perf_counter() - t1
            if side is None and ahead_fwd is None and not last:
                z_next = forward(b + 1)
    if side is not None:
        torch.cuda.current_stream(dev).wait_stream(side)
    if bad:
        counts = torch.stack(bad).cpu().numpy()
        for b, (n_nan, n_inf) in enumerate(counts):
            if n_nan or n_inf:
                raise NonFiniteLogits(f"non-finite logits ({n_nan} NaN, {n_inf} inf) in {where} "
                                      f"window {batches[b][0]}")
    if timings is not None:
        timings.update(forward_s=t_fwd, metrics_s=t_met)
    # [windows, rows] per batch; a padded batch's extra row per window is dropped here
    return {k: torch.cat([p[k].view(-1, r)[:, :n] for p, r in parts]).cpu().numpy()
            for k in parts[0][0]}


def score_text(reference, candidate, text: str, ctx: int, *, scoring: str = "half",
               device: str = "cpu", threads: int | None = None, floors=()) -> tuple[dict, dict]:
    """Score `candidate` against `reference` (each a GGUF file or HF directory) on `text`.

    The text is tokenized by the reference's tokenizer (llama.cpp for a GGUF, as llama-perplexity
    does; pass the file content minus one trailing newline to match its -f), cut into windows of
    `ctx`, and both models run every window; the reference's float32 logits are used directly.
    Returns (summary with flat keys, per-token arrays [n_windows, n_scored]).
    floors: ((k, floor), ...) adds the opt-in top-k floor KLD variants (kernels._floor_kld).
    """
    from .corpora import tokens_hash
    R = open_scorer(reference, n_ctx=ctx, device=device, threads=threads, name="reference")
    C = open_scorer(candidate, n_ctx=ctx, device=device, threads=threads, name=Path(candidate).name)
    ids = R.tokenize(text)
    if ids is None:
        raise ScoreRefused(f"{reference}: has no tokenizer to read the text with")
    check_compatible(C, R.vocab_size, R.tokenize(probe_text()), str(candidate))
    windows = make_windows(ids, ctx, R.bos())
    first = first_scored(ctx, scoring)
    parts = []
    t_fwd = t_met = 0.0

    def metrics(i, w, zr, zc):
        nonlocal t_met
        t1 = time.perf_counter()
        check_finite(zr, f"reference window {i}")
        check_finite(zc, f"candidate window {i}")
        parts.append(token_metrics(zr, zc, w[first + 1:], floors=floors))
        t_met += time.perf_counter() - t1

    # both llama.cpp on the CPU with a core to spare: window i's metrics run in a helper thread
    # while both models decode window i+1 (capture.overlaps); at most one window waits
    overlap = R.overlaps() and C.overlaps()
    # llama.cpp: each model's logits land in reused buffers, taken in turn (window i's metrics read
    # one pair while window i+1 decodes into the other; one_behind waits for i-1's first)
    rr, rc = (x.window_buffers(1, ctx - first, 2 if overlap else 1) for x in (R, C))

    with one_behind(overlap) as run:
        for i, w in enumerate(windows):
            zr = R.window_logits(w[None], first, out=rr[i % len(rr)] if rr else None)[0]
            t0 = time.perf_counter()
            zc = C.window_logits(w[None], first, out=rc[i % len(rc)] if rc else None)[0]
            t_fwd += time.perf_counter() - t0
            run(metrics, i, w, zr, zc)
    per_token = _stack(parts)
    summary = summarize(per_token)
    summary.update(n_windows=int(len(windows)), ctx=int(ctx), scoring=scoring,
                   tokens_hash=tokens_hash(windows), candidate_forward_s=t_fwd, metrics_s=t_met)
    return summary, per_token


def store_error(m, store: Store, configs=((64, 0), (128, 0), (32, 64), (64, 64), (128, 64)),
                label: str = "") -> dict:
    """Error of compact encodings against the exact store on candidate `m`, per (k, m_tail).

    The exact store's float16 log-probs are re-encoded as compact windows of each configuration;
    returns {"exact": {metric: mean}, (k, m): {metric: mean, f"{metric}_rel_err": mean / exact - 1,
    "kld_p99_rel_err": ...}} for metric in kld, rkld, js.
    """
    from .store import encode_window
    if "exact" not in store.kinds:
        raise StoreError(f"{store.path}: store_error needs an exact store")
    check_compatible(m, store.n_vocab, store.meta.get("probe_ids"), label)
    windows = store.windows()
    what = ("kld", "rkld", "js")
    parts = {"exact": [], **{c: [] for c in configs}}
    for i in range(store.n_windows):
        z = m.window_logits(windows[i:i + 1], store.first)[0]
        check_finite(z, f"{label or m.name} window {i}")
        ref = store.read(i, "exact")
        lp = np.array(ref["logp"], dtype=np.float32)
        parts["exact"].append(token_metrics(lp, z, ref["targets"], what=what))
        for k, mt in configs:
            e = encode_window(lp, ref["targets"], kinds=("compact",), k=k, m=mt, rng=store.rng(i))
            parts[(k, mt)].append(compact_token_metrics(e, z, what=what))
    full = {key: {n: np.concatenate([p[n] for p in v]) for n in what} for key, v in parts.items()}
    ex = full.pop("exact")
    out = {"exact": {n: float(ex[n].mean()) for n in what}}
    for key, v in full.items():
        row = {n: float(v[n].mean()) for n in what}
        row.update({f"{n}_rel_err": row[n] / out["exact"][n] - 1 for n in what})
        row["kld_p99_rel_err"] = float(np.percentile(v["kld"], 99) / np.percentile(ex["kld"], 99) - 1)
        out[key] = row
    return out


# ----------------------------------------------------------------------------- cohort

def fidelity_path(study) -> Path:
    from ..paths import study_dir
    return study_dir(study.study, study.profile_name) / "fidelity.csv"


def per_token_dir(study, quant_id: str, corpus: str, ctx: int, scoring: str) -> Path:
    from ..paths import fidelity_dir
    return fidelity_dir(study.study, study.profile_name, quant_id) / corpus / f"ctx={ctx}-{scoring}"


def artifact_paths(quants, reference=None, artifacts=None) -> dict:
    """quant_id -> artifact directory for the rows of a QUANTS frame: from `artifacts` (a mapping)
    when given, else the row's `artifact` column (written by silentzone.quantize), else
    paths.quant_artifact_dir(reference name, quant_id, recipe_hash), where silentzone.quantize writes."""
    out = {}
    for _, row in quants.iterrows():
        qid = row["quant_id"]
        if artifacts is not None:
            if qid not in artifacts:
                raise StoreError(f"--artifacts names no artifact path for quant {qid!r}")
            out[qid] = Path(artifacts[qid])
        elif isinstance(row.get("artifact"), str) and row["artifact"]:
            out[qid] = Path(row["artifact"])
        else:
            from ..paths import quant_artifact_dir
            out[qid] = quant_artifact_dir(reference.name, qid, row["recipe_hash"])
    return out


def _rows(study, qid, corpus, ctx, summary, tokens_hash, kind, scoring, status="ok", reason="",
          metrics=METRICS):
    n = int(summary.get("n_tokens", 0)) if summary else 0
    return [{"study": study.study, "quant_id": qid, "corpus": corpus, "ctx": int(ctx), "metric": m,
             "value": float(summary[m]) if summary else float("nan"), "n_tokens": n,
             "tokens_hash": tokens_hash, "store": kind, "scoring": scoring, "status": status,
             "reason": reason} for m in metrics]


def score_cohort(study, artifacts=None, *, kind: str = "compact", scoring: str = "half",
                 device: str = "cpu", threads: int | None = None, retry_failed: bool = False,
                 log=None, quants=None, out: Path | None = None, floors=()):
    """Score every ok quant of study_dir/quants.csv on every (corpus, ctx) of the study's profile.

    Writes study_dir/fidelity.csv (FIDELITY long format, plus columns store, scoring, status,
    reason) after each quant x corpus x ctx, and the per-token arrays under
    study_dir/fidelity/<quant>/<corpus>/ctx=<ctx>-<scoring>/<metric>.npy. Triples already in the
    table for the same store tokens_hash are skipped (failed ones too unless retry_failed).
    `quants` (a QUANTS frame) replaces quants.csv and `out` the table path: the workflow scores
    one quant per job into its own table, in parallel, and gathers them.
    floors: ((k, floor), ...) adds the top-k KLD with a fixed log-probability floor (paper Eq. 5)
    as metrics floor_metrics(floors), recorded in the provenance (`topk_floor`). Opt-in: the
    default () writes exactly the METRICS rows, so existing tables are reproduced unchanged;
    a triple scored without a requested variant is scored again. The study config's
    fidelity.divergent_tokens N (opt-in, 0 off) adds the Divergent Token Metrics fdt_mean and
    sdt_share (fidelity.divergent) with n_tokens = the positions compared; the reference's
    continuations come from the store (capture_study), or are computed here when missing.
    """
    import pandas as pd
    from ..paths import study_dir
    from ..provenance import record
    from ..tables import FIDELITY, QUANTS, read_table, write_table
    sd = study_dir(study.study, study.profile_name)
    quants = read_table(sd / "quants.csv", QUANTS) if quants is None else quants
    wanted = {q.id for q in study.quants}
    quants = quants[(quants["status"] == "ok") & quants["quant_id"].isin(wanted)]
    paths = artifact_paths(quants, None if artifacts is not None else reference_of(study), artifacts)
    stores = {(c, ctx): Store(store_dir(study, c, ctx, scoring)) for c in study.corpora
              for ctx in study.contexts}
    out = Path(out) if out is not None else fidelity_path(study)
    table = read_table(out, FIDELITY) if out.is_file() else pd.DataFrame(columns=[*FIDELITY.names])
    floors = tuple((int(k), float(f)) for k, f in floors)
    n_div = study.fidelity.divergent_tokens  # 0: off (the config's opt-in fidelity.divergent_tokens)
    kld_metrics = METRICS + floor_metrics(floors)
    metrics = kld_metrics + (DIVERGENT if n_div else ())
    extra = {"topk_floor": [{"k": k, "floor": f, "metrics": list(floor_metrics([(k, f)]))}
                            for k, f in floors]} if floors else {}
    if n_div:
        extra["divergent_tokens"] = {"n": n_div, "metrics": list(DIVERGENT)}
    prov = record(config_hash=study.config_hash, seeds=vars(study.seeds), stage="fidelity",
                  store=kind, scoring=scoring, **extra)
    # how each quant ran, {quant_id: {device, engine, kv_cache, attention}}: a load-time quant computes
    # in bfloat16 on a GPU and in float32 on a CPU (backends/hf.py), which moves its KLD; quants of an
    # earlier call keep their record
    old_prov = out.with_name(out.name + ".provenance.json")
    kept = json.loads(old_prov.read_text()).get("runtime", {}) if out.is_file() and old_prov.is_file() else {}
    prov["runtime"] = dict(kept)

    def done(qid, c, ctx, h):
        rows = table[(table["quant_id"] == qid) & (table["corpus"] == c) & (table["ctx"] == ctx)]
        if rows.empty or (rows["tokens_hash"] != h).any():
            return False
        if any(col in rows and (rows[col] != val).any() for col, val in (("store", kind), ("scoring", scoring))):
            return False  # scored against another store or scoring mode: score again, replacing it
        failed = "status" in rows and (rows["status"] == "failed").any()
        if not failed and not set(metrics) <= set(rows["metric"]):
            return False  # a requested top-k floor variant is missing: score again
        return not (failed and retry_failed)

    def save(new_rows, qid, c, ctx):
        nonlocal table
        keep = ~((table["quant_id"] == qid) & (table["corpus"] == c) & (table["ctx"] == ctx))
        table = pd.concat([table[keep], pd.DataFrame(new_rows)], ignore_index=True)
        table["ctx"] = table["ctx"].astype("int64")
        table["n_tokens"] = table["n_tokens"].astype("int64")
        table["value"] = table["value"].astype("float64")
        write_table(table, FIDELITY, out, prov)

    for qid in quants["quant_id"]:
        todo = [(c, ctx) for (c, ctx), st in stores.items() if not done(qid, c, ctx, st.tokens_hash)]
        if not todo:
            continue
        try:
            m = open_scorer(paths[qid], n_ctx=max(ctx for _, ctx in todo), device=device,
                            threads=threads, name=qid)
        except (BackendError, OSError, RuntimeError, ValueError) as e:
            reason = f"cannot open: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            for c, ctx in todo:
                save(_rows(study, qid, c, ctx, None, stores[c, ctx].tokens_hash, kind, scoring,
                           "failed", reason, metrics), qid, c, ctx)
            continue
        prov["runtime"][qid] = {"device": device, **m.attention()}
        for c, ctx in todo:
            st = stores[c, ctx]
            try:
                per_token = score_store(m, st, kind, batch=m.window_batch(), label=qid, floors=floors)
            except (NonFiniteLogits, ScoreRefused) as e:
                save(_rows(study, qid, c, ctx, None, st.tokens_hash, kind, scoring, "failed", str(e),
                           metrics), qid, c, ctx)
                if log:
                    log(f"score {qid} {c} ctx={ctx}: failed: {e}")
                continue
            d = per_token_dir(study, qid, c, ctx, scoring)
            d.mkdir(parents=True, exist_ok=True)
            for name, arr in per_token.items():
                np.save(d / f"{name}.npy", arr.astype(np.float32))
            summary = summarize(per_token)
            (d / "summary.json").write_text(json.dumps(summary, indent=2))
            rows = _rows(study, qid, c, ctx, summary, st.tokens_hash, kind, scoring, metrics=kld_metrics)
            if n_div:  # n_tokens: the positions compared (n x prompts), not the KLD's scored tokens
                ref = ensure_reference(st, n_div, lambda: open_scorer(
                    reference_source(reference_of(study), None, device), n_ctx=max(study.contexts),
                    device=device, threads=threads, name="reference", kv_cache=study.kv_cache), log)
                dsum, counts = score_divergent(m, st, ref)
                np.save(d / f"fdt-{n_div}.npy", counts["fdt"])  # per prompt: the integer counts
                (d / f"divergent-{n_div}.json").write_text(json.dumps(
                    {k: v for k, v in counts.items() if k != "fdt"} | {"fdt_sum": int(counts["fdt"].sum())}))
                rows += _rows(study, qid, c, ctx, dsum, st.tokens_hash, kind, scoring, metrics=DIVERGENT)
            save(rows, qid, c, ctx)
            if log:
                log(f"score {qid} {c} ctx={ctx}: kld_mean {summary['kld_mean']:.5f} "
                    f"top1 {summary['top1_agreement']:.4f} n={summary['n_tokens']}"
                    + (f" fdt_mean {dsum['fdt_mean']:.2f} sdt_share {dsum['sdt_share']:.4f}" if n_div else ""))
        del m
    return table
