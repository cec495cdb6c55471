"""Quant cohorts: one backend per format, each writing an artifact directory plus a manifest row.

    row = make_quant(study, study.quant("Q4_K_M"), reference)    # dict, QUANTS schema (+ extras)
    frame = make_cohort(study)                                    # every quant of the profile

Backends: gguf.py (llama-quantize / llama-imatrix), hf.py (GPTQ, AWQ via llm-compressor),
loadtime.py (bitsandbytes, torchao, optimum-quanto, HQQ: quantized when loaded), gguf_file.py
(an existing GGUF, local or from the hub: community quants, linked into the artifact dir).

Artifacts are keyed by reference and recipe hash, so that profiles and studies share them:
    <cache>/quants/<reference-name>/<quant_id>-<recipe_hash>/
        artifact.json   {"format": "gguf", "file": "model.gguf"} | {"format": "hf", "dir": "hf"} |
                        {"format": "loadtime", "method": ..., "recipe": {...}, "reference_hf": ...}
        manifest.json   the manifest row (status ok)
        model.gguf | hf/ | (nothing for load-time quants), quantize.log
Each is built in a temporary sibling directory `.<quant_id>-<hash>.tmp-<pid>` and renamed when
complete and checked, so a half-written artifact is never taken for a finished one. A finished
directory with a matching recipe hash is reused without any work. A quant whose tool fails or
whose logits are not finite is returned as a row with status "failed" and the reason; nothing is
kept for it, so the next run tries again. Only the failures declared in failures.py (TOOL_FAILURES:
QuantFailed, and what a tool or quantization library raises when it cannot make the quant) become
such rows; any other exception (TypeError, KeyError, ... of our own code) propagates, with nothing kept.

Every artifact is checked by opening it with `silentzone.backends.open_model` and scoring
models.CHECK_TEXT: the logits must be finite, and the row records their mean KLD against the float
reference (`check_kld`, a sanity value on ~100 tokens, not a fidelity result).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

from ..backends import open_model
from ..paths import imatrix_dir, quant_artifact_dir, quants_root
from ..settings import current
from .failures import TOOL_FAILURES, QuantFailed
from .loadtime import check_recipe, read_back

__all__ = ["make_quant", "make_cohort", "cohort_frame", "artifact_root", "artifact_dir", "artifact_of"]


def artifact_root() -> Path:
    return quants_root()


def artifact_dir(reference, quant_id: str, rhash: str, root: Path | None = None) -> Path:
    """Where the artifact of (reference, quant_id, recipe hash) lives: paths.quant_artifact_dir."""
    return quant_artifact_dir(reference.name, quant_id, rhash, root)


def _expected_dir(study, quant_cfg, reference, root: Path | None = None) -> Path:
    """The artifact directory of a quant of the study (its effective recipe's hash)."""
    from . import manifest as mf
    recipe = mf.effective_recipe(quant_cfg.method, dict(quant_cfg.params), study.profile)
    return artifact_dir(reference, quant_cfg.id, mf.recipe_hash(recipe, reference, quant_cfg.method), root)


def artifact_of(study, quant_cfg, reference, root: Path | None = None) -> Path | None:
    """The finished artifact directory of one quant of the study (as make_quant wrote it), or None
    when it has not been made (or failed). What bench and fidelity open without an explicit path."""
    final = _expected_dir(study, quant_cfg, reference, root)
    return final if _finished(final) is not None else None


def _threads() -> int:
    return current().threads


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale(final: Path) -> None:
    """Remove temporary build dirs of this artifact left by processes that are gone."""
    for tmp in final.parent.glob(f".{final.name}.tmp-*"):
        try:
            pid = int(tmp.name.rsplit("-", 1)[1])
        except ValueError:
            pid = -1
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(tmp, ignore_errors=True)


def _finished(final: Path) -> dict | None:
    """The manifest row of a finished artifact dir, or None (missing, unreadable or not ok)."""
    try:
        m = json.loads((final / "manifest.json").read_text())
        art = json.loads((final / "artifact.json").read_text())
    except (OSError, ValueError):
        return None
    if m.get("status") != "ok" or "format" not in art:
        return None
    return m


_REF_LOGITS: dict[tuple, tuple] = {}


def _reference_key(reference, device: str) -> str:
    """What the reference's check logits depend on: CHECK_TEXT, the device kind, the dtype and the
    weight files (name, size, mtime), so a re-exported reference is never read from an old cache."""
    from ..io import sha256_text
    from ..models import CHECK_TEXT
    stat = []
    for p in sorted(Path(reference.hf_dir).iterdir()):
        if p.is_file():
            st = p.stat()
            stat.append((p.name, st.st_size, st.st_mtime_ns))
    kind = "cuda" if str(device).startswith("cuda") else str(device)
    blob = json.dumps([CHECK_TEXT, kind, reference.dtype, stat])
    return sha256_text(blob)[:16]


def _reference_logits(reference, device: str = "cpu"):
    """(token ids of CHECK_TEXT, float reference logits): computed once per reference and device
    kind, then read from <reference root>/check-logits-<key>.npz (key: _reference_key).

    Every quant job of the DAG is its own process: without the file each one loaded the whole HF
    reference for ~100 tokens of logits (on a 24-35B reference, tens of GB read and put on the GPU
    beside the quant, per quant). An unreadable cache file is computed again and replaced."""
    import numpy as np
    h = _reference_key(reference, device)
    key = (str(reference.hf_dir), h)
    if key in _REF_LOGITS:
        return _REF_LOGITS[key]
    f = Path(reference.root) / f"check-logits-{h}.npz"
    try:
        with np.load(f) as z:
            ids, logits = [int(i) for i in z["ids"]], z["logits"]
    except (OSError, ValueError, KeyError, EOFError):  # absent or unreadable: compute it
        import torch
        from ..models import CHECK_TEXT
        ids = reference.tokenizer()(CHECK_TEXT)["input_ids"]
        model = reference.load_hf(device)
        with torch.no_grad():
            logits = model(torch.tensor([ids], device=device)).logits[0].float().cpu().numpy()
        del model
        tmp = f.with_name(f"{f.stem}.tmp-{os.getpid()}.npz")
        np.savez(tmp, ids=np.asarray(ids, dtype=np.int64), logits=logits)
        os.replace(tmp, f)  # atomic: a concurrent job reads the old file or the whole new one
    _REF_LOGITS[key] = (ids, logits)
    return ids, logits


def _check(art_dir: Path, reference, method: str, recipe: dict, device: str = "cpu") -> dict:
    """Open the artifact, score CHECK_TEXT; QuantFailed if logits are not finite. Returns extras."""
    import numpy as np
    from ..fidelity.kernels import token_kld
    t0 = time.time()
    ids, ref_logits = _reference_logits(reference, device)
    m = open_model(art_dir, device=device, threads=_threads(), n_ctx=max(256, len(ids)))
    out = {}
    if method in ("bnb", "torchao", "quanto", "hqq"):  # before any forward: bnb int8 moves its
        out["info"] = read_back(m.model, method, recipe)  # row scales (SCB) out of the weight then
    logits = m.logits(ids)
    del m
    if logits.shape != ref_logits.shape:
        raise QuantFailed(f"logits shape {logits.shape} differs from the reference's {ref_logits.shape}")
    if not np.isfinite(logits).all():
        bad = int((~np.isfinite(logits)).any(-1).sum())
        raise QuantFailed(f"non-finite logits at {bad} of {len(ids)} positions")
    kld = float(token_kld(ref_logits, logits).mean())
    if not math.isfinite(kld):
        raise QuantFailed(f"non-finite check KLD {kld}")
    out.update(check_kld=kld, check_tokens=len(ids), check_s=time.time() - t0)
    return out


def _build(tmp: Path, quant_id: str, recipe: dict, reference, root: Path, threads: int,
           seed: int) -> dict:
    """Make the artifact inside `tmp`; return {info, nbytes, sha256, extra...}."""
    from . import manifest as mf
    method = recipe["method"]
    params = {k: v for k, v in recipe.items() if k != "method"}
    if method == "gguf":
        from . import gguf
        imat = None
        if recipe.get("imatrix"):
            imat = gguf.imatrix(reference, recipe["imatrix"], int(recipe["imatrix_chunks"]),
                                imatrix_dir(reference.name, root), ctx=int(recipe["imatrix_ctx"]),
                                threads=threads)
        out = tmp / "model.gguf"
        log = gguf.quantize(reference.gguf, out, recipe, imatrix_file=imat, threads=threads,
                            log=tmp / "quantize.log")
        (tmp / "artifact.json").write_text(json.dumps({"format": "gguf", "file": "model.gguf"}))
        return {"info": gguf.read_back(out, recipe["type"]), "nbytes": out.stat().st_size,
                "sha256": mf.sha256_file(out), "fallback_tensors": gguf.fallback_count(log)}
    if method == "gguf_file":
        from . import gguf, gguf_file
        files = gguf_file.fetch(params, tmp)
        nbytes, sha = gguf_file.identity(files)
        if params.get("sha256") and params["sha256"] != sha:
            raise QuantFailed(f"sha256 {sha} differs from the recipe's {params['sha256']}")
        (tmp / "artifact.json").write_text(json.dumps({"format": "gguf", "file": files[0].name,
                                                       "source": str(files[0].resolve())}))
        return {"info": gguf.read_back(files, gguf_file.requested_type(params)), "nbytes": nbytes,
                "sha256": sha}
    if method in ("gptq", "awq"):
        import torch
        from . import hf
        torch.set_num_threads(threads)
        hf.quantize(method, recipe, reference, tmp / "hf", seed=seed)
        (tmp / "artifact.json").write_text(json.dumps({"format": "hf", "dir": "hf"}))
        files = [p for p in (tmp / "hf").rglob("*") if p.is_file()]
        return {"info": hf.read_back(tmp / "hf"), "nbytes": sum(p.stat().st_size for p in files),
                "sha256": mf.sha256_dir(tmp / "hf")}
    if method in ("bnb", "torchao", "quanto", "hqq"):
        check_recipe(method, params)
        art = {"format": "loadtime", "method": method, "recipe": params,
               "reference_hf": str(Path(reference.hf_dir).resolve())}
        (tmp / "artifact.json").write_text(json.dumps(art, sort_keys=True))
        ident = {"method": method, "recipe": params, "reference": mf.reference_identity(reference)}
        return {"info": None, "nbytes": 0, "sha256": mf.sha256_text(mf.canonical_json(ident))}
    raise ValueError(f"unknown quant method {method!r}")


def make_quant(study, quant_cfg, reference, root: Path | None = None, threads: int | None = None,
               device: str = "cpu") -> dict:
    """Make (or reuse) one quant; return its manifest row. Tool failures (failures.TOOL_FAILURES) give
    status 'failed'; any other exception propagates (a bug is not a failed quant).

    `device` is where the artifact is checked (and load-time quants are loaded): cpu or cuda. GPTQ/AWQ
    calibrate through llm-compressor, which moves each layer to the GPU itself when one is present."""
    import torch
    from . import manifest as mf
    root = Path(root or artifact_root())
    threads = threads or _threads()
    seed = int(study.seeds.global_)
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    recipe = mf.effective_recipe(quant_cfg.method, dict(quant_cfg.params), study.profile)
    rhash = mf.recipe_hash(recipe, reference, quant_cfg.method)
    final = artifact_dir(reference, quant_cfg.id, rhash, root)
    done = _finished(final)
    if done is not None:
        return {**done, "study": study.study, "reused": True}
    final.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(final)
    if final.exists():  # only reachable by hand (we rename complete dirs): never trust it
        shutil.rmtree(final)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    t0 = time.time()
    try:
        built = _build(tmp, quant_cfg.id, recipe, reference, root, threads, seed)
        wall = time.time() - t0
        chk = _check(tmp, reference, recipe["method"], {k: v for k, v in recipe.items() if k != "method"},
                     device)
        info = built.pop("info") or chk.pop("info", None)
        chk.pop("info", None)
        r = mf.row(study.study, quant_cfg.id, recipe, rhash, reference, info=info,
                   nbytes=built["nbytes"], sha256=built["sha256"], wall_s=wall, artifact=str(final),
                   fallback_tensors=built.get("fallback_tensors"), **chk)
    except TOOL_FAILURES as e:  # the method cannot make this quant: a failed row; the cohort goes on
        shutil.rmtree(tmp, ignore_errors=True)
        msg = " ".join(str(e).split())[:400]
        return mf.row(study.study, quant_cfg.id, recipe, rhash, reference, status="failed",
                      reason=f"{type(e).__name__}: {msg}", wall_s=time.time() - t0)
    except BaseException:  # a bug or an interrupt: nothing is kept, and it propagates
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
    (tmp / "manifest.json").write_text(json.dumps(clean, indent=2, default=str))
    try:
        os.rename(tmp, final)
    except OSError:  # another process finished the same artifact first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        done = _finished(final)
        if done is None:
            raise
        return {**done, "study": study.study, "reused": True}
    return r


def make_cohort(study, only: list[str] | str | None = None, root: Path | None = None,
                reference=None, write: bool = True, progress: bool = True, device: str = "cpu"):
    """Make every quant of the study's profile; write <study_dir>/quants.csv; return the frame.

    `only` (ids, or a comma-separated string) limits the quants that are built; the table still
    lists every other quant of the profile whose finished artifact exists. Finished artifacts with a
    matching recipe hash are reused; failures are recorded and the others go on.
    """
    from tqdm.auto import tqdm
    from ..config import ConfigError
    from ..models import resolve
    from . import manifest as mf
    if isinstance(only, str):
        only = [s.strip() for s in only.split(",") if s.strip()]
    ids = [q.id for q in study.quants]
    unknown = [o for o in (only or []) if o not in ids]
    if unknown:
        raise ConfigError(f"{study.source}: --only names quant(s) not in profile {study.profile_name!r}: "
                       f"{unknown}")
    reference = reference or resolve(study.reference.model, study.reference.dtype)
    rows = []
    bar = tqdm(study.quants, desc=f"quantize {study.study}/{study.profile_name}", disable=not progress)
    for q in bar:
        bar.set_postfix_str(q.id)
        if only and q.id not in only:
            done = _finished(_expected_dir(study, q, reference, root))
            if done is not None:
                rows.append({**done, "study": study.study, "reused": True})
            continue
        r = make_quant(study, q, reference, root=root, device=device)
        rows.append(r)
        state = "reused" if r.get("reused") else r["status"]
        bpw = f"{r['bpw']:.2f}" if r["bpw"] == r["bpw"] else "-"
        tqdm.write(f"  {q.id:<28} {state:<7} {r['requested_type']:<10} bpw {bpw:<5} "
                   f"{r['bytes'] / 1e6:7.1f} MB {r['wall_s']:6.1f} s  {r['reason'][:100]}")
    return cohort_frame(study, rows, write=write, only=only)


def cohort_frame(study, rows: list[dict], write: bool = True, only=None):
    """The QUANTS frame of manifest rows (contract columns first, then the extras, typed); with
    `write`, also <study_dir>/quants.csv with its provenance. The workflow gathers per-quant rows
    (written by `make_quant` jobs run in parallel) through this."""
    import pandas as pd
    from ..paths import study_dir
    from ..provenance import record
    from ..tables import QUANTS, write_table
    from . import manifest as mf
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=QUANTS.names + list(mf.EXTRA_COLUMNS))
    cols = QUANTS.names + [c for c in mf.EXTRA_COLUMNS if c in frame] + \
        [c for c in frame.columns if c not in QUANTS.names and c not in mf.EXTRA_COLUMNS]
    frame = frame[cols]
    for c in ("bpw", "wall_s", "bpw_all", "fallback_frac", "check_kld", "check_s", "fallback_tensors"):
        frame[c] = pd.to_numeric(frame[c], errors="coerce").astype("float64")
    frame["bytes"] = frame["bytes"].astype("int64")
    if write:
        prov = record(study.config_hash, vars(study.seeds), stage="quantize", profile=study.profile_name,
                      only=only or [])
        write_table(frame, QUANTS, study_dir(study.study, study.profile_name) / "quants.csv", prov)
    return frame
