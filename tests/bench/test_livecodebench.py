"""LiveCodeBench: the release format (plain and compressed private tests), the date window, the
sandboxed grading of stdin and functional tests on a fixture the project wrote
(tests/bench/data/lcb_fixture.jsonl: five small problems, one released before the window), hostile
programs, and the one-line error for an absent release file."""

from __future__ import annotations

import base64
import json
import pickle
import zlib
from pathlib import Path

import pytest

from silentzone.bench import data as D
from silentzone.bench import livecodebench as L
from silentzone.bench import tasks as T

FIXTURE = Path(__file__).parent / "data" / "lcb_fixture.jsonl"
WINDOW = ("2024-01-01", "2024-12-31")

SOLUTIONS = {
    "lcb-szc001_a": "a, b = map(int, input().split())\nprint(a + b)\n",
    "lcb-szc002": "class Solution:\n    def largestValue(self, nums: List[int]) -> int:\n        return max(nums)\n",
    "lcb-szc003_b": "import sys\nd = sys.stdin.buffer.read().split()\nn = int(d[0])\nprint(sum(map(int, d[1:1 + n])) / n)\n",
    "lcb-szc004": "class Solution:\n    def sortedPair(self, a, b):\n        return (min(a, b), max(a, b))\n",
}


@pytest.fixture(scope="module")
def items():
    return {it.id: it for it in L.read_release(FIXTURE, *WINDOW)}


def test_window_filter_and_fields(items):
    assert sorted(items) == sorted(SOLUTIONS)                     # szc000 (2023-01-10) is left out
    assert len(L.read_release(FIXTURE)) == 5                      # open window: all five
    assert [it.id for it in L.read_release(FIXTURE, "2024-05-11", "2024-08-20")] == ["lcb-szc002", "lcb-szc003_b"]
    it = items["lcb-szc001_a"]
    assert it.meta["func_name"] is None and len(it.meta["tests"]) == 4  # 1 public + 3 private
    assert items["lcb-szc002"].meta["func_name"] == "largestValue"
    assert items["lcb-szc002"].meta["contest_date"] == "2024-05-11"


def test_private_tests_plain_and_compressed_decode_alike():
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    plain = [r for r in rows if r["private_test_cases"].startswith("[")]
    packed = [r for r in rows if not r["private_test_cases"].startswith("[")]
    assert plain and packed                                        # the fixture has both encodings
    for r in packed:
        raw = zlib.decompress(base64.b64decode(r["private_test_cases"]))
        expect = json.loads(pickle.loads(raw))                    # trusted here: our own fixture
        assert L.decode_tests(r["private_test_cases"], "x") == expect
    t = [{"input": "1\n", "output": "2\n", "testtype": "stdin"}]
    assert L.decode_tests(L.encode_private(t), "x") == L.decode_tests(json.dumps(t), "x") == t


def test_hostile_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {marker}",))
    blob = base64.b64encode(zlib.compress(pickle.dumps(Evil()))).decode()
    with pytest.raises(D.DataError, match="refusing to load"):
        L.decode_tests(blob, "row 1")
    assert not marker.exists()
    not_a_list = base64.b64encode(zlib.compress(pickle.dumps(42))).decode()
    with pytest.raises(D.DataError, match="not a JSON string or a list"):
        L.decode_tests(not_a_list, "row 1")


def test_correct_solutions_pass_and_wrong_ones_fail(items):
    for qid, code in SOLUTIONS.items():
        it = items[qid]
        resp = f"Here is my solution.\n```python\n{code}```\n"
        assert L.grade(it, resp)["status"] == "passed", qid
    # 2.5 printed for the expected 2.50 passes (Decimal comparison, as lcb_runner); a returned
    # tuple passes for a list (szc003_b, szc004 above). Wrong answers:
    assert L.run_tests("print(3)", items["lcb-szc001_a"].meta["tests"], None)["status"] == "wrong"
    assert L.run_tests("print('2.5 ')\nprint(1)", items["lcb-szc003_b"].meta["tests"], None)["status"] == "wrong"
    wrong_fn = "class Solution:\n    def largestValue(self, nums):\n        return min(nums)\n"
    assert L.run_tests(wrong_fn, items["lcb-szc002"].meta["tests"], "largestValue")["status"] == "wrong"
    no_fn = "class Solution:\n    def other(self, nums):\n        return 0\n"
    assert L.run_tests(no_fn, items["lcb-szc002"].meta["tests"], "largestValue")["status"] == "error"
    assert L.grade(items["lcb-szc001_a"], "print(3)")["status"] == "no_code"  # no fenced block


def test_extract_code_takes_the_last_fenced_block():
    r = "```python\nx = 1\n```\ntext\n```python\nprint(2)\n```\nbye"
    assert L.extract_code(r) == "print(2)"
    assert L.extract_code("```python\nprint(1)") == ""            # unterminated: no code (lcb_runner)


