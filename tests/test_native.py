"""silentzone/_native.py: one libstdc++ for the process, next to libraries that link it statically.

The lent GPU image's g++ links libstdc++ statically into every llama.cpp library, each exporting
its copy; next to torch (shared libstdc++.so.6) std::ostream formatting then uses the wrong locale
facets (the llama.cpp load crashed there). Reproduced here with two small libraries built the same
way: libA (static libstdc++, exported) and libB (its std:: references bound to libA's copy, as
libllama's are bound to libggml-cuda's). Each order is run in a fresh process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

A = r"""
#include <sstream>
extern "C" int a_fmt(long v) { std::ostringstream s; s << v << 1.5; return (int)s.str().size(); }
"""
B = r"""
#include <sstream>
extern "C" int a_fmt(long v);
extern "C" int b_fmt(long v) { std::ostringstream s; s << v; return (int)s.str().size() + a_fmt(v); }
"""


@pytest.fixture(scope="module")
def libs(tmp_path_factory):
    gxx = shutil.which("g++")
    if not gxx or not sys.platform.startswith("linux"):
        pytest.skip("needs g++ on Linux")
    d = tmp_path_factory.mktemp("stdcxx")
    (d / "a.cpp").write_text(A)
    (d / "b.cpp").write_text(B)
    for cmd in ([gxx, "-O1", "-shared", "-fPIC", "-static-libstdc++", "a.cpp", "-o", "libA.so"],
                [gxx, "-O1", "-shared", "-fPIC", "-static-libstdc++", "b.cpp", "-L.", "-lA",
                 f"-Wl,-rpath,{d}", "-o", "libB.so"]):
        p = subprocess.run(cmd, cwd=d, capture_output=True, text=True)
        if p.returncode != 0:
            pytest.skip(f"cannot link with a static libstdc++: {p.stderr.strip()[-200:]}")
    return d / "libB.so"


def _run(code: str, fix: bool) -> str:
    env = {**os.environ}
    env.pop("SILENTZONE_NO_GLOBAL_LIBSTDCXX", None)
    if not fix:
        env["SILENTZONE_NO_GLOBAL_LIBSTDCXX"] = "1"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       cwd=Path(__file__).resolve().parents[1], timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout.split()


TORCH_FIRST = """
import ctypes, silentzone, torch
torch.ones(3).sum()
print(ctypes.CDLL({lib!r}).b_fmt(12345))
"""

LIB_FIRST = """
import ctypes, silentzone
b = ctypes.CDLL({lib!r})
r = b.b_fmt(12345)
import torch
print(r, b.b_fmt(12345), str(torch.ops.aten.add.Tensor._schema))
"""


def test_torch_first(libs):
    pytest.importorskip("torch")
    assert _run(TORCH_FIRST.format(lib=str(libs)), fix=True) == ["13"]  # "12345" + "123451.5"


def test_library_first(libs):
    pytest.importorskip("torch")
    out = _run(LIB_FIRST.format(lib=str(libs)), fix=True)
    assert out[:2] == ["13", "13"]
    assert "Scalar alpha=1" in " ".join(out)  # torch's own formatting intact


def test_without_the_fix_formatting_breaks(libs):
    """The failure the fix removes (here a wrong result; with llama.cpp, a SIGSEGV)."""
    pytest.importorskip("torch")
    assert _run(TORCH_FIRST.format(lib=str(libs)), fix=False) != ["13"]
