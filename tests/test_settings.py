"""settings (every environment switch, typed, one reader), io helpers and load_study (issue 21)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pytest

from silentzone import io, settings
from silentzone.paths import CONFIGS, REPO

PKG = REPO / "silentzone"


def test_defaults_are_the_ones_the_code_used(monkeypatch):
    for s in settings.SWITCHES:
        monkeypatch.delenv(s.env, raising=False)
    cur = settings.current()
    assert cur.home == Path.home() / ".cache" / "silentzone"
    assert cur.threads == (os.cpu_count() or 1)
    assert cur.device == "cpu" and cur.lcb_file == ""
    assert (cur.flash_attn, cur.mc_batched, cur.bnb_cpu_packed, cur.no_global_libstdcxx) == (False,) * 4
    assert (cur.compile, cur.triton, cur.overlap) == (True,) * 3
    assert settings.recorded() == {}


def test_values_parse_as_before(monkeypatch):
    env = {"SILENTZONE_HOME": "~/x", "SILENTZONE_THREADS": "3", "SILENTZONE_FLASH_ATTN": "1",
           "SILENTZONE_MC_BATCHED": "yes",  # only "1" turns an off-by-default switch on
           "SILENTZONE_TRITON": "no",        # only "0" turns an on-by-default switch off
           "SILENTZONE_COMPILE": "0", "SILENTZONE_NO_GLOBAL_LIBSTDCXX": "x",
           "SILENTZONE_LCB_FILE": "/data/lcb/release_v6.jsonl", "SILENTZONE_DEVICE": "cuda"}
    cur = settings.current(env)
    assert cur.home == Path.home() / "x" and cur.threads == 3
    assert cur.flash_attn and not cur.mc_batched and cur.triton and not cur.compile
    assert cur.no_global_libstdcxx and cur.device == "cuda"
    # recorded: what differs from the default and may change an output; not the cache or threads;
    # a file by its name only (no host paths in records)
    assert settings.recorded(env) == {"llama_flash_attn": True, "compile": False, "no_global_libstdcxx": True,
                                      "lcb_file": "release_v6.jsonl", "device": "cuda"}
    with pytest.raises(ValueError, match="SILENTZONE_THREADS='many'"):
        settings.current({"SILENTZONE_THREADS": "many"})


def test_provenance_records_non_default_switches_only(monkeypatch):
    from silentzone.provenance import record
    for s in settings.SWITCHES:
        monkeypatch.delenv(s.env, raising=False)
    base = set(record())
    monkeypatch.setenv("SILENTZONE_THREADS", "1")
    assert set(record()) == base  # threads do not change outputs: same shape
    monkeypatch.setenv("SILENTZONE_MC_BATCHED", "1")
    assert record()["mc_batched"] is True and set(record()) == base | {"mc_batched"}


def test_no_module_reads_the_environment_but_settings():
    """Every SILENTZONE_* switch is read through settings (a new one must be declared there)."""
    declared = {s.env for s in settings.SWITCHES}
    for f in PKG.rglob("*.py"):
        text = f.read_text()
        if f.name == "settings.py":
            continue
        assert not re.search(r"environ\.get\(\s*[\"']SILENTZONE_", text), f
        for name in re.findall(r"[\"'](SILENTZONE_[A-Z_]+)[\"']", text):
            assert name in declared, (f, name)


def test_markdown_lists_every_switch():
    md = settings.markdown()
    rows = [ln for ln in md.splitlines() if ln.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == [s.env for s in settings.SWITCHES]
    assert "| `SILENTZONE_FLASH_ATTN` | `0` |" in md


def test_write_json_is_sorted_with_null_for_nan(tmp_path):
    import numpy as np
    p = io.write_json(tmp_path / "a" / "x.json", {"b": float("nan"), "a": [np.int64(2), float("inf")]})
    assert p.read_text() == '{\n  "a": [\n    2,\n    null\n  ],\n  "b": null\n}\n'
    assert not list(tmp_path.rglob("*.tmp"))


def test_atomic_path_leaves_the_old_file_on_failure(tmp_path):
    p = tmp_path / "f.txt"
    io.atomic_write_text(p, "old")
    with pytest.raises(RuntimeError):
        with io.atomic_path(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError
    assert p.read_text() == "old" and sorted(x.name for x in tmp_path.iterdir()) == ["f.txt"]


def test_sha256_helpers_match_hashlib(tmp_path):
    (tmp_path / "d" / "s").mkdir(parents=True)
    (tmp_path / "d" / "b.bin").write_bytes(b"\x00" * 10)
    (tmp_path / "d" / "s" / "a.txt").write_text("hi")
    assert io.sha256_file(tmp_path / "d" / "b.bin") == hashlib.sha256(b"\x00" * 10).hexdigest()
    assert io.sha256_text("hi") == hashlib.sha256(b"hi").hexdigest()
    lines = "".join(f"{n}\0{hashlib.sha256(b).hexdigest()}\n" for n, b in (("b.bin", b"\x00" * 10), ("s/a.txt", b"hi")))
    assert io.sha256_dir(tmp_path / "d") == hashlib.sha256(lines.encode()).hexdigest()


def test_load_study_by_name_or_path(tmp_path):
    from silentzone.config import load, load_study
    by_name = load_study("smollm2", "smoke")
    assert by_name == load(CONFIGS / "smollm2.yaml", "smoke")
    copy = tmp_path / "mine.yaml"
    copy.write_text((CONFIGS / "smollm2.yaml").read_text())
    assert load_study(str(copy), "smoke").quants == by_name.quants
    assert load_study(copy, "smoke").config_hash == by_name.config_hash
