"""Hostile generated code is contained and recorded as a failure."""

from __future__ import annotations

import os
import uuid

import pytest

from silentzone.bench.sandbox import isolation, run_program


def test_good_and_failing_programs():
    r = run_program("import math, hashlib, re\nassert math.gcd(12, 18) == 6\nprint('ok')")
    assert r.passed and r.status == "passed" and r.stdout.strip() == "ok"
    r = run_program("assert 1 == 2")
    assert not r.passed and r.status == "failed" and "AssertionError" in r.stderr


def test_infinite_loop_times_out():
    r = run_program("while True:\n    pass", timeout=2)
    assert not r.passed and r.status == "timeout" and r.wall_s < 10


def test_fork_bomb_is_refused():
    r = run_program("import os\nwhile True:\n    os.fork()", timeout=5)
    assert not r.passed and r.status == "failed" and "not permitted" in r.stderr


def test_process_limit_holds_without_the_python_guard():
    """The OS layer alone (RLIMIT_NPROC): a bounded burst of 100 forks is stopped early."""
    if os.geteuid() == 0 and not isolation()["drop_to_nobody"]:
        pytest.skip("root without an interpreter usable as nobody: RLIMIT_NPROC does not apply")
    prog = ("import os, time\nfor i in range(100):\n    if os.fork() == 0:\n        time.sleep(2)\n"
            "        os._exit(0)\nprint('forked all')")
    r = run_program(prog, timeout=10, guard=False, max_procs=8)
    assert not r.passed and "forked all" not in r.stdout and "BlockingIOError" in r.stderr


def test_write_outside_the_temp_dir_is_blocked(tmp_path):
    target = tmp_path / f"escape-{uuid.uuid4().hex}.txt"
    r = run_program(f"open({str(target)!r}, 'w').write('x')")
    assert not r.passed and not target.exists() and "not permitted" in r.stderr
    r = run_program("open('inside.txt', 'w').write('x')\nprint(open('inside.txt').read())")
    assert r.passed and r.stdout.strip() == "x"  # its own temp dir is writable


def test_write_outside_blocked_by_os_permissions_without_guard(tmp_path):
    if os.geteuid() != 0 or not isolation()["drop_to_nobody"]:
        pytest.skip("file permissions only separate the child when it runs as another user")
    target = tmp_path / "escape.txt"  # tmp_path is root-owned and not world-writable
    r = run_program(f"open({str(target)!r}, 'w').write('x')", guard=False)
    assert not r.passed and not target.exists() and "Permission denied" in r.stderr


def test_network_attempt_fails():
    prog = "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)"
    r = run_program(prog, timeout=8)
    assert not r.passed and "not permitted" in r.stderr
    if isolation()["netns"]:  # the OS layer alone: an empty network namespace
        r = run_program(prog, timeout=8, guard=False)
        assert not r.passed and ("unreachable" in r.stderr or "OSError" in r.stderr)


def test_memory_limit():
    r = run_program("x = bytearray(3 * 2**30)", memory_mb=512)
    assert not r.passed and "MemoryError" in r.stderr


def test_humaneval_canonical_solution_passes_and_a_wrong_one_fails():
    from silentzone.bench import tasks
    it = tasks.get("humaneval").items(1)[0]
    assert tasks._code_score(it, it.content["canonical_solution"])
    assert not tasks._code_score(it, "    return False\n")
    mb = tasks.get("mbpp").items(1)[0]
    assert tasks._code_score(mb, mb.content["code"])
