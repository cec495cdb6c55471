"""The llama.cpp command-line tools, built by scripts/build_llama.sh from the same source tree as the
installed llama-cpp-python (so bindings and tools are one version), cached under
$SILENTZONE_HOME/build/llama-cpp-python-<version>-<pytag>/."""

from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
import sys
from pathlib import Path

from .paths import REPO, build_root

TOOLS = ("llama-quantize", "llama-imatrix", "llama-perplexity")


def build_dir() -> Path:
    ver = md.version("llama_cpp_python")
    tag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    return build_root() / f"llama-cpp-python-{ver}-{tag}"


def tool_dir() -> Path:
    """Folder holding the tools; builds them (minutes, once) if missing."""
    d = build_dir() / "bin"
    if not all((d / t).is_file() for t in TOOLS):
        subprocess.run([str(REPO / "scripts" / "build_llama.sh"), sys.executable,
                        md.version("llama_cpp_python")], check=True)
    return d


def tool(name: str) -> str:
    if name not in TOOLS:
        raise ValueError(f"unknown llama.cpp tool {name!r} (have {TOOLS})")
    return str(tool_dir() / name)


def source_tree() -> Path:
    """The vendored llama.cpp tree (convert_hf_to_gguf.py lives here)."""
    return build_dir() / "src" / "vendor" / "llama.cpp"


def run(name: str, *args: str, threads: int | None = None, log: Path | None = None,
        timeout: float | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run a llama.cpp tool (in `cwd` when given); raise RuntimeError with the tail of its output
    on failure."""
    cmd = [tool(name), *args]
    if threads:
        cmd += ["-t", str(threads)]
    env = {**os.environ, "LLAMA_ARG_THREADS": str(threads or os.cpu_count())}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd)
    if log:
        log.write_text(p.stdout + "\n--- stderr ---\n" + p.stderr)
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{name} failed (exit {p.returncode}): {' | '.join(tail)}")
    return p