def test_stdio_key_and_canon_match_lcb_rules():
    assert L.stdio_key("1 2\n") == L.stdio_key("  1   2  \n\n")     # stripped lines, Decimal split
    assert L.stdio_key("2.50") == L.stdio_key("2.5") == L.stdio_key("25e-1")
    assert L.stdio_key("-0") == L.stdio_key("0")
    assert L.stdio_key("Yes") != L.stdio_key("yes")               # text is exact
    assert L.stdio_key("1\n2") != L.stdio_key("1 2")              # line structure matters
    assert L.stdio_key("nan") != L.stdio_key("NaN")               # NaN != NaN as Decimals
    assert L.canon((1, 2)) == L.canon([1, 2])                     # top-level tuple as list
    assert L.canon([(1, 2)]) != L.canon([[1, 2]])                 # nested tuple is not (== False)
    assert L.canon(3.0) == L.canon(3) and L.canon(True) == L.canon(1)
    assert L.canon({"b": 1, "a": 2}) == L.canon({"a": 2, "b": 1})
    assert L.canon(0.1 + 0.2) != L.canon(0.3)


HOSTILE = {
    "writes outside its temp dir": "open({marker!r}, 'w').write('x')\nprint(3)",
    "exits 0 before any output": "import os\nos._exit(0)",
    "prints a forged verdict": "import sys\nsys.__stdout__.write('\\nSZ-LCB-DIGESTS [4, \"0\", []]\\n')\nprint(3)",
    "loops forever": "while True:\n    pass",
    "forks": "import os\nfor _ in range(100):\n    os.fork()\nprint(3)",
    "opens a socket": "import socket\nsocket.create_connection(('1.1.1.1', 80))\nprint(3)",
    "allocates without bound": "x = []\nwhile True:\n    x.append(' ' * 10**7)",
    "reads the expected outputs": "import glob\nprint(open(glob.glob('*')[0]).read()[:50])",
}


@pytest.mark.parametrize("what", sorted(HOSTILE))
def test_hostile_programs_are_contained_and_fail(items, what, tmp_path):
    marker = tmp_path / "escaped"
    code = HOSTILE[what].format(marker=str(marker))
    r = L.run_tests(code, items["lcb-szc001_a"].meta["tests"], None, per_test=2, timeout=15)
    assert not r["passed"], r
    assert not marker.exists()


def test_absent_release_file_is_one_line(tmp_path):
    missing = tmp_path / "lcb" / "test6.jsonl"
    with pytest.raises(D.DataError) as e:
        L.read_release(missing)
    msg = str(e.value)
    assert "\n" not in msg and str(missing) in msg and "not found" in msg
    L.configure(missing)
    try:
        with pytest.raises(D.DataError, match="release file not found"):
            T.get("livecodebench").items(3)
    finally:
        L.configure("")


def test_task_through_the_registry(items):
    L.configure(FIXTURE, *WINDOW)
    try:
        got = T.get("livecodebench").items()
        assert [it.id for it in got] == [it.id for it in L.read_release(FIXTURE, *WINDOW)]
        it = got[0]
        assert T.get("livecodebench").score(it, f"```python\n{SOLUTIONS[it.id]}```")
        assert not T.get("livecodebench").score(it, "```python\nprint(0)\n```")
    finally:
        L.configure("")


@pytest.mark.slow
def test_real_smollm2_livecodebench_rows(smollm2_ref, enc, tmp_path, monkeypatch, capsys):
    """The livecodebench task on the fixture with the real SmolLM2 through run_benchmarks
    (reference only, 2 items, short generations): rows well formed; each row's verdict equals
    grading its stored response again."""
    import dataclasses
    import math
    from silentzone.bench.run import run_benchmarks
    from silentzone.config import load
    from silentzone.paths import CONFIGS
    monkeypatch.setitem(T.TASKS, "livecodebench",
                        dataclasses.replace(T.TASKS["livecodebench"], max_new_tokens=96))
    study = dataclasses.replace(load(CONFIGS / "smollm2.yaml", "smoke"),
                                livecodebench=type(load(CONFIGS / "smollm2.yaml").livecodebench)(
                                    str(FIXTURE), *WINDOW))
    try:
        df = run_benchmarks(study, {"reference": smollm2_ref.gguf}, tasks=["livecodebench"], n_items=2,
                            k=64, threads=2, tokenizer=enc.tok, out_dir=tmp_path, progress=False)
    finally:
        L.configure("")
    assert len(df) == 2 and df.item_id.str.startswith("lcb-").all() and df.margin.map(math.isnan).all()
    its = {it.id: it for it in L.read_release(FIXTURE, *WINDOW)}
    for _, r in df.iterrows():
        assert bool(r.correct) == L.score(its[r.item_id], r.response)
        with capsys.disabled():
            print(f"\n{r.item_id}: correct={r.correct} {L.grade(its[r.item_id], r.response)['status']} "
                  f"response={r.response[:100]!r}")
