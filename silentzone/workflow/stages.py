"""The jobs of the workflow DAG, one unit of work each, and the gathers that join them.

The Snakefile (silentzone/workflow/Snakefile) runs each job as `silentzone stage <name> ...` in
its own process, so that per-quant jobs run in parallel within the cores given and a killed job
loses only itself. Every job writes its products atomically (temporary name, then rename) and ends
by writing a small JSON marker, the only output Snakemake tracks; the module functions underneath
(make_quant, capture_study, score_cohort, run_benchmarks) also reuse what is finished, so a rerun
after an interruption redoes nothing that completed.

Layout under the study directory SD = <cache>/studies/<study>/<profile>/ (the workflow's
working directory):
    wf/reference.json              the float reference, exported and checked
    wf/quants/<quant>.json         one manifest row (status ok or failed, with its reason)
    wf/capture/<corpus>-<ctx>.json the reference store of one corpus x context
    wf/fidelity/<quant>.json       marker; the rows are in fidelity/<quant>/fidelity.csv
    wf/bench/<model>.json          marker; the rows are in samples/<model>/<task>.csv
    quants.csv, fidelity.csv, samples.csv   the gathered contract tables
The gathers also publish the three tables into the results directory (data/<study>/ for the
default profile), with machine paths replaced by $SILENTZONE_HOME.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

from ..io import write_json
from ..paths import cache_home, fidelity_dir, samples_dir, study_dir

FAILED_QUANT = "quantization failed"


def _write_json(path: Path, obj) -> Path:
    """A marker: io.write_json under a per-process temporary name (parallel jobs)."""
    return write_json(path, obj, suffix=f".tmp-{os.getpid()}")


def sd(study) -> Path:
    return study_dir(study.study, study.profile_name)


def reference(study, out: Path) -> Path:
    """Export (once) and check the study's float reference; marker with its paths and check."""
    from ..models import resolve
    ref = resolve(study.reference.model, study.reference.dtype)
    return _write_json(out, {"name": ref.name, "hf_dir": str(ref.hf_dir), "gguf": str(ref.gguf),
                             "check": ref.info.get("check")})


def quant(study, quant_id: str, out: Path, device: str = "cpu") -> dict:
    """Make (or reuse) one quant; its manifest row (ok or failed) is the marker."""
    from ..models import resolve
    from ..quantize import make_quant
    ref = resolve(study.reference.model, study.reference.dtype)
    row = make_quant(study, study.quant(quant_id), ref, device=device)
    _write_json(out, row)
    state = "reused" if row.get("reused") else row["status"]
    print(f"quant {quant_id}: {state} {row['reason']}".rstrip(), flush=True)
    return row


def capture(study, corpus: str, ctx: int, out: Path, device: str = "cpu") -> Path:
    """Capture the reference store of one corpus x context (skipped when complete): llama.cpp on
    the CPU, transformers on a GPU."""
    from ..fidelity.capture import capture_study, stderr_log
    one = replace(study, corpora=(corpus,), contexts=(int(ctx),))
    (st,) = capture_study(one, device=device, log=stderr_log)
    return _write_json(out, {"corpus": corpus, "ctx": int(ctx), "path": str(st.path),
                             "n_windows": st.n_windows, "tokens_hash": st.tokens_hash})


def _row(marker: Path) -> dict:
    return json.loads(Path(marker).read_text())


def fidelity_table(study, quant_id: str) -> Path:
    return fidelity_dir(study.study, study.profile_name, quant_id) / "fidelity.csv"


def score(study, quant_id: str, quant_marker: Path, out: Path, device: str = "cpu") -> Path:
    """Score one quant on every corpus x context of the profile into its own table."""
    import pandas as pd
    from ..fidelity.capture import stderr_log
    from ..fidelity.score import score_cohort
    from ..quantize import cohort_frame
    row = _row(quant_marker)
    if row["status"] != "ok":
        return _write_json(out, {"quant_id": quant_id, "status": "failed", "reason": FAILED_QUANT,
                                 "table": ""})
    quants = cohort_frame(study, [row], write=False)
    table = score_cohort(study, kind="compact", device=device, quants=quants,
                         out=fidelity_table(study, quant_id), log=stderr_log)
    failed = table[table.get("status", pd.Series("ok", index=table.index)) == "failed"]
    return _write_json(out, {"quant_id": quant_id, "status": "failed" if len(failed) else "ok",
                             "reason": "; ".join(sorted(set(failed.get("reason", [])))),
                             "table": str(fidelity_table(study, quant_id))})


