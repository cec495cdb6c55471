"""Provenance: every output records config hash, package versions, git commit, seeds and host."""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
import platform
import subprocess
from datetime import datetime, timezone

from .paths import REPO
from .settings import recorded

PACKAGES = (
    "silentzone", "torch", "transformers", "tokenizers", "numpy", "pandas", "scipy", "statsmodels",
    "gguf", "llama_cpp_python", "bitsandbytes", "llmcompressor", "compressed-tensors", "torchao",
    "optimum-quanto", "hqq", "papermill", "snakemake",
)


def versions(packages=PACKAGES) -> dict[str, str]:
    """Installed versions of the packages that can change results ('absent' if not installed)."""
    out = {}
    for p in packages:
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            out[p] = "absent"
    return out


def git_commit() -> str:
    """HEAD commit of the repo, with '+dirty' when tracked files differ; 'unknown' outside git.
    The shipped results (data/, figures/) do not count: `make paper` rewrites them while it runs.
    SILENTZONE_GIT_COMMIT, where set, is recorded instead, marked as declared: a copy of the tree
    whose .git is not the tree's own (the lent GPU machine gets the working tree of each call beside a
    .git of an earlier state, which read as "<older commit>+dirty") passes the commit it came from."""
    from .settings import current
    declared = current().git_commit.strip()
    if declared:
        return f"{declared} (declared)"
    try:
        sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "-uno", "--", ".",
                                ":(exclude)data", ":(exclude)figures"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha or "unknown") + ("+dirty" if sha and dirty else "")


def canonical_json(obj) -> str:
    """JSON with sorted keys and no whitespace: the input of every hash we compute."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def hash_obj(obj, n: int = 16) -> str:
    """sha256 of canonical JSON, first n hex digits."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:n]


def record(config_hash: str = "", seeds: dict | None = None, **extra) -> dict:
    """A provenance record to store beside (or inside) an output."""
    return {
        "config_hash": config_hash,
        "seeds": seeds or {},
        "git_commit": git_commit(),
        "versions": versions(),
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        # environment switches that differ from their defaults (settings.recorded: e.g.
        # llama_flash_attn, mc_batched move logits); none when all are default, so default records
        # keep their shape
        **recorded(),
        **extra,
    }
