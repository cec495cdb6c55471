"""The CPU performance scripts (perf/): the docs/performance.md block rewriter, the interleaved timer and the
result rows, and one script end to end in --quick mode on the tiny random Llamas. No timing is
asserted: speed is measured by `make perf`, never by tests."""

from __future__ import annotations

import json
import re
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
        "wf/bench/Q6_K-piqa.json": True,  # a (quant, task) marker (power_run.py --per-task): back, not listed
        "samples/Q6_K/piqa.csv": True,  # a finished task of an unfinished quant: reused per task
        "samples/Q6_K/lambada.csv.partial.jsonl": False,
        "samples/reference/sciq.csv": False, "wf/bench/reference.json": False,
        "wf/bench/reference-sciq.json": False, "wf/quants/Q8_0.json": False, "wf/reference.json": False,
        "logs/bench_Q8_0.log": False, "fidelity/Q8_0/fidelity.csv": False,
    }
    src = tmp_path / "r.tar.xz"
    with tarfile.open(src, "w:xz") as tar:
        for n in names:
            data = (b'{"model": "Q6_K", "tasks": ["piqa"]}' if n.endswith("-piqa.json") else n.encode())
            info = tarfile.TarInfo(base + n)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    home = tmp_path / "home"
    (home / base / "samples/Q8_0").mkdir(parents=True)
    (home / base / "samples/Q8_0/sciq.csv").write_text("already here")
    p = subprocess.run([sys.executable, str(PERF / "gpu" / "power_resume.py"), str(src), str(home)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.rstrip().endswith("finished quants: Q8_0") and "4 files" in p.stdout  # 5 wanted, one there
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


def _wheels():
    sys.path.insert(0, str(PERF / "gpu"))
    import power_wheels as W
    return W


def test_wheels_list_is_pinned_to_this_venv_and_ordered_by_dependency():
    """perf/gpu/wheels.txt: every line name==version with a comment, at this .venv's version; nothing
    the lent machine already has; a listed package comes after the listed packages it requires (so
    every prefix of the carries installs complete packages); bitsandbytes, the big one, last."""
    from importlib.metadata import requires, version
    from packaging.requirements import Requirement
    W = _wheels()
    rows = W.parse()
    names = [W.normalize(n) for n, _, _ in rows]
    assert len(rows) >= 10 and names[-1] == "bitsandbytes"
    # the packages the project pins (requirements.txt, setup_env.sh) are listed at their pinned version;
    # the others are transitive (pip picks them when .venv is made, so a later venv may hold newer
    # ones): they must satisfy what the pinned packages of the list require of them
    pinned = {}
    for f in ("requirements.txt", "requirements-nodeps.txt", "scripts/setup_env.sh"):
        for m in re.finditer(r"([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.+\-]+)", (PERF.parent / f).read_text()):
            pinned[W.normalize(m.group(1))] = m.group(2)
    listed = {W.normalize(n): v for n, v, _ in rows}
    for name, ver, comment in rows:
        assert comment
        if W.normalize(name) not in pinned:
            continue
        assert pinned[W.normalize(name)] == ver, f"{name}: listed {ver}, pinned {pinned[W.normalize(name)]}"
        assert version(name) == ver, f"{name}: listed {ver}, .venv has {version(name)}"
        for r in map(Requirement, requires(name) or []):
            dep = W.normalize(r.name)
            if dep in listed and (r.marker is None or r.marker.evaluate({"extra": ""})):
                assert r.specifier.contains(listed[dep], prereleases=True), f"{name} needs {r}, listed {listed[dep]}"
    assert {"hqq", "llmcompressor", "bitsandbytes", "torchao", "optimum-quanto"} <= set(pinned)
    device = {"torch", "transformers", "accelerate", "numpy", "pandas", "pyarrow", "scipy", "statsmodels",
              "pyyaml", "tqdm", "jinja2", "safetensors", "sentencepiece", "tokenizers", "huggingface-hub"}
    assert not device & set(names)
    for i, (name, _, _) in enumerate(rows):
        for r in map(Requirement, requires(name) or []):
            if r.marker is not None and not r.marker.evaluate({"extra": ""}):
                continue
            dep = W.normalize(r.name)
            if dep in names:
                assert names.index(dep) < i, f"{name} needs {r.name}, listed after it"
    # every method's imports are named for the lent machine's check
    assert {"gptq", "awq", "bnb", "torchao", "quanto", "hqq"} <= set(W.METHODS)


def test_wheels_parse_refuses_unpinned_uncommented_and_repeated_lines(tmp_path):
    W = _wheels()
    f = tmp_path / "w.txt"
    f.write_text("# header\n\nfoo==1.2.post3   # gptq: why\nBar_baz==0.1  # hqq\n")
    assert W.parse(f) == [("foo", "1.2.post3", "gptq: why"), ("Bar_baz", "0.1", "hqq")]
    for bad, msg in (("foo>=1.0  # x\n", "expected name==version"), ("foo  # x\n", "expected name==version"),
                     ("foo==1.0\n", "say which method"), ("foo==1.0 # a\nFoo==2.0 # b\n", "listed twice")):
        f.write_text(bad)
        with pytest.raises(ValueError, match=msg):
            W.parse(f)


def test_wheels_plan_fills_carries_in_list_order():
    W = _wheels()
    assert W.plan([("a", 3), ("b", 4), ("c", 2), ("d", 9)], room=10) == [["a", "b", "c"], ["d"]]
    # in order, never reordered to fill a gap: e after the carry that d opened
    assert W.plan([("a", 6), ("d", 5), ("e", 4)], room=10) == [["a"], ["d", "e"]]
    assert W.plan([], room=10) == []
    # a file over the room goes in ceil(bytes / room) parts of 6 and 5 bytes (by hand), each placed
    # like a file: the first fills the current carry's gap, the second opens the next
    assert W.plan([("a", 3), ("big", 11)], room=10) == [["a", "big.part1of2"], ["big.part2of2"]]
    assert W.plan([("big", 21), ("z", 1)], room=10) == [["big.part1of3"], ["big.part2of3"], ["big.part3of3", "z"]]
    assert [W.part_range(11, i, 2) for i in (1, 2)] == [(0, 5), (5, 11)]


def test_wheels_parts_join_back_to_the_same_bytes(tmp_path):
    """carry() writes a wheel over the room as parts; join() there puts them together byte for byte
    once every part has come (a part alone waits), and removes the parts."""
    import random
    W = _wheels()
    data = random.Random(7).randbytes(1000)
    src = tmp_path / "dl" / "big-1.0-py3-none-any.whl"
    src.parent.mkdir()
    src.write_bytes(data)
    parts = tmp_path / "parts"
    parts.mkdir()
    k = 3
    for i in range(1, k + 1):
        lo, hi = W.part_range(len(data), i, k)
        (parts / f"{src.name}.part{i}of{k}").write_bytes(data[lo:hi])
    (parts / f"{src.name}.part3of3").rename(tmp_path / "later")
    assert W.join(parts) == [] and len(list(parts.iterdir())) == 2
    (tmp_path / "later").rename(parts / f"{src.name}.part3of3")
    assert W.join(parts) == [parts / src.name]
    assert (parts / src.name).read_bytes() == data and [p.name for p in parts.iterdir()] == [src.name]


def test_wheels_carry_spreads_downloads_over_carries_under_64_mib(tmp_path, monkeypatch):
    """carry(): the downloaded wheels land in .pw<first>/wheels, .pw<first+1>/wheels, ... in list
    order, each carry under 64 MiB with the tree (download is replaced: no network)."""
    W = _wheels()
    listing = tmp_path / "w.txt"
    listing.write_text("small==1.0  # x\nmid==2.0  # y\nbig==3.0  # z\n")
    sizes = {"small": 5 << 20, "mid": 20 << 20, "big": 40 << 20}

    def fake_download(name, version, dest):
        f = dest / f"{name}-{version}-py3-none-any.whl"
        with open(f, "wb") as fh:
            fh.truncate(sizes[name])
        return f
    monkeypatch.setattr(W, "download", fake_download)
    tree = 14 << 20
    dirs = W.carry(4, tree, root=tmp_path, dest=tmp_path / "dl", listing=listing)
    assert [d.name for d in dirs] == [".pw4", ".pw5"]
    assert sorted(p.name for p in (tmp_path / ".pw4/wheels").iterdir()) == [
        "mid-2.0-py3-none-any.whl", "small-1.0-py3-none-any.whl"]
    assert [p.name for p in (tmp_path / ".pw5/wheels").iterdir()] == ["big-3.0-py3-none-any.whl"]
    for d in dirs:
        assert sum(p.stat().st_size for p in (d / "wheels").iterdir()) + tree < 64 << 20
    import shutil
    # a tree of 24 MiB leaves 39.5 MiB a carry: big (40 MiB) goes in two parts of 20 MiB, the first
    # beside small and mid (45 MiB: over the room, so it opens .pw5), and they add up to its bytes
    for d in dirs:
        shutil.rmtree(d)
    dirs = W.carry(4, 24 << 20, root=tmp_path, dest=tmp_path / "dl", listing=listing)
    names = [sorted(p.name for p in (d / "wheels").iterdir()) for d in dirs]
    assert names == [["mid-2.0-py3-none-any.whl", "small-1.0-py3-none-any.whl"],
                     ["big-3.0-py3-none-any.whl.part1of2"], ["big-3.0-py3-none-any.whl.part2of2"]]
    assert sum((d / "wheels" / n).stat().st_size for d, ns in zip(dirs[1:], names[1:]) for n in ns) == 40 << 20
    for d in dirs:
        assert sum(p.stat().st_size for p in (d / "wheels").iterdir()) + (24 << 20) < 64 << 20


def _fake_wheel(folder: Path, name: str, value: str) -> Path:
    import zipfile
    folder.mkdir(parents=True, exist_ok=True)
    whl = folder / f"{name}-1.0-py3-none-any.whl"
    di = f"{name}-1.0.dist-info"
    files = {f"{name}/__init__.py": f"VALUE = {value!r}\n",
             f"{di}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
             f"{di}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{di}/RECORD"] = "".join(f"{k},,\n" for k in files) + f"{di}/RECORD,,\n"
    with zipfile.ZipFile(whl, "w") as z:
        for k, v in files.items():
            z.writestr(k, v)
    return whl


def test_power_run_wheels_phase_installs_offline_and_later_calls_add(tmp_path):
    """power_run.sh wheels: each call's .pw*/wheels go into $PK (PWPKGS here); a second call with other
    wheels adds to them, the same wheels sent again replace themselves; then one line per method."""
    import os
    import shutil
    repo = PERF.parent
    work = tmp_path / "checkout"
    (work / "perf").mkdir(parents=True)
    (work / "perf" / "gpu").symlink_to(PERF / "gpu")
    pk = tmp_path / "pk"
    env = {**os.environ, "PWPKGS": str(pk), "SILENTZONE_HOME": str(tmp_path / "home"),
           "OUT": str(tmp_path / "out"), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}

    def run():
        return subprocess.run(["bash", str(repo / "perf/gpu/power_run.sh"), "wheels"], cwd=work, env=env,
                              capture_output=True, text=True, timeout=600)
    p = run()
    assert p.returncode == 3 and "no .pw*/wheels/*.whl" in p.stdout
    _fake_wheel(work / ".pw4" / "wheels", "szfake_a", "a")
    p = run()
    lines = p.stdout.splitlines()
    assert "installed into" in p.stdout and "szfake_a-1.0" in p.stdout, p.stdout + p.stderr
    methods = list(_wheels().METHODS)
    assert [ln.split(":")[0] for ln in lines if ln.split(":")[0] in methods] == methods
    shutil.rmtree(work / ".pw4")
    _fake_wheel(work / ".pw5" / "wheels", "szfake_b", "b")
    for _ in range(2):  # a new carry, then the same one again
        p = run()
        assert "szfake_b-1.0" in p.stdout, p.stdout + p.stderr
        assert (pk / "szfake_a" / "__init__.py").read_text() == "VALUE = 'a'\n"
        assert (pk / "szfake_b" / "__init__.py").read_text() == "VALUE = 'b'\n"
    assert (pk / "szfake_a-1.0.dist-info").is_dir() and (pk / "szfake_b-1.0.dist-info").is_dir()
    # a wheel in two parts over two calls: the first call installs nothing of it and says it waits
    shutil.rmtree(work / ".pw5")
    whl = _fake_wheel(tmp_path / "split", "szfake_c", "c")
    data = whl.read_bytes()
    for i in (1, 2):
        (work / f".pw{5 + i}" / "wheels").mkdir(parents=True)
        (work / f".pw{5 + i}" / "wheels" / f"{whl.name}.part{i}of2").write_bytes(
            data[:len(data) // 2] if i == 1 else data[len(data) // 2:])
    shutil.rmtree(work / ".pw7")
    p = run()
    assert "parts waiting" in p.stdout and not (pk / "szfake_c").exists(), p.stdout + p.stderr
    shutil.rmtree(work / ".pw6")
    (work / ".pw7" / "wheels").mkdir(parents=True)
    (work / ".pw7" / "wheels" / f"{whl.name}.part2of2").write_bytes(data[len(data) // 2:])
    p = run()
    assert "szfake_c-1.0" in p.stdout and "parts waiting" not in p.stdout, p.stdout + p.stderr
    assert (pk / "szfake_c" / "__init__.py").read_text() == "VALUE = 'c'\n"


def test_choice_logprobs_quick_runs_and_checks_the_bits(tmp_path):
    """perf/choice_logprobs.py --quick: the taken cells equal the whole log-softmax's bits (else it
    fails), a speedup row in the result file."""
    p = subprocess.run([sys.executable, str(PERF / "choice_logprobs.py"), "--quick", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    rows = {r["metric"]: r for r in json.loads((tmp_path / "choice_logprobs.json").read_text())["rows"]}
    assert rows["speedup"]["value"] > 0 and "bits equal" in rows["speedup"]["detail"]


def test_power_run_bench_jobs_split_unfinished_quants_by_task(tmp_path):
    """power_run.py --per-task: one job per (quant, task) of the quants not yet benched, then the
    per-quant jobs (which reuse the finished tables and write the quant's marker); without it, the
    per-quant jobs alone. Expected jobs written out by hand."""
    sys.path.insert(0, str(PERF / "gpu"))
    import power_run
    wf = tmp_path / "wf"
    (wf / "bench").mkdir(parents=True)
    (wf / "bench" / "a.json").write_text("{}")  # quant a is benched already
    q = wf / "quants"
    whole = [("bench/a", {"quant": "a", "quant_marker": q / "a.json"}, wf / "bench" / "a.json"),
             ("bench/b", {"quant": "b", "quant_marker": q / "b.json"}, wf / "bench" / "b.json")]
    assert power_run.bench_jobs(["sciq", "piqa"], ["a", "b"], wf, per_task=False) == [whole]
    split = [("bench/b-sciq", {"quant": "b", "quant_marker": q / "b.json", "tasks": "sciq"},
              wf / "bench" / "b-sciq.json"),
             ("bench/b-piqa", {"quant": "b", "quant_marker": q / "b.json", "tasks": "piqa"},
              wf / "bench" / "b-piqa.json")]
    assert power_run.bench_jobs(["sciq", "piqa"], ["a", "b"], wf, per_task=True) == [split, whole]
    # the command line a job runs: the options as flags of `silentzone stage bench`
    args = power_run.argparse.Namespace(study="smollm2", profile="power", device="cuda")
    cmd = power_run._stage_cmd(args, "bench", split[0][2], **split[0][1])
    assert cmd[cmd.index("--tasks") + 1] == "sciq" and cmd[cmd.index("--quant") + 1] == "b"
    assert cmd[cmd.index("--quant-marker") + 1] == str(q / "b.json")


def test_power_run_packs_only_the_named_quants(tmp_path):
    """power_run.py --quants packs those quants' markers and tables and the logs, never the reference
    it scored again on its own machine, nor a quant whose id only starts like a named one; without
    --quants, every marker and table. The expected file lists are written out by hand."""
    sys.path.insert(0, str(PERF / "gpu"))
    import power_run
    files = ["wf/reference.json", "wf/capture/wiki-512.json", "wf/quants/Q4_K_M.json", "wf/quants/Q4_K_M-q8emb.json",
             "wf/fidelity/Q4_K_M.json", "wf/bench/reference.json", "wf/bench/reference-sciq.json",
             "wf/bench/Q4_K_M.json", "wf/bench/Q4_K_M-sciq.json", "wf/bench/Q4_K_M-q8emb.json",
             "samples/reference/sciq.csv", "samples/Q4_K_M/sciq.csv", "samples/Q4_K_M/sciq.csv.provenance.json",
             "samples/Q4_K_M-q8emb/sciq.csv", "fidelity/Q4_K_M/fidelity.csv", "fidelity/Q4_K_M-q8emb/fidelity.csv",
             "logs/bench_Q4_K_M-sciq.log", "bench_ref/sciq.npz", "bench_ref/sciq.json", "fidelity/Q4_K_M/x.npz"]
    for f in files:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("x")
    got = lambda *a: sorted(str(p.relative_to(tmp_path)) for p in power_run.pack_list(tmp_path, *a))  # noqa: E731
    assert got(["Q4_K_M"], ["sciq", "piqa"]) == sorted([
        "wf/quants/Q4_K_M.json", "wf/fidelity/Q4_K_M.json", "wf/bench/Q4_K_M.json", "wf/bench/Q4_K_M-sciq.json",
        "samples/Q4_K_M/sciq.csv", "samples/Q4_K_M/sciq.csv.provenance.json", "fidelity/Q4_K_M/fidelity.csv",
        "logs/bench_Q4_K_M-sciq.log"])
    assert got() == sorted(f for f in files if not f.startswith("bench_ref/") and not f.endswith(".npz"))


def test_power_run_refuses_a_quant_outside_the_profile(tmp_path, capsys):
    sys.path.insert(0, str(PERF / "gpu"))
    import power_run
    with pytest.raises(SystemExit) as e:
        power_run.main(["--study", "smollm2", "--quants", "Q8_0", "bnb-int9", "--methods", "gguf",
                        "--out", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.endswith("--quants: bnb-int9 not among the quants of smollm2/power with --methods gguf")


def test_power_run_float_reference_runs_on_the_cpu_in_a_second_home(tmp_path):
    """Stage float-reference: a second home linking every entry of the first but studies/; one bench
    job per task on the CPU with CUDA hidden, 16 cores shared by 4 tasks (4 threads each); its tables
    packed as a tar that `silentzone gather-leases --reference` accepts once every task has one."""
    sys.path.insert(0, str(PERF / "gpu"))
    import tarfile

    import pandas as pd

    import power_run
    from silentzone.config import load
    from silentzone.paths import CONFIGS
    from silentzone.workflow.leases import float_reference
    home, home2 = tmp_path / "home", tmp_path / "home-f32"
    for d in ("models/m", "build/llama", "studies/smollm2/smoke/wf"):
        (home / d).mkdir(parents=True)
    power_run.mirror_home(home, home2)
    power_run.mirror_home(home, home2)  # again: nothing changes
    assert sorted(p.name for p in home2.iterdir()) == ["build", "models"]
    assert (home2 / "models").resolve() == (home / "models").resolve() and (home2 / "models").is_symlink()
    sd2 = home2 / "studies/smollm2/smoke"
    args = power_run.argparse.Namespace(study="smollm2", profile="smoke", device="cuda")
    jobs = power_run.float_reference_jobs(args, ["sciq", "arc_easy", "piqa", "lambada"], sd2, home2, 16)
    assert [j[0] for j in jobs] == ["float-reference/sciq", "float-reference/arc_easy", "float-reference/piqa",
                                    "float-reference/lambada"]
    label, cmd, marker, env = jobs[2]
    assert cmd[cmd.index("--device") + 1] == "cpu" and cmd[cmd.index("--quant") + 1] == "reference"
    assert cmd[cmd.index("--tasks") + 1] == "piqa" and marker == sd2 / "wf/bench/reference-piqa.json"
    assert cmd[-1] == "--no-store" and "True" not in cmd  # a flag: tables only, resumable
    assert env == {"CUDA_VISIBLE_DEVICES": "", "SILENTZONE_HOME": str(home2), "SILENTZONE_THREADS": "4"}
    assert power_run.float_reference_jobs(args, ["sciq"] * 32, sd2, home2, 16)[0][3]["SILENTZONE_THREADS"] == "1"
    # two at a time on a 2-core machine (--jobs 2): one thread each; 6 tasks, 4 at once on 16 cores: 4
    assert power_run.float_reference_jobs(args, ["sciq"] * 6, sd2, home2, 2, 2)[0][3]["SILENTZONE_THREADS"] == "1"
    assert power_run.float_reference_jobs(args, ["sciq"] * 6, sd2, home2, 16, 4)[0][3]["SILENTZONE_THREADS"] == "4"
    # packing: nothing until both tasks of the smoke profile have a table
    study = load(CONFIGS / "smollm2.yaml", "smoke")
    shipped = pd.read_csv(Path(__file__).resolve().parent.parent / "data/smollm2/samples.csv")
    dest = tmp_path / "out.tar.xz"
    prov = {"device": "cpu", "attention": {"engine": "llama.cpp", "kv_cache": "f32"}}
    for i, t in enumerate(study.tasks):
        assert power_run.pack_float_reference(sd2, home2, study.tasks, dest) is None and not dest.exists()
        f = sd2 / "samples/reference" / f"{t}.csv"
        f.parent.mkdir(parents=True, exist_ok=True)
        shipped[(shipped["model"] == "reference") & (shipped["task"] == t)].to_csv(f, index=False)
        f.with_name(f.name + ".provenance.json").write_text(json.dumps(prov))
    assert power_run.pack_float_reference(sd2, home2, study.tasks, dest) == dest
    with tarfile.open(dest) as tar:
        names = sorted(tar.getnames())
    assert names == sorted(f"studies/smollm2/smoke/samples/reference/{t}.csv{x}"
                           for t in study.tasks for x in ("", ".provenance.json"))
    frames, provs = float_reference(study, dest)
    assert sorted(frames) == sorted(study.tasks) and all(p == prov for p in provs.values())


def test_power_run_skips_the_later_stages_without_a_reference(tmp_path, monkeypatch, capsys):
    """No reference marker after the reference stage (here: no time for its job, --deadline 0):
    the quant and bench stages start no job (each would export and check the reference again and
    fail the same way; Gemma 3's first lease lost 370 s so); the float reference may still run."""
    sys.path.insert(0, str(PERF / "gpu"))
    import power_run
    monkeypatch.setenv("SILENTZONE_HOME", str(tmp_path / "home"))
    asked = []
    job = power_run.Runner.job
    monkeypatch.setattr(power_run.Runner, "job", lambda self, label, cmd, marker, env=None: asked.append(
        (label, env)) or job(self, label, cmd, marker, env))
    out = tmp_path / "out"
    power_run.main(["--study", "smollm2", "--profile", "smoke", "--device", "cpu", "--stages", "reference",
                    "quant", "bench", "--deadline", "0", "--out", str(out), "--tag=-t"])
    assert "the later GPU stages are skipped" in capsys.readouterr().out
    timing = json.loads((out / "smollm2-smoke-timing-t.json").read_text())
    assert timing["skipped"] == ["reference"] and list(timing["stages"]) == ["reference"]
    # the reference's export and check run with the card hidden (a CPU job even on the GPU machine)
    assert asked == [("reference", {"CUDA_VISIBLE_DEVICES": ""})]


def test_power_run_skip_tasks_benches_the_other_tasks_per_quant(tmp_path, monkeypatch):
    """--skip-tasks lambada (Gemma 3's second lease: its reference bench aborted in llama.cpp's CUDA
    build): the reference's bench and the quants' run per (quant, task) on the other tasks, and no
    whole-quant job (it would need the skipped task). The expected job lists are written by hand."""
    sys.path.insert(0, str(PERF / "gpu"))
    import power_run
    from silentzone.config import load_study
    monkeypatch.setenv("SILENTZONE_HOME", str(tmp_path / "home"))
    study = load_study("smollm2", "smoke")
    assert tuple(study.tasks) == ("sciq", "piqa")  # the hand-written lists below assume these
    from silentzone.workflow.stages import sd as study_root
    wf = study_root(study) / "wf"
    made = [q.id for q in study.quants][:2]
    for f in ["reference.json", "bench/reference-sciq.json"] + [f"quants/{q}.json" for q in made]:
        (wf / f).parent.mkdir(parents=True, exist_ok=True)
        (wf / f).write_text("{}")
    asked = []
    monkeypatch.setattr(power_run.Runner, "stage", lambda self, name, jobs, parallel: asked.append(
        (name, [j[0] for j in jobs])) if name in self.args.stages else None)
    power_run.main(["--study", "smollm2", "--profile", "smoke", "--device", "cpu", "--stages",
                    "bench-reference", "bench", "--skip-tasks", "piqa", "--out", str(tmp_path / "out")])
    assert asked == [("bench-reference", ["bench/reference-sciq"]),
                     ("bench", [f"bench/{made[0]}-sciq", f"bench/{made[1]}-sciq"])]
    with pytest.raises(SystemExit) as e:
        power_run.main(["--study", "smollm2", "--profile", "smoke", "--skip-tasks", "mmlu",
                        "--out", str(tmp_path / "out")])
    assert e.value.code == 2


def test_lambada_probe_scores_the_study_items_in_order_per_variant(tmp_path):
    """perf/gpu/lambada_probe.py on the CPU (SmolLM2's power profile, F32 reference, F32 cache): each
    variant in its own process scores the study's LAMBADA items in the study's order; the margins
    equal those of the float reference scored on the GPU host's CPU (the tar of docs/performance.md,
    another machine: 1e-4 nats), and item 1 alone gives the bits it gives in the sequence."""
    import tarfile

    import pandas as pd
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, str(PERF / "gpu" / "lambada_probe.py"), "--study", "smollm2",
                        "--profile", "power", "--device", "cpu", "--upto", "2", "--item", "1",
                        "--variants", "seq", "seq-numpy", "alone", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    res = json.loads((out / "lambada_probe.json").read_text())["variants"]
    assert sorted(res) == ["alone", "seq", "seq-numpy"] and all(r["rc"] == 0 for r in res.values())
    tar = tarfile.open(Path(__file__).resolve().parent.parent
                       / "docs/performance/gpu/h100host-cpu-2026-12-07-smollm2-power-reference-f32.tar.xz")
    ref = pd.read_csv(tar.extractfile("studies/smollm2/power/samples/reference/lambada.csv"))
    want = ref.set_index("item_id")["margin"]
    seq = res["seq"]["items"]
    assert [x["item_id"] for x in seq] == list(ref["item_id"][:3])  # the study's order
    for x in seq:
        assert abs(x["margin"] - want[x["item_id"]]) < 1e-4, x
    assert [x["margin"] for x in res["seq-numpy"]["items"]] == [x["margin"] for x in seq]
    assert res["alone"]["items"] == [seq[1]]


def test_power_resume_puts_back_fidelity_and_capture_markers_when_complete(tmp_path):
    """perf/gpu/power_resume.py: a quant's fidelity files come back with its wf/fidelity marker (one
    without its marker does not); the capture markers only when every quant the lease made has its
    fidelity there (else a score job would need the capture's logits, which never travel)."""
    import io
    import tarfile
    base = "studies/gemma3/power/"

    def run(names, tag):
        src = tmp_path / f"{tag}.tar.xz"
        with tarfile.open(src, "w:xz") as tar:
            for n in names:
                info = tarfile.TarInfo(base + n)
                info.size = len(n)
                tar.addfile(info, io.BytesIO(n.encode()))
        home = tmp_path / tag
        p = subprocess.run([sys.executable, str(PERF / "gpu" / "power_resume.py"), str(src), str(home)],
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        return p.stdout, sorted(str(f.relative_to(home / base)) for f in (home / base).rglob("*") if f.is_file())

    common = ["wf/quants/A.json", "wf/quants/B.json", "wf/fidelity/A.json", "fidelity/A/fidelity.csv",
              "fidelity/A/wiki/ctx=512-half/summary.json", "fidelity/B/fidelity.csv", "wf/capture/wiki-512.json",
              "wf/reference.json", "logs/score_A.log"]
    out, got = run(common, "half")
    assert got == ["fidelity/A/fidelity.csv", "fidelity/A/wiki/ctx=512-half/summary.json", "wf/fidelity/A.json"]
    assert "fidelity of 1 quants, 0 capture markers" in out
    out, got = run(common + ["wf/fidelity/B.json"], "whole")
    assert got == ["fidelity/A/fidelity.csv", "fidelity/A/wiki/ctx=512-half/summary.json", "fidelity/B/fidelity.csv",
                   "wf/capture/wiki-512.json", "wf/fidelity/A.json", "wf/fidelity/B.json"]
    assert "fidelity of 2 quants, 1 capture markers" in out


def test_power_run_reports_the_line_that_names_a_failure():
    """A failed job's line in power_run.py's output: the log's last line that says something, not a
    backtrace frame nor a progress bar's redraw. The log below is the shape of Gemma 3's aborted
    LAMBADA job (seventh lease), frames and all; the expected line is picked by hand."""
    sys.path.insert(0, str(PERF / "gpu"))
    import power_run
    log = ("ggml_cuda_init: found 1 CUDA devices:\n"
           "reference/lambada:   0%|          | 0/1000 [00:00<?, ?it/s]\r"
           "reference/lambada:  30%|###       | 302/1000 [00:04<00:09, 76.61it/s]"
           "/src/ggml/src/ggml-cuda/ggml-cuda.cu:109: CUDA error\n"
           "/build/bin/libggml-base.so.0(+0x3293b)[0x7efc4dd2493b]\n"
           "/build/bin/libggml-base.so.0(ggml_abort+0x15b)[0x7efc4dd24f9b]\n"
           "/lib/x86_64-linux-gnu/libffi.so.8(ffi_call+0x12e)[0x7efcb39280be]\n"
           "/opt/torch/.venv/bin/python3[0x5d33dc]\n"
           "/opt/torch/.venv/bin/python3(_start+0x25)[0x657a05]\n\n")
    assert power_run.last_line(log) == ("reference/lambada:  30%|###       | 302/1000 [00:04<00:09, 76.61it/s]"
                                        "/src/ggml/src/ggml-cuda/ggml-cuda.cu:109: CUDA error")
    assert power_run.last_line("Traceback (most recent call last):\n  x\nValueError: Failed to create llama_context\n") \
        == "ValueError: Failed to create llama_context"
    assert power_run.last_line("a\rb\rc\n") == "c" and power_run.last_line("\n\n") == ""