def bench(study, model: str, out: Path, quant_marker: Path | None = None, device: str = "cpu",
          tasks: list[str] | None = None, keep_store: bool = True) -> Path:
    """Benchmark the reference (model == 'reference') or one quant on the profile's tasks (`tasks`:
    a subset, so that the reference's tasks run as parallel jobs; the marker is then per subset).
    The reference runs in llama.cpp (its GGUF) on the CPU and on a GPU with a CUDA build of
    llama.cpp, else in transformers (its HF export, float32); their logits agree to KL < 1e-4
    (models.check_reference). keep_store False (the reference only): its tables without the
    distributions that the quants' KLD reads (run_benchmarks)."""
    import logging
    from ..backends import reference_path
    from ..bench.run import run_benchmarks
    from ..models import resolve
    from ..config import ConfigError
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if tasks:
        bad = [t for t in tasks if t not in study.tasks]
        if bad:
            raise ConfigError(f"--tasks: {', '.join(bad)} not among the tasks of {study.study}/"
                              f"{study.profile_name} ({', '.join(study.tasks)})")
    if not keep_store and model != "reference":
        raise ConfigError(f"--no-store: the reference's bench only, not {model}'s (a quant's KLD needs the store)")
    ref = resolve(study.reference.model, study.reference.dtype)
    models = {"reference": reference_path(ref, device)}
    if model != "reference":
        row = _row(quant_marker)
        if row["status"] != "ok":
            return _write_json(out, {"model": model, "status": "failed", "reason": FAILED_QUANT})
        models[model] = row["artifact"]
    frame = run_benchmarks(study, models, tasks=tasks, combined=False, device=device, keep_store=keep_store)
    mine = frame[frame["model"] == model]
    return _write_json(out, {"model": model, "status": "ok", "n": len(mine),
                             **({"tasks": list(tasks)} if tasks else {}),
                             "acc": float(mine["correct"].mean()) if len(mine) else None})


# ----------------------------------------------------------------------------- gathers

def portable_paths(frame, columns):
    """Replace the cache root in path columns by $SILENTZONE_HOME (shipped tables hold no host paths)."""
    home = str(cache_home())
    for c in columns:
        if c in frame:
            frame[c] = frame[c].map(lambda v: v.replace(home, "$SILENTZONE_HOME") if isinstance(v, str) else v)
    return frame


def _publish(frame, schema, name: str, results: Path | None, prov: dict) -> None:
    from ..tables import write_table
    if results is not None:
        write_table(frame, schema, Path(results) / name, prov)


def _marker_row(study, stage: str, name: str) -> dict:
    """The JSON marker of one finished job (wf/<stage>/<name>.json); a one-line error if it has not run."""
    marker = sd(study) / "wf" / stage / f"{name}.json"
    if not marker.is_file():
        from .run import WorkflowError
        raise WorkflowError(f"{marker}: {stage} job of {name!r} has not run (run the workflow)")
    return _row(marker)


def gather_quants(study, results: Path | None = None):
    """quants.csv from the per-quant rows (every quant of the profile must have one)."""
    from ..provenance import record
    from ..quantize import cohort_frame
    from ..tables import QUANTS
    frame = cohort_frame(study, [_marker_row(study, "quants", q.id) for q in study.quants])
    frame = portable_paths(frame.copy(), ("artifact",)).drop(columns=["reused"], errors="ignore")
    _publish(frame, QUANTS, "quants.csv", results,
             record(study.config_hash, vars(study.seeds), stage="quantize", profile=study.profile_name))
    return frame


def gather_fidelity(study, results: Path | None = None):
    """fidelity.csv from the per-quant tables (quants that failed to quantize have none)."""
    import pandas as pd
    from ..provenance import record
    from ..tables import FIDELITY, read_table, write_table
    frames = []
    for q in study.quants:
        if _marker_row(study, "fidelity", q.id)["table"]:
            frames.append(read_table(fidelity_table(study, q.id), FIDELITY))
    frame = (pd.concat(frames, ignore_index=True) if frames
             else pd.DataFrame({c: pd.Series(dtype=object) for c in FIDELITY.names}))
    frame = frame.sort_values(["quant_id", "corpus", "ctx", "metric"], kind="stable").reset_index(drop=True)
    prov = record(study.config_hash, vars(study.seeds), stage="fidelity", profile=study.profile_name)
    write_table(frame, FIDELITY, sd(study) / "fidelity.csv", prov)
    _publish(frame, FIDELITY, "fidelity.csv", results, prov)
    return frame


def gather_samples(study, results: Path | None = None):
    """samples.csv from the per-(model, task) tables of the reference and every quant that ran."""
    import pandas as pd
    from ..bench.run import read_samples
    from ..provenance import record
    from ..tables import SAMPLES, write_table
    frames = []
    for model in ["reference"] + [q.id for q in study.quants]:
        if _marker_row(study, "bench", model)["status"] != "ok":
            continue
        for task in study.tasks:
            frames.append(read_samples(samples_dir(study.study, study.profile_name, model) / f"{task}.csv"))
    frame = pd.concat(frames, ignore_index=True)
    frame = frame.sort_values(["model", "task", "item_id"], kind="stable").reset_index(drop=True)
    prov = record(study.config_hash, vars(study.seeds), stage="bench", profile=study.profile_name,
                  tasks=list(study.tasks), n_items=study.profile.n_items)
    write_table(frame, SAMPLES, sd(study) / "samples.csv", prov)
    # Shipped: the contract columns only (generated responses stay in the cache).
    _publish(frame[SAMPLES.names].copy(), SAMPLES, "samples.csv", results, prov)
    return frame
