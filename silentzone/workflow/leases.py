"""A study's results directory from the packed results of GPU leases (issue 19).

    silentzone gather-leases --study smollm2 --profile power --out DIR LEASE.tar.xz [LEASE.tar.xz ...]

A lease of the lent GPU machine (perf/gpu/power_run.py) packs what its jobs finished under
studies/<study>/<profile>/ of SILENTZONE_HOME into one tar.xz: the quant markers (wf/quants/<q>.json,
with each file's sha256), the per-quant fidelity tables (fidelity/<q>/fidelity.csv), and the bench
tables of each (model, task) (samples/<model>/<task>.csv). One lease rarely finishes a cohort, so
the pieces of several leases are put together here, and only where they are known to fit:

- a quant made on two leases must be the same file (equal sha256), else nothing is gathered;
- a table that two leases both hold must hold the same rows (every contract column equal: the
  reference's margins are bit-identical across an H100 and an H200, docs/performance.md), else
  nothing is gathered;
- the cohort is the quants with every task's bench table and a fidelity table, plus the quants
  whose quantization failed (the contract keeps them, with status failed); a quant with only part
  of its tables is left out and named, on stderr and in leases.json; so is a quant whose tables were
  scored two ways (another device, or another attention record: engine, KV/compute dtype), since its
  composite would mix two deployments (load-time quants compute in bfloat16 on the GPU, float32 on a CPU).

The reference's answers come from a float run when `reference` names one (`--reference`): a tar of
the same layout whose reference tables were scored on a CPU with an F32 KV cache (their provenance
says so; anything else is refused). llama.cpp's CUDA build is not float even with F32 weights and
cache (cuBLAS and its tile kernels compute F32 products in TF32: docs/performance.md, "The CUDA
reference is TF32"), so the leases' own reference tables then serve only as the check that each
lease's quants were scored against the same reference (their per-prompt KLD columns are taken
against that lease's reference distributions): they must still be equal between leases, and
leases.json's `reference` block says, per task, on how many items their answers differ from the
float reference's, which items, and the largest margin difference.

The later lease wins where the tables are equal anyway. Writes DIR/quants.csv, fidelity.csv,
samples.csv (the contract tables that silentzone.report reads) and DIR/leases.json: each lease's
file name, sha256 and what it gave, the quants gathered and those left out with the reason, and
`bench_devices`: which device scored each gathered bench table ({device: ["model/task", ...]}),
from the `device` its provenance records. A table packed before that key was recorded (2026-12-06)
has none; every such table came from the lent GPU machine, so it counts as cuda (TABLE_DEVICE_DEFAULT).
"""

from __future__ import annotations

import json
import re
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

from ..errors import SilentzoneError
from ..io import sha256_file


TABLE_DEVICE_DEFAULT = "cuda"  # bench tables without a `device` in their provenance (module doc)


class LeaseError(SilentzoneError, ValueError):
    """Lease results that cannot be put together (one-line message naming the lease and file)."""


def read_lease(path: str | Path, study: str, profile: str) -> dict:
    """{"markers": {quant: dict}, "fidelity": {quant: bytes}, "samples": {(model, task): bytes},
    "samples_prov": {(model, task): dict}} of one lease's tar, its members under
    studies/<study>/<profile>/ (others are ignored)."""
    path = Path(path)
    if not path.is_file():
        raise LeaseError(f"{path}: lease results not found")
    base = f"studies/{study}/{profile}/"
    pat = {
        "markers": re.compile(re.escape(base) + r"wf/quants/(?P<q>[^/]+)\.json$"),
        "fidelity": re.compile(re.escape(base) + r"fidelity/(?P<q>[^/]+)/fidelity\.csv$"),
        "samples": re.compile(re.escape(base) + r"samples/(?P<m>[^/]+)/(?P<t>[^/]+)\.csv$"),
        "samples_prov": re.compile(re.escape(base) + r"samples/(?P<m>[^/]+)/(?P<t>[^/]+)\.csv\.provenance\.json$"),
    }
    out = {"markers": {}, "fidelity": {}, "samples": {}, "samples_prov": {}}
    try:
        tar = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError) as e:
        raise LeaseError(f"{path}: not a readable tar ({e})") from None
    with tar:
        for m in tar.getmembers():
            if not m.isfile() or not m.name.startswith(base):
                continue
            for kind, rx in pat.items():
                hit = rx.match(m.name)
                if hit is None:
                    continue
                data = tar.extractfile(m).read()
                if kind in ("markers", "samples_prov"):
                    try:
                        value = json.loads(data)
                    except ValueError:
                        raise LeaseError(f"{path}: {m.name}: not JSON") from None
                    out[kind][hit["q"] if kind == "markers" else (hit["m"], hit["t"])] = value
                elif kind == "fidelity":
                    out[kind][hit["q"]] = data
                else:
                    out[kind][(hit["m"], hit["t"])] = data
    if not any(v for k, v in out.items() if k != "samples_prov"):
        raise LeaseError(f"{path}: no results of {study}/{profile} in it (members under {base})")
    return out


