"""Result contracts: writers validate, write atomically with provenance; readers round-trip."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis.contracts import FIDELITY, QUANTS, SAMPLES, ContractError, validate
from silentzone import provenance
from silentzone.tables import read_table, write_stats, write_table


def fidelity_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "study": ["s", "s"], "quant_id": ["Q8_0", "Q4_0"], "corpus": ["wiki", "wiki"],
        "ctx": [512, 512], "metric": ["kld_mean", "kld_mean"], "value": [0.005, np.nan],
        "n_tokens": [4096, 4096], "tokens_hash": ["ab12", "ab12"]})


def samples_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "study": "s", "model": ["reference", "Q8_0"], "task": "sciq", "item_id": ["1", "1"],
        "item_hash": "h", "prompt_hash": "p", "correct": [True, False], "margin": [1.5, -0.25],
        "kld_mean": [0.0, 0.01], "kld_max": [0.0, 0.2]})


def test_round_trip_csv_and_provenance(tmp_path):
    prov = provenance.record(config_hash="c0ffee", seeds={"global": 1})
    p = write_table(fidelity_frame(), FIDELITY, tmp_path / "fidelity.csv", prov)
    back = read_table(p, FIDELITY)
    pd.testing.assert_frame_equal(back, fidelity_frame(), check_dtype=False)
    meta = json.loads((tmp_path / "fidelity.csv.provenance.json").read_text())
    assert meta["schema"] == "fidelity" and meta["config_hash"] == "c0ffee"
    assert meta["seeds"] == {"global": 1} and meta["versions"]["torch"].startswith("2.13.0")
    assert {"git_commit", "host", "created_utc"} <= set(meta)
    assert not list(tmp_path.glob("*.tmp"))


def test_samples_round_trip_keeps_bools(tmp_path):
    p = write_table(samples_frame(), SAMPLES, tmp_path / "s.csv", {})
    back = read_table(p, SAMPLES)
    assert back["correct"].tolist() == [True, False] and back["item_id"].tolist() == ["1", "1"]


@pytest.mark.parametrize("mutate,msg", [
    (lambda f: f.drop(columns="value"), r"fidelity table lacks column\(s\) \['value'\]"),
    (lambda f: f.assign(ctx=["512", "512"]), "fidelity.ctx must be int"),
    (lambda f: f.assign(quant_id=[None, "Q4_0"]), "fidelity.quant_id has 1 null"),
    (lambda f: f.assign(quant_id=["Q8_0", "Q8_0"]), "key .* not unique"),
])
def test_invalid_frames_are_refused(mutate, msg, tmp_path):
    with pytest.raises(ContractError, match=msg):
        write_table(mutate(fidelity_frame()), FIDELITY, tmp_path / "bad.csv", {})
    assert not (tmp_path / "bad.csv").exists()


def test_every_schema_documents_every_column():
    for schema in (QUANTS, FIDELITY, SAMPLES):
        assert all(c.doc for c in schema.columns)
        assert set(schema.key) <= set(schema.names)
        # one table row per column, plus the header row and the |---| rule
        assert schema.markdown().count("\n|") == len(schema.columns) + 2


def test_stats_json_requires_headline_keys(tmp_path):
    with pytest.raises(ContractError, match="lacks key"):
        write_stats({"study": "s"}, tmp_path / "stats.json")


def test_provenance_hash_is_canonical():
    assert provenance.hash_obj({"a": 1, "b": [1, 2]}) == provenance.hash_obj({"b": [1, 2], "a": 1})
    assert provenance.hash_obj({"a": 1}) != provenance.hash_obj({"a": 2})
    assert validate(samples_frame(), SAMPLES) is not None


def test_docs_show_the_current_contracts():
    """docs/contracts.md's schema tables are the code's (regenerate with `silentzone schema`)."""
    from silentzone.paths import REPO
    page = (REPO / "docs" / "contracts.md").read_text()
    for schema in (QUANTS, FIDELITY, SAMPLES):
        assert schema.markdown() in page, f"docs/contracts.md out of date for {schema.name}"


def test_float_column_of_whole_numbers_reads_back_as_float(tmp_path):
    """The reference's kld_mean is all 0: CSV stores '0', which must come back as float."""
    f = samples_frame().assign(kld_mean=[0.0, 0.0], kld_max=[0.0, 0.0], margin=[1.0, 2.0])
    back = read_table(write_table(f, SAMPLES, tmp_path / "s.csv", {}), SAMPLES)
    assert back["kld_mean"].dtype == "float64" and back["kld_mean"].tolist() == [0.0, 0.0]


def test_provenance_records_flash_attention_only_when_it_is_on(monkeypatch):
    """SILENTZONE_FLASH_ATTN=1 moves llama.cpp's logits: an output made with it says so."""
    from silentzone.provenance import record
    monkeypatch.delenv("SILENTZONE_FLASH_ATTN", raising=False)
    assert "llama_flash_attn" not in record(config_hash="x")
    monkeypatch.setenv("SILENTZONE_FLASH_ATTN", "1")
    assert record(config_hash="x")["llama_flash_attn"] is True


def test_git_commit_declared_by_the_environment(monkeypatch):
    """A copy of the tree whose .git is stale (the lent GPU machine) records the commit it was given,
    marked as declared; without the variable the repository's own HEAD is read."""
    import subprocess

    from silentzone.paths import REPO
    from silentzone.provenance import git_commit
    monkeypatch.setenv("SILENTZONE_GIT_COMMIT", "0123abc")
    assert git_commit() == "0123abc (declared)"
    monkeypatch.delenv("SILENTZONE_GIT_COMMIT")
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert git_commit().split("+")[0] == head
