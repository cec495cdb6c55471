"""Existing GGUF files as quants (the paper's cohorts were community quants, not ours).

    files = fetch({"repo": "org/name-GGUF", "file": "name-Q4_K_M.gguf"}, art_dir)  # hub, or
    files = fetch({"path": "/data/name-Q4_K_M.gguf"}, art_dir)                      # a local file
    info = gguf.read_back(files, requested_type(recipe))     # what is really in the file

The artifact directory holds symbolic links to the files (never copies: a 35B quant is 20 GB):
a local file is linked where it lies; a hub file is downloaded once into the huggingface_hub cache
(HF_HOME; `revision` pins a branch, tag or commit) and linked from there. A file split into shards
(`name-00001-of-00003.gguf`, as llama.cpp's gguf-split writes them) is named by its first shard;
every shard is fetched and linked under its own name, so llama.cpp finds the others beside it.
Nothing is downloaded when a config is loaded or a workflow is dry-run: only `fetch` downloads.

The label (`requested_type`) is the recipe's `type`, else the quant type in the file name
(`Qwen3.6-35B-A3B-UD-Q4_K_XL.gguf` -> UD-Q4_K_XL), else the file stem; the manifest's tensor
histogram and bits per weight are read from the file itself, whatever its name says.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from .failures import QuantFailed

SHARD = re.compile(r"^(?P<stem>.+)-(?P<i>\d{5})-of-(?P<n>\d{5})\.gguf$")
# A quant type in a file name: optional UD- (unsloth dynamic), then IQ/Q/TQ types, or float types.
TYPE_IN_NAME = re.compile(r"(?i)(?:^|[-._])((?:UD-)?(?:I?Q\d|TQ\d)(?:_[A-Z0-9]+)*|BF16|F16|F32)(?=[-.]|$)")


class GGUFFileError(QuantFailed):
    """An existing GGUF cannot be found, fetched or verified (one-line message); a QuantFailed (so
    a RuntimeError): the quant's row fails with it."""


def shard_names(name: str) -> list[str]:
    """File names of every shard of a split GGUF named by any of its shards; [name] if not split."""
    m = SHARD.match(Path(name).name)
    if not m:
        return [Path(name).name]
    n = int(m["n"])
    return [f"{m['stem']}-{i:05d}-of-{n:05d}.gguf" for i in range(1, n + 1)]


def requested_type(recipe: dict) -> str:
    if recipe.get("type"):
        return str(recipe["type"])
    name = Path(recipe.get("path") or recipe.get("file") or "").name
    stem = SHARD.sub(r"\g<stem>.gguf", name) if SHARD.match(name) else name
    found = TYPE_IN_NAME.findall(stem[:-5] if stem.endswith(".gguf") else stem)
    return found[-1].upper() if found else Path(stem).stem


def _local(path: str) -> list[tuple[str, Path]]:
    first = Path(path).expanduser()
    files = [first.with_name(n) for n in shard_names(first.name)]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise GGUFFileError(f"GGUF file(s) not found: {', '.join(missing[:3])}")
    return [(f.name, f.resolve()) for f in files]


def _hub(repo: str, file: str, revision: str | None) -> list[tuple[str, Path]]:
    from huggingface_hub import hf_hub_download
    folder = str(Path(file).parent) if "/" in file else ""
    out = []
    for name in shard_names(file):
        rel = f"{folder}/{name}" if folder else name
        try:
            out.append((name, Path(hf_hub_download(repo, rel, revision=revision or None)).resolve()))
        except Exception as e:  # noqa: BLE001 - offline, auth, missing file: one line, the row fails
            msg = (str(e).strip().splitlines() or [""])[0][:160]
            raise GGUFFileError(f"{repo}/{rel}: hub download failed ({type(e).__name__}: {msg}; "
                                f"HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')})") from None
    return out


def fetch(recipe: dict, dest: Path) -> list[Path]:
    """Link the GGUF (every shard) into `dest` under its file name(s) (hub blobs are named by their
    hash; the links keep the names, which llama.cpp needs to find the shards); return the links,
    first shard first."""
    if recipe.get("path"):
        sources = _local(recipe["path"])
    elif recipe.get("repo") and recipe.get("file"):
        sources = _hub(recipe["repo"], recipe["file"], recipe.get("revision"))
    else:
        raise GGUFFileError("gguf_file: needs path, or repo and file")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    links = []
    for name, src in sources:
        link = dest / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(src)
        links.append(link)
    return links


def identity(files: list[Path]) -> tuple[int, str]:
    """(total bytes, sha256) of the fetched files: the file's sha256, or for shards the sha256 of
    'name NUL sha256 LF' over the shards in order."""
    import hashlib
    from ..io import sha256_file
    sizes = sum(Path(f).resolve().stat().st_size for f in files)
    if len(files) == 1:
        return sizes, sha256_file(Path(files[0]).resolve())
    h = hashlib.sha256()
    for f in files:
        h.update(f"{Path(f).name}\0{sha256_file(Path(f).resolve())}\n".encode())
    return sizes, h.hexdigest()
