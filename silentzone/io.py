"""Small file helpers every stage uses: atomic writes, one JSON writer, sha256 of bytes, files and folders.

    atomic_write_text(path, text)        temporary sibling, then os.replace: readers see the old file
                                         or the whole new one, never half of it
    with atomic_path(path) as tmp: ...   the same for writers that need a path (np.save, to_csv, ...)
    write_json(path, obj)                sorted keys, indent 2, trailing newline, NaN/inf -> null
    sha256_file(p), sha256_dir(d), sha256_text(s)

Light: imports only the standard library (numpy scalars are turned into Python numbers duck-typed).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from contextlib import contextmanager
from pathlib import Path


def _tmp_of(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp"):
    """Yield a temporary sibling of `path` (<name><suffix>) to write; renamed onto `path` when the
    block ends without an exception (removed otherwise). Creates the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_of(path, suffix)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def atomic_write_text(path: str | Path, text: str, suffix: str = ".tmp", encoding: str | None = None) -> Path:
    """Write `text` to `path` atomically (see atomic_path)."""
    with atomic_path(path, suffix) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(path)


def finite(obj):
    """obj with non-finite floats replaced by None and numpy scalars by Python ones (valid JSON);
    dict keys become strings."""
    if isinstance(obj, dict):
        return {str(k): finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if type(obj).__module__ == "numpy" and getattr(obj, "ndim", None) == 0:  # a numpy scalar
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def json_text(obj, default=str) -> str:
    """The package's JSON text: finite(obj), sorted keys, indent 2, one trailing newline."""
    return json.dumps(finite(obj), indent=2, sort_keys=True, allow_nan=False, default=default) + "\n"


def write_json(path: str | Path, obj, suffix: str = ".tmp", default=str) -> Path:
    """Write json_text(obj) to `path` atomically; returns the path."""
    return atomic_write_text(path, json_text(obj, default), suffix)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def sha256_dir(d: str | Path) -> str:
    """sha256 over 'relative path NUL sha256(file) LF' of every file, sorted by path."""
    d = Path(d)
    h = hashlib.sha256()
    for f in sorted(p for p in d.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(d).as_posix()}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()
