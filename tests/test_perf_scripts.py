"""The CPU performance scripts (perf/): the docs/performance.md block rewriter, the interleaved timer and the
result rows, and one script end to end in --quick mode on the tiny random Llamas. No timing is
asserted: speed is measured by `make perf`, never by tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PERF = Path(__file__).resolve().parent.parent / "perf"
sys.path.insert(0, str(PERF))

import _common as C  # noqa: E402
import run_all  # noqa: E402

GPU = "## GPU\n\nOne lent H100 ...\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"


def test_rewrite_block_inserts_cpu_section_above_gpu_and_leaves_gpu_alone(tmp_path):
    p = tmp_path / "performance.md"
    p.write_text("# Benchmarks of the pipeline\n\n" + GPU)
    run_all.rewrite_block(p, "first body")
    text = p.read_text()
    assert text.endswith(GPU)  # the GPU section byte for byte, still last
    assert text.index("## CPU") < text.index(run_all.BEGIN) < text.index("first body") < text.index(
        run_all.END) < text.index("## GPU")
    run_all.rewrite_block(p, "second body")
    again = p.read_text()
    assert "first body" not in again and "second body" in again
    assert again.count("## CPU") == 1 and again.count(run_all.BEGIN) == 1 and again.endswith(GPU)
    # only the block changed: the text outside the markers is identical
    outside = lambda t: t[:t.index(run_all.BEGIN)] + t[t.index(run_all.END):]  # noqa: E731
    assert outside(again) == outside(text)


def test_rewrite_block_refuses_unbalanced_markers(tmp_path):
    p = tmp_path / "performance.md"
    p.write_text(f"## CPU\n{run_all.BEGIN}\nold\n\n" + GPU)
    with pytest.raises(ValueError, match="unbalanced"):
        run_all.rewrite_block(p, "new")
    assert p.read_text() == f"## CPU\n{run_all.BEGIN}\nold\n\n" + GPU


def test_interleave_alternates_order_and_ratio_pairs_neighbours():
    calls = []
    t = C.interleave({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, reps=4, warmup=1)
    # one warm-up round (a b), then a b, b a, a b, b a
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]
    assert len(t["a"]) == len(t["b"]) == 4
    # ratios of neighbours: 2/1, 6/2, 3/3 -> median 2.0 (not median(a)/median(b) = 3/2)
    assert C.ratio({"a": [2.0, 6.0, 3.0], "b": [1.0, 2.0, 3.0]}, "a", "b") == 2.0


def test_rows_pass_or_miss_against_their_targets():
    assert C.row("x", 1.05, 1.10, "<=")["pass"] is True
    assert C.row("x", 1.15, 1.10, "<=")["pass"] is False
    assert C.row("x", 49.0, 50, ">=")["pass"] is False
    assert C.row("x", 3.2, None)["pass"] is None
    assert "MISS" in C.format_row(C.row("x", 1.15, 1.10, "<=")) and "pass" in C.format_row(
        C.row("y", 60.0, 50, ">="))


def test_markdown_lists_every_row_with_its_verdict():
    hdr = {"cpu": "Test CPU", "cores": 2, "threads": 2, "loadavg": [1.0, 1.0, 1.0],
           "versions": {"torch": "0"}, "date": "2026-01-01", "commit": "abc"}
    res = [{"name": "s", "rows": [C.row("r1", 1.2, 1.1, "<="), C.row("r2", 4.0, 3.0, ">=")]}]
    md = run_all.markdown(res, hdr, [])
    assert "| s | r1 | 1.2 | <= 1.1 | **miss** |" in md and "| s | r2 | 4 | >= 3.0 | pass |" in md
    assert "Test CPU" in md and "torch 0" in md


def test_mc_scoring_quick_runs_and_asserts_identical_results(tmp_path):
    """perf/mc_scoring.py --quick on the tiny random Llama: shared == per-choice, a result file."""
    p = subprocess.run([sys.executable, str(PERF / "mc_scoring.py"), "--quick", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads((tmp_path / "mc_scoring.json").read_text())
    (row,) = r["rows"]
    assert row["value"] > 0 and row["op"] == ">=" and "identical decisions" in row["detail"]
    assert r["header"]["cores"] >= 1 and r["header"]["versions"]["torch"]


def test_check_same_fails_on_a_different_decision():
    import mc_scoring
    a = [{"pred": 0, "correct": True, "correct_norm": True, "ll": [-1.0, -2.0]}]
    b = [{"pred": 1, "correct": False, "correct_norm": True, "ll": [-2.0, -1.0]}]
    with pytest.raises(AssertionError, match="item 0"):
        mc_scoring.check_same(a, b)
    c = [{"pred": 0, "correct": True, "correct_norm": True, "ll": [-1.0, -2.01]}]
    with pytest.raises(AssertionError, match="differ by"):
        mc_scoring.check_same(a, c)
    assert mc_scoring.check_same(a, a) == 0.0


def test_report_only_rebuilds_results_json_and_the_block_from_result_files(tmp_path):
    hdr = {"cpu": "Test CPU", "cores": 2, "threads": 1, "loadavg": [0.5, 0.5, 0.5],
           "versions": {"torch": "0"}, "date": "2026-01-01", "commit": "abc"}
    res = {"name": "store_size", "title": "t", "header": hdr, "notes": [],
           "rows": [C.row("exact / llama", 1.0001, 1.0, "<=")]}
    (tmp_path / "store_size.json").write_text(json.dumps(res))
    md = tmp_path / "performance.md"
    md.write_text("# Benchmarks\n\n" + GPU)
    assert run_all.main(["--report-only", "--out", str(tmp_path), "--results-md", str(md)]) == 0
    text = md.read_text()
    assert "| store_size | exact / llama | 1.0001 | <= 1.0 | **miss** |" in text and text.endswith(GPU)
    assert "Test CPU" in text  # the machine of the run that measured, not of the rebuild
    assert json.loads((tmp_path / "results.json").read_text())["results"][0]["name"] == "store_size"


def test_markdown_escapes_pipes_inside_cells():
    hdr = {"cpu": "c", "cores": 2, "threads": 1, "loadavg": [0, 0, 0], "versions": {}, "date": "d", "commit": ""}
    md = run_all.markdown([{"name": "s", "rows": [C.row("|a - b|", 0.5, 1.0, "<=", detail="max |x|")]}], hdr, [])
    line = next(ln for ln in md.splitlines() if ln.startswith("| s |"))
    assert line.replace("\\|", "").count("|") == 7  # 6 cells: 7 separators once the escaped ones are gone


def test_item_scoring_quick_runs_and_reports_both_roles(tmp_path):
    """perf/item_scoring.py --quick on the tiny random Llamas: a ratio per role (reference fills the
    store, the quant reads it), each against the 0.8 target, in a result file."""
    p = subprocess.run([sys.executable, str(PERF / "item_scoring.py"), "--quick", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads((tmp_path / "item_scoring.json").read_text())
    assert [row["metric"].split(",")[1].split()[0] for row in r["rows"]] == ["reference", "quant"]
    for row in r["rows"]:
        # scoring does the bare forward's work and more: the ratio lies in (0, 1] up to timing noise
        assert 0 < row["value"] < 1.5 and row["op"] == ">=" and row["target"] == 0.8
    assert set(r["cases"]) == {"reference", "quant"} and r["device"] == "cpu"


def test_power_resume_puts_back_finished_quants_only(tmp_path):
    """perf/gpu/power_resume.py: a quant's task tables and bench marker come back; the reference,
    quant markers, partial files and logs do not; a file already there is kept."""
    import io
    import tarfile
    base = "studies/smollm2/power/"
    names = {
        "samples/Q8_0/sciq.csv": True, "samples/Q8_0/sciq.csv.provenance.json": True,
        "wf/bench/Q8_0.json": True,
        "samples/Q6_K/piqa.csv": True,  # a finished task of an unfinished quant: reused per task
        "samples/Q6_K/lambada.csv.partial.jsonl": False,
        "samples/reference/sciq.csv": False, "wf/bench/reference.json": False,
        "wf/bench/reference-sciq.json": False, "wf/quants/Q8_0.json": False, "wf/reference.json": False,
        "logs/bench_Q8_0.log": False, "fidelity/Q8_0/fidelity.csv": False,
    }
    src = tmp_path / "r.tar.xz"
    with tarfile.open(src, "w:xz") as tar:
        for n in names:
            data = n.encode()
            info = tarfile.TarInfo(base + n)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    home = tmp_path / "home"
    (home / base / "samples/Q8_0").mkdir(parents=True)
    (home / base / "samples/Q8_0/sciq.csv").write_text("already here")
    p = subprocess.run([sys.executable, str(PERF / "gpu" / "power_resume.py"), str(src), str(home)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "finished quants: Q8_0" in p.stdout and "3 files" in p.stdout  # 4 wanted, one already there
    for n, back in names.items():
        assert (home / base / n).is_file() == (back or n == "samples/Q8_0/sciq.csv"), n
    assert (home / base / "samples/Q8_0/sciq.csv").read_text() == "already here"
    assert (home / base / "samples/Q6_K/piqa.csv").read_text() == "samples/Q6_K/piqa.csv"


def test_bench_scaling_counts_finished_items_and_checks_configs(tmp_path):
    """perf/gpu/bench_scaling.py: a partial file's items are its lines after the header, a torn last
    line not counted; a configuration is gpu:N, gpu-numpy:N or cpu:N; two runs of one quant are
    compared on the items they share."""
    sys.path.insert(0, str(PERF / "gpu"))
    import bench_scaling as B
    f = tmp_path / "piqa.csv.partial.jsonl"
    assert B.rows(f) == 0
    f.write_text('{"bench": 1}\n')
    assert B.rows(f) == 0
    f.write_text('{"bench": 1}\n{"item_id": "a"}\n{"item_id": "b"}\n{"item_id": "c", "mar')
    assert B.rows(f) == 2
    assert B.parse_config("gpu:4") == ("gpu", 4) and B.parse_config("cpu:16") == ("cpu", 16)
    assert B.parse_config("gpu-numpy:1") == ("gpu-numpy", 1)
    for bad in ("gpu", "tpu:2", "cpu:0", "gpu:x", "cpu-numpy:1"):
        with pytest.raises(SystemExit, match="expected gpu:N, gpu-numpy:N or cpu:N"):
            B.parse_config(bad)
    row = dict(correct=True, correct_norm=True, pred=1, margin=0.5, ll_gold=-3.0, kld_mean=0.125,
               kld_max=0.2, n_tokens=40)
    a = {"x": {**row, "item_id": "x"}, "y": {**row, "item_id": "y"}, "z": {**row, "item_id": "z"}}
    b = {"x": {**row, "item_id": "x"}, "y": {**row, "item_id": "y", "kld_mean": 0.25}}
    assert B.same_rows(a, b) == {"common": 2, "equal": 1, "max_abs_diff": 0.125}
    f.write_text('{"bench": 1}\n' + json.dumps(a["x"]) + "\n" + json.dumps(a["y"])[:10])
    assert B.read_rows(f) == {"x": a["x"]}