def _table(data: bytes, name: str, read, where: str):
    """A lease's table (its bytes) through a contract reader `read(path)`; a bad table is one line
    naming the lease and member (`where`), not the temporary file it is read from."""
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / name
        p.write_bytes(data)
        try:
            return read(p)
        except Exception as e:  # noqa: BLE001 - the contract's message, with the lease's name
            raise LeaseError(f"{where}: {str(e).replace(str(p), name)}") from None


def _runtime(prov: dict) -> tuple[str, str]:
    """How a bench table was scored, from its provenance: (device, the attention record as sorted JSON);
    two tables of one quant that differ here were scored two ways."""
    return prov.get("device", TABLE_DEVICE_DEFAULT), json.dumps(prov.get("attention"), sort_keys=True)


def _same_rows(a, b, columns) -> bool:
    """Every column of `columns` equal, row for row in key order (NaN where both are NaN)."""
    key = [c for c in ("model", "task", "item_id", "quant_id", "corpus", "ctx", "metric") if c in columns]
    a = a[list(columns)].sort_values(key).reset_index(drop=True)
    b = b[list(columns)].sort_values(key).reset_index(drop=True)
    return a.equals(b)


FLOAT_KV = ("f32", "float32")  # a float reference's KV cache, as the attention record names it


def float_reference(study, path: str | Path) -> tuple[dict, dict]:
    """({task: frame}, {task: provenance}) of the reference's bench tables in the tar `path`, checked
    to be a float run: every task of the study there, scored on a CPU with an F32 KV cache, and
    nothing but the reference's tables in it (one line naming the file and table otherwise)."""
    from ..bench.run import read_samples
    path = Path(path)
    got = read_lease(path, study.study, study.profile_name)
    others = sorted({m for m, _ in got["samples"] if m != "reference"} | set(got["markers"]) | set(got["fidelity"]))
    if others:
        raise LeaseError(f"{path}: a float reference holds the reference's tables only, not {', '.join(others)}")
    missing = [t for t in study.tasks if ("reference", t) not in got["samples"]]
    if missing:
        raise LeaseError(f"{path}: the reference's bench of {', '.join(missing)} is not in it")
    frames, provs = {}, {}
    for t in study.tasks:
        prov = got["samples_prov"].get(("reference", t), {})
        device, kv = _runtime(prov)[0], (prov.get("attention") or {}).get("kv_cache")
        if device != "cpu" or kv not in FLOAT_KV:
            raise LeaseError(f"{path}: samples/reference/{t}.csv was scored on {device} with KV cache {kv}, "
                             "not a float reference (a CPU with an F32 KV cache: llama.cpp's CUDA build "
                             "computes F32 products in TF32)")
        frames[t] = _table(got["samples"][("reference", t)], f"{t}.csv", read_samples,
                           f"{path}: samples/reference/{t}.csv")
        provs[t] = prov
    return frames, provs


