"""Read and write the result-contract tables (schemas in `analysis.contracts`).

Every writer goes through `write_table`: it validates the frame against its schema, writes to a
temporary file and renames (a half-written table is never taken for a finished one), and stores a
provenance record beside it as <file>.provenance.json.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.contracts import FIDELITY, QUANTS, SAMPLES, SCHEMAS, STATS_KEYS, ContractError, Schema, validate

from .io import atomic_path, write_json

__all__ = ["FIDELITY", "QUANTS", "SAMPLES", "SCHEMAS", "ContractError", "read_table", "write_table",
           "write_stats", "write_csv", "FLOAT_FORMAT"]

FLOAT_FORMAT = "%.10g"  # floats in written tables: 10 significant digits


def write_csv(frame: pd.DataFrame, path: str | Path, provenance: dict, exact: bool = False) -> Path:
    """Write a table outside the contract (an analysis product, a benchmark report) as CSV atomically
    (temporary name, then rename) with <file>.provenance.json.

    Floats are written with FLOAT_FORMAT (10 significant digits), or, with exact=True, as the shortest
    text that reads back to the same float (for tables whose identities are checked exactly).
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format=None if exact else FLOAT_FORMAT, lineterminator="\n")
        write_json(path.with_name(path.name + ".provenance.json"), provenance, default=None)
    return path


def write_table(frame: pd.DataFrame, schema: Schema, path: str | Path, provenance: dict) -> Path:
    """Validate `frame` and write it as CSV (.csv) or Parquet (.parquet), atomically."""
    path = Path(path)
    validate(frame, schema, where=str(path))
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False, float_format="%.10g", lineterminator="\n")
        write_json(path.with_name(path.name + ".provenance.json"), {"schema": schema.name, **provenance})
    return path


_DTYPES = {"str": "string", "int": "int64", "float": "float64", "bool": "bool"}


def read_table(path: str | Path, schema: Schema) -> pd.DataFrame:
    """Read a table written by `write_table` and validate it (ContractError names the file)."""
    path = Path(path)
    if not path.is_file():
        raise ContractError(f"{path}: file not found")
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
    else:
        dtypes = {c.name: _DTYPES[c.kind] for c in schema.columns if c.kind in ("str",)}
        frame = pd.read_csv(path, dtype=dtypes, keep_default_na=False,
                            na_values={c.name: [""] for c in schema.columns if c.kind != "str"})
        for c in schema.columns:
            if c.kind == "str" and c.name in frame:
                frame[c.name] = frame[c.name].astype(object)
            elif c.kind == "float" and c.name in frame:  # a column of whole numbers reads as int
                frame[c.name] = frame[c.name].astype("float64")
    return validate(frame, schema, where=str(path))


def write_stats(stats: dict, path: str | Path) -> Path:
    """Write data/<study>/stats.json after checking the required headline keys are present."""
    missing = [k for k in STATS_KEYS if k not in stats]
    if missing:
        raise ContractError(f"{path}: stats.json lacks key(s) {missing}")
    return write_json(path, stats)
