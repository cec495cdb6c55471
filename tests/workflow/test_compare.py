"""compare-results: a rerun matches within the stated tolerances; real differences are found, and those
of non-bit-reproducible quants (GPTQ/AWQ) are reported without failing."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from silentzone.workflow.compare import TOLERANCES, CompareError, compare_study
from silentzone.workflow.compare import main as compare_main
from tests.analysis.conftest import _make_study


@pytest.fixture()
def shipped(tmp_path):
    samples, fidelity, quants = _make_study(n_quants=6, n_items=20)
    quants["deterministic"] = quants["quant_id"] != "q02"  # q02 plays a GPTQ quant
    d = tmp_path / "old" / "toy"
    d.mkdir(parents=True)
    samples.to_csv(d / "samples.csv", index=False)
    fidelity.to_csv(d / "fidelity.csv", index=False)
    quants.to_csv(d / "quants.csv", index=False)
    (d / "stats.json").write_text(json.dumps({"rho_full": -0.5, "n_quants": 5}))
    new = tmp_path / "new" / "toy"
    shutil.copytree(d, new)
    return tmp_path / "old", new


def levels(rows):
    return [lvl for lvl, _, _ in rows]


def test_identical_copies_match(shipped):
    old, new = shipped
    rows = compare_study("toy", str(old), new)
    assert "differs" not in levels(rows) and "note" not in levels(rows)


def test_a_fidelity_change_beyond_tolerance_differs_and_within_it_matches(shipped):
    old, new = shipped
    f = pd.read_csv(new / "fidelity.csv")
    i = f.index[(f["quant_id"] == "q01") & (f["metric"] == "kld_mean")][0]
    f.loc[i, "value"] *= 1 + TOLERANCES["fidelity_rel"] / 10
    f.to_csv(new / "fidelity.csv", index=False)
    assert "differs" not in levels(compare_study("toy", str(old), new))
    f.loc[i, "value"] *= 1 + 10 * TOLERANCES["fidelity_rel"]
    f.to_csv(new / "fidelity.csv", index=False)
    rows = compare_study("toy", str(old), new)
    differs = [m for lvl, w, m in rows if lvl == "differs"]
    assert len(differs) == 1 and differs[0].startswith(f"q01: 1 values beyond rel {TOLERANCES['fidelity_rel']}")


def test_flipped_answers_of_a_nondeterministic_quant_are_notes_of_others_failures(shipped):
    old, new = shipped
    s = pd.read_csv(new / "samples.csv")
    for q in ("q02", "q03"):
        i = s.index[(s["model"] == q)][0]
        s.loc[i, "correct"] = not s.loc[i, "correct"]
    s.to_csv(new / "samples.csv", index=False)
    rows = [(lvl, m) for lvl, w, m in compare_study("toy", str(old), new) if w.endswith("samples.csv")]
    assert ("note", "q02: 1 answers and 0 margins differ") in rows
    assert ("differs", "q03: 1 answers and 0 margins differ") in rows


def test_headline_numbers_must_be_equal(shipped):
    """Equal tables, other headline numbers: the analysis changed. The cohort's non-deterministic
    quant (q02) does not excuse it, since none of its rows moved."""
    old, new = shipped
    (new / "stats.json").write_text(json.dumps({"rho_full": -0.49, "n_quants": 5}))
    rows = [(lvl, m) for lvl, w, m in compare_study("toy", str(old), new) if w.endswith("stats.json")]
    assert ("differs", "rho_full: -0.5 -> -0.49 (the tables are equal: the analysis changed)") in rows
    assert not any("q02" in m or "non-deterministic" in m for _, m in rows)


def test_headline_numbers_that_move_with_a_nondeterministic_quant_are_a_note_naming_it(shipped):
    old, new = shipped
    s = pd.read_csv(new / "samples.csv")
    i = s.index[s["model"] == "q02"][0]
    s.loc[i, "correct"] = not s.loc[i, "correct"]
    s.to_csv(new / "samples.csv", index=False)
    (new / "stats.json").write_text(json.dumps({"rho_full": -0.49, "n_quants": 5}))
    rows = [(lvl, m) for lvl, w, m in compare_study("toy", str(old), new) if w.endswith("stats.json")]
    assert rows == [("note", "rho_full: -0.5 -> -0.49 (rows of non-deterministic quants differ: ['q02'])"),
                    ("ok", "headline numbers compared")]


def test_a_study_the_other_copy_lacks_differs(shipped, tmp_path):
    """Nothing compared is not a match (the other copy exists, but has no tables of this study)."""
    _, new = shipped
    (tmp_path / "empty").mkdir()
    rows = compare_study("toy", str(tmp_path / "empty"), new)
    assert levels(rows) == ["differs"] and "nothing to compare" in rows[0][2]


def test_against_a_folder_that_does_not_exist_is_one_line_error(shipped, tmp_path):
    _, new = shipped
    with pytest.raises(CompareError) as e:
        compare_study("toy", str(tmp_path / "nothing"), new)
    assert str(e.value) == (f"compare-results: --against {tmp_path / 'nothing'}: neither a directory nor a "
                            "git revision of this repository")


def test_a_table_one_copy_lacks_differs(shipped):
    old, new = shipped
    (old / "toy" / "fidelity.csv").unlink()
    (new / "stats.json").unlink()
    rows = [(lvl, w, m) for lvl, w, m in compare_study("toy", str(old), new) if lvl == "differs"]
    assert rows == [("differs", "toy/fidelity.csv", f"not in {old}"),
                    ("differs", "toy/stats.json", f"not in {new}")]


def test_main_fails_before_printing_when_a_study_has_no_results(shipped, capsys):
    old, new = shipped
    with pytest.raises(CompareError, match=r"no results of study 'nosuchstudy' .*studies with results: toy\)"):
        compare_main(["toy", "nosuchstudy"], str(old), results=new.parent)
    assert capsys.readouterr().out == ""


def test_main_prints_match_only_when_something_was_compared(shipped, tmp_path, capsys):
    old, new = shipped
    assert compare_main(["toy"], str(old), results=new.parent) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"compare-results against {old}: MATCH")
    (tmp_path / "empty").mkdir()
    assert compare_main(["toy"], str(tmp_path / "empty"), results=new.parent) == 1
    out = capsys.readouterr().out
    assert "MATCH" not in out and "1 difference(s)" in out


def test_headline_numbers_fail_when_a_deterministic_input_differs(shipped):
    """Non-deterministic quants excuse a headline change only when nothing deterministic moved."""
    old, new = shipped
    f = pd.read_csv(new / "fidelity.csv")
    f.loc[(f["quant_id"] == "q01") & (f["metric"] == "kld_mean"), "value"] *= 1.5
    f.to_csv(new / "fidelity.csv", index=False)
    (new / "stats.json").write_text(json.dumps({"rho_full": -0.49, "n_quants": 5}))
    rows = compare_study("toy", str(old), new)
    assert any(lvl == "differs" and w.endswith("stats.json") and "rho_full" in m for lvl, w, m in rows)


def test_an_imatrix_quant_whose_file_bytes_differ_is_a_note(shipped):
    """llama.cpp writes the imatrix's absolute path into the GGUF: the file's bytes and sha256 move
    with $SILENTZONE_HOME (a note); its status or bits per weight may not (a failure)."""
    old, new = shipped
    q = pd.read_csv(new / "quants.csv")
    q.loc[q["quant_id"] == "q03", "recipe"] = '{"method":"gguf","type":"Q4_K_M","imatrix":"wiki"}'
    q.to_csv(new / "quants.csv", index=False)
    q.to_csv(old / "toy" / "quants.csv", index=False)
    q.loc[q["quant_id"] == "q03", ["sha256", "bytes"]] = ["f" * 64, 12345]
    q.loc[q["quant_id"] == "q04", "sha256"] = "e" * 64
    q.to_csv(new / "quants.csv", index=False)
    rows = [(lvl, m) for lvl, w, m in compare_study("toy", str(old), new) if w.endswith("quants.csv")]
    assert {m.split(":")[0] for lvl, m in rows if lvl == "note"} == {"q03.bytes", "q03.sha256"}
    assert [m.split(":")[0] for lvl, m in rows if lvl == "differs"] == ["q04.sha256"]


def test_figures_are_compared_byte_for_byte_and_only_reported(shipped, tmp_path):
    old, new = shipped
    fo, fn = tmp_path / "fig-old", tmp_path / "fig-new"
    for d in (fo, fn):
        d.mkdir()
        (d / "a.png").write_bytes(b"\x89PNG same")
        (d / "b.pdf").write_bytes(b"%PDF same")
        (d / "a.provenance.json").write_text("{}")   # not a figure: not compared
    rows = compare_study("toy", str(old), new, figures=fn, figures_against=fo)
    assert ("ok", "figures/toy/", "2 of 2 figures byte-identical") in rows
    assert "differs" not in levels(rows)
    (fn / "b.pdf").write_bytes(b"%PDF other")
    (fn / "c.png").write_bytes(b"\x89PNG new")
    rows = compare_study("toy", str(old), new, figures=fn, figures_against=fo)
    assert ("ok", "figures/toy/", "1 of 3 figures byte-identical") in rows
    assert ("note", "figures/toy/", "differ or not in the other copy: b.pdf, c.png") in rows
    assert "differs" not in levels(rows)


def test_shipped_figures_equal_themselves_at_head():
    """Against git HEAD, the repository's own committed figures are byte-identical (the git path)."""
    from silentzone.workflow.compare import compare_figures
    rows = compare_figures("smollm2", "HEAD")
    assert rows[0][0] == "ok" and rows[0][2].split(" of ")[0] == rows[0][2].split(" of ")[1].split()[0]
    assert len(rows) == 1, rows