def _answers_vs(float_ref, lease_ref) -> dict:
    """Where a lease's reference table answers otherwise than the float reference (same items)."""
    a = float_ref.set_index("item_id").sort_index()
    b = lease_ref.set_index("item_id").sort_index()
    if not a.index.equals(b.index):
        raise LeaseError("the lease's reference table holds other items than the float reference's")
    moved = a["correct"] != b["correct"]
    if "pred" in a and "pred" in b:  # the answer itself, where the tables keep it (not a contract column)
        moved |= a["pred"].astype(str) != b["pred"].astype(str)
    differ = a.index[moved]
    return {"items": len(a), "answers_differ": len(differ), "item_ids": [str(i) for i in differ],
            "margin_abs_diff_max": float((a["margin"] - b["margin"]).abs().max())}


def gather_leases(study, tars: list[str | Path], out: str | Path, reference: str | Path | None = None) -> dict:
    """Put the leases' pieces together (module doc) and write the results directory `out`;
    returns what leases.json holds. `reference`: a float run's reference tables (module doc)."""
    import pandas as pd
    from ..provenance import record
    from ..quantize import cohort_frame
    from ..bench.run import read_samples
    from ..tables import FIDELITY, QUANTS, SAMPLES, read_table, write_table
    from .stages import portable_paths
    if not tars:
        raise LeaseError("gather-leases: no lease results given")
    leases = [(Path(t), read_lease(t, study.study, study.profile_name)) for t in tars]
    known = {q.id for q in study.quants}
    markers, fid, samples, origin, runtime = {}, {}, {}, {}, {}
    for path, got in leases:
        for q, mk in got["markers"].items():
            if q not in known:
                raise LeaseError(f"{path}: quant {q!r} is not in {study.study}/{study.profile_name}")
            if q in markers and markers[q].get("sha256") != mk.get("sha256"):
                raise LeaseError(f"{path}: quant {q} is another file than in {origin[('marker', q)]} "
                                 f"(sha256 {mk.get('sha256')} vs {markers[q].get('sha256')}); "
                                 "tables of different files cannot be put together")
            markers[q], origin[("marker", q)] = mk, path.name
        for q, data in got["fidelity"].items():
            frame = _table(data, "fidelity.csv", lambda f: read_table(f, FIDELITY),
                           f"{path}: fidelity/{q}/fidelity.csv")
            if q in fid and not _same_rows(fid[q], frame, FIDELITY.names):
                raise LeaseError(f"{path}: fidelity/{q}/fidelity.csv differs from {origin[('fid', q)]}")
            fid[q], origin[("fid", q)] = frame, path.name
        for (m, t), data in got["samples"].items():
            frame = _table(data, f"{t}.csv", read_samples, f"{path}: samples/{m}/{t}.csv")
            if (m, t) in samples and not _same_rows(samples[(m, t)], frame, SAMPLES.names):
                raise LeaseError(f"{path}: samples/{m}/{t}.csv differs from {origin[('s', m, t)]} "
                                 "(the same model and task scored to other rows)")
            samples[(m, t)], origin[("s", m, t)] = frame, path.name
            runtime[(m, t)] = _runtime(got["samples_prov"].get((m, t), {}))

    def benched(m):
        return all((m, t) in samples for t in study.tasks)
    ref_info = None
    if reference is not None:
        frames, provs = float_reference(study, reference)
        ref_info = {"file": Path(reference).name, "sha256": sha256_file(reference),
                    "device": "cpu", "kv_cache": sorted({p["attention"]["kv_cache"] for p in provs.values()}),
                    "engine": sorted({str(p["attention"].get("engine")) for p in provs.values()}),
                    "vs_leases": {}}
        for t in study.tasks:
            if ("reference", t) in samples:  # the leases' (last) reference table of t, against the float one
                try:
                    ref_info["vs_leases"][t] = {"lease": origin[("s", "reference", t)],
                                                **_answers_vs(frames[t], samples[("reference", t)])}
                except LeaseError as e:
                    raise LeaseError(f"{origin[('s', 'reference', t)]}: samples/reference/{t}.csv: {e}") from None
            samples[("reference", t)], origin[("s", "reference", t)] = frames[t], Path(reference).name
            runtime[("reference", t)] = _runtime(provs[t])  # device cpu: float_reference checked it
    if not benched("reference"):
        missing = [t for t in study.tasks if ("reference", t) not in samples]
        raise LeaseError(f"{', '.join(str(p) for p, _ in leases)}: the reference's bench of "
                         f"{', '.join(missing)} is in none of them")
    gathered, failed, left = [], [], {}
    for q in study.quants:
        mk = markers.get(q.id)
        if mk is None:
            left[q.id] = "not made on these leases"
        elif mk.get("status") != "ok":
            failed.append(q.id)
        elif not benched(q.id):
            done = [t for t in study.tasks if (q.id, t) in samples]
            left[q.id] = f"bench of {len(done)} of {len(study.tasks)} tasks"
        elif len({runtime[(q.id, t)] for t in study.tasks}) > 1:
            ways = {}
            for t in study.tasks:
                dev, att = runtime[(q.id, t)]
                ways.setdefault(f"{dev} {(json.loads(att) or {}).get('kv_cache', '?')}", []).append(t)
            left[q.id] = "bench tables scored two ways: " + "; ".join(f"{w} ({', '.join(ts)})" for w, ts in ways.items())
        elif q.id not in fid:
            left[q.id] = "no fidelity table"
        else:
            gathered.append(q.id)
    if not gathered:
        raise LeaseError(f"{study.study}/{study.profile_name}: no quant is complete on these leases")
    if left:
        print(f"gather-leases: {len(left)} quant(s) left out: "
              + "; ".join(f"{q} ({why})" for q, why in left.items()), file=sys.stderr, flush=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cohort = replace(study, quants=[q for q in study.quants if q.id in set(gathered) | set(failed)])
    info = {
        "study": study.study, "profile": study.profile_name, "config_hash": study.config_hash,
        "leases": [{"file": p.name, "sha256": sha256_file(p), "quants": sorted(g["markers"]),
                    "tables": len(g["samples"]) + len(g["fidelity"])} for p, g in leases],
        "gathered": gathered, "failed": failed, "left_out": left,
        "n_quants_profile": len(study.quants),
        "bench_devices": {},
        "reference": ref_info,
    }
    for m in ["reference"] + gathered:
        for t in study.tasks:
            info["bench_devices"].setdefault(runtime[(m, t)][0], []).append(f"{m}/{t}")
    prov = record(study.config_hash, vars(study.seeds), stage="gather-leases",
                  profile=study.profile_name, leases=[x["file"] for x in info["leases"]],
                  lease_sha256=[x["sha256"] for x in info["leases"]], left_out=sorted(left),
                  float_reference=None if ref_info is None else ref_info["file"])
    rows = [markers[q.id] for q in cohort.quants]
    qframe = portable_paths(cohort_frame(cohort, rows, write=False).copy(), ("artifact",))
    write_table(qframe.drop(columns=["reused"], errors="ignore"), QUANTS, out / "quants.csv", prov)
    ffr = pd.concat([fid[q] for q in gathered], ignore_index=True)
    ffr = ffr.sort_values(["quant_id", "corpus", "ctx", "metric"], kind="stable").reset_index(drop=True)
    write_table(ffr, FIDELITY, out / "fidelity.csv", prov)
    sfr = pd.concat([samples[(m, t)] for m in ["reference"] + gathered for t in study.tasks],
                    ignore_index=True)
    sfr = sfr.sort_values(["model", "task", "item_id"], kind="stable").reset_index(drop=True)
    write_table(sfr[SAMPLES.names].copy(), SAMPLES, out / "samples.csv", prov)
    (out / "leases.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    return info


def _main(args) -> int:
    from ..config import load_study
    study = load_study(args.study, args.profile)
    info = gather_leases(study, args.tars, args.out, reference=args.reference)
    print(f"{args.out}: {len(info['gathered'])} quants gathered (+{len(info['failed'])} failed) of "
          f"{info['n_quants_profile']}, from {len(info['leases'])} lease(s)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("gather-leases", help="a results directory from GPU leases' packed results")
    p.add_argument("--study", required=True)
    p.add_argument("--profile", default="power")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--reference", type=Path, default=None,
                   help="a float run's reference tables (CPU, F32 KV cache): the reference's answers come "
                        "from it, the leases' own reference tables are checked against it (leases.json)")
    p.add_argument("tars", nargs="+", type=Path)
    p.set_defaults(fn=_main)

