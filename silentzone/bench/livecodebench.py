"""LiveCodeBench code generation: a loader for its released JSONL files, a contest-date window,
and its stdin/stdout and functional tests run in the sandbox (silentzone.bench.sandbox).

    configure("/data/lcb/test6.jsonl", start="2025-01-01", end="2025-04-30")   # or the study's
    items = load_configured()              # Items in file order, inside the window
    ok = score(item, response)             # every public and private test passes

Release format (livecodebench/code_generation_lite, lcb_runner/benchmarks/code_generation.py):
one JSON object per line with question_title, question_content, platform (leetcode | atcoder |
codeforces), question_id, contest_id, contest_date (ISO date-time), starter_code, difficulty,
public_test_cases (a JSON string: [{input, output, testtype: stdin | functional}]),
private_test_cases (the same JSON, or base64 of zlib of a pickle of that JSON string), metadata (a
JSON string; func_name for functional tests). No package ships a release, so nothing is
downloaded: the study config names the file (`livecodebench.file`); a missing file is one line.

The compressed private tests are unpickled with an unpickler that resolves no global at all, so
only plain data (str, list, dict, numbers) can come out; anything else is refused, and the result
must be a str (JSON) or a list.

Grading follows lcb_runner/evaluation/testing_util.py: the code is the last ``` block of the
response (fewer than two fence lines: no code, a failure); stdin tests compare stripped output
lines exactly or, failing that, as lists of Decimals; functional tests call
Solution().<func_name> (or a top-level function) with one JSON value per input line and compare
with == (a returned tuple counts as a list). Both get LCB's import prelude and 6 s per test. The
comparison happens outside the sandboxed process: the program reports a digest of each test's
canonical output (stdio_key / canon below), never sees the expected outputs, and cannot pass by
exiting early or printing a verdict.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import inspect
import io
import json
import pickle
import re
import zlib
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path

from . import data
from .items import Item
from ..settings import current

FIELDS = ("question_title", "question_content", "platform", "question_id", "contest_id",
          "contest_date", "starter_code", "difficulty", "public_test_cases", "private_test_cases",
          "metadata")
PER_TEST_S = 6  # lcb_runner's default timeout per test
MAX_PROGRAM_S = 120.0

SYSTEM = ("You are an expert Python programmer. You will be given a question (problem specification) "
          "and will generate a correct Python program that matches the specification and passes all "
          "tests. You will NOT return anything except for the program.")
WITH_STARTER = ("You will use the following starter code to write the solution to the problem and "
                "enclose your code within delimiters.")
WITHOUT_STARTER = ("Read the inputs from stdin solve the problem and write the answer to stdout (do not "
                   "directly test on the sample inputs). Enclose your code within delimiters as follows.")

# lcb_runner's import prelude, put in front of every program
IMPORTS = ("from string import *\nfrom re import *\nfrom datetime import *\nfrom collections import *\n"
           "from heapq import *\nfrom bisect import *\nfrom copy import *\nfrom math import *\n"
           "from random import *\nfrom statistics import *\nfrom itertools import *\n"
           "from functools import *\nfrom operator import *\nfrom io import *\nfrom sys import *\n"
           "from json import *\nfrom builtins import *\nfrom typing import *\nimport string\nimport re\n"
           "import datetime\nimport collections\nimport heapq\nimport bisect\nimport copy\nimport math\n"
           "import random\nimport statistics\nimport itertools\nimport functools\nimport operator\n"
           "import io\nimport sys\nimport json\nsys.setrecursionlimit(50000)\n")


# ---- the release file ------------------------------------------------------------------------


class _NoGlobals(pickle.Unpickler):
    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: plain data only")


def decode_tests(value, where: str) -> list[dict]:
    """Test cases from a release field: a list, a JSON string, or base64(zlib(pickle(JSON str)))."""
    if isinstance(value, list):
        tests = value
    else:
        if not isinstance(value, str):
            raise data.DataError(f"{where}: test cases must be a JSON string, got {type(value).__name__}")
        try:
            tests = json.loads(value)
        except json.JSONDecodeError:
            try:
                raw = zlib.decompress(base64.b64decode(value.encode("ascii"), validate=True))
                obj = _NoGlobals(io.BytesIO(raw)).load()
            except (ValueError, zlib.error, pickle.UnpicklingError, EOFError, UnicodeEncodeError) as e:
                raise data.DataError(f"{where}: test cases are neither JSON nor base64/zlib/pickle "
                                     f"({type(e).__name__}: {str(e)[:80]})") from None
            if isinstance(obj, bytes):
                obj = obj.decode("utf-8")
            if isinstance(obj, str):
                try:
                    tests = json.loads(obj)
                except json.JSONDecodeError as e:
                    raise data.DataError(f"{where}: decoded test cases are not JSON ({e.msg})") from None
            elif isinstance(obj, list):
                tests = obj
            else:
                raise data.DataError(f"{where}: decoded test cases are a {type(obj).__name__}, "
                                     "not a JSON string or a list")
    if not isinstance(tests, list) or not all(
            isinstance(t, dict) and {"input", "output", "testtype"} <= set(t) for t in tests):
        raise data.DataError(f"{where}: test cases must be a list of {{input, output, testtype}}")
    for t in tests:
        if t["testtype"] not in ("stdin", "functional"):
            raise data.DataError(f"{where}: unknown testtype {t['testtype']!r}")
    return tests


def encode_private(tests: list[dict]) -> str:
    """The release's compressed encoding (base64 of zlib of a pickle of the JSON string)."""
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(tests)))).decode("ascii")


def contest_date(value, where: str) -> dt.date:
    try:
        return dt.datetime.fromisoformat(str(value)).date()
    except ValueError:
        raise data.DataError(f"{where}: contest_date {value!r} is not an ISO date") from None


def parse_day(value: str, what: str) -> dt.date | None:
    if value in ("", None):
        return None
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"{what} must be a date YYYY-MM-DD, got {value!r}") from None


def read_release(path: str | Path, start: str = "", end: str = "") -> list:
    """Items of a release file whose contest_date lies in [start, end] (inclusive; '' = open)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise data.DataError(f"{path}: LiveCodeBench release file not found (download a "
                             "code_generation_lite test*.jsonl and name it in livecodebench.file)")
    lo, hi = parse_day(start, "livecodebench.start"), parse_day(end, "livecodebench.end")
    out = []
    for i, row in enumerate(data.jsonl_rows(path)):
        where = f"{path}: line {i + 1}"
        missing = [f for f in FIELDS if f not in row]
        if missing:
            raise data.DataError(f"{where}: missing field(s) {missing}")
        day = contest_date(row["contest_date"], where)
        if (lo and day < lo) or (hi and day > hi):
            continue
        tests = decode_tests(row["public_test_cases"], f"{where}: public_test_cases") + \
            decode_tests(row["private_test_cases"], f"{where}: private_test_cases")
        meta_raw = row["metadata"]
        try:
            meta = json.loads(meta_raw) if isinstance(meta_raw, str) else dict(meta_raw or {})
        except (json.JSONDecodeError, TypeError, ValueError):
            raise data.DataError(f"{where}: metadata is not a JSON object") from None
        fn = meta.get("func_name")
        kinds = {t["testtype"] for t in tests}
        if "functional" in kinds and not fn:
            raise data.DataError(f"{where}: functional tests need metadata.func_name")
        if not tests:
            raise data.DataError(f"{where}: no test cases")
        content = {f: row[f] for f in FIELDS}
        out.append(Item(f"lcb-{row['question_id']}", content, prompt=row["question_content"],
                        meta={"tests": tests, "func_name": fn if "functional" in kinds else None,
                              "starter_code": row["starter_code"] or "", "platform": row["platform"],
                              "difficulty": row["difficulty"], "contest_date": day.isoformat()}))
    return out


_CONFIG: dict = {"file": current().lcb_file, "start": "", "end": ""}


def configure(file: str | Path, start: str = "", end: str = "") -> None:
    """Which release file and date window the `livecodebench` task reads (a study's
    livecodebench section; run_benchmarks calls this). Clears the task's cached items."""
    _CONFIG.update(file=str(file), start=start or "", end=end or "")
    _configured.cache_clear()


def load_configured() -> list:
    if not _CONFIG["file"]:
        raise data.DataError("livecodebench: no release file configured (set livecodebench.file in "
                             "the study config, or SILENTZONE_LCB_FILE)")
    return _configured(_CONFIG["file"], _CONFIG["start"], _CONFIG["end"])


@lru_cache(maxsize=None)
def _configured(file: str, start: str, end: str) -> list:
    """The task's items, read once per configuration (the registry does not cache this task)."""
    return read_release(file, start, end)


# ---- prompt ----------------------------------------------------------------------------------


def user_message(item) -> str:
    """lcb_runner's get_generic_question_template_answer."""
    p = f"### Question:\n{item.content['question_content']}\n\n"
    if item.meta["starter_code"]:
        p += f"### Format: {WITH_STARTER}\n```python\n{item.meta['starter_code']}\n```\n\n"
    else:
        p += f"### Format: {WITHOUT_STARTER}\n```python\n# YOUR CODE HERE\n```\n\n"
    return p + "### Answer: (use the provided format with backticks)\n\n"


def render(tokenizer, item) -> str:
    """lcb_runner's chat prompt (system + user) through the chat template, or plain text."""
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user_message(item)}]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    return SYSTEM + "\n\n" + user_message(item)


def extract_code(response: str) -> str:
    """lcb_runner's extract_code: between the last two lines containing ``` ('' if fewer)."""
    lines = response.split("\n")
    fences = [i for i, line in enumerate(lines) if "```" in line]
    if len(fences) < 2:
        return ""
    return "\n".join(lines[fences[-2] + 1:fences[-1]])


# ---- grading ---------------------------------------------------------------------------------
# stdio_key and canon run both here (expected outputs) and inside the sandboxed harness (the
# program's outputs): their source is copied into the harness, so the two sides cannot drift.


def stdio_key(text):
    """Canonical form of stdout under lcb_runner's grade_stdio: stripped lines, equal when equal
    as text or, both being lists of Decimals, equal as numbers (NaN is never equal to itself)."""
    from decimal import Decimal, InvalidOperation  # noqa: F811 - also runs inside the harness
    keys = []
    for line in text.strip().split("\n"):
        line = line.strip()
        try:
            nums = [Decimal(t) for t in line.split()]
        except (InvalidOperation, ValueError):
            nums = None
        if nums is None or any(n.is_nan() for n in nums):
            keys.append("S:" + line)
        else:
            keys.append("D:" + " ".join("0" if n == 0 else str(n.normalize()) for n in nums))
    return "\n".join(keys)


def canon(x, top=True):
    """Canonical repr under ==, as lcb_runner compares a functional result with json.loads of the
    expected output: bools and integral floats as ints, dicts sorted, a top-level tuple as a list."""
    if top and isinstance(x, tuple):
        x = list(x)
    if isinstance(x, bool):
        return repr(int(x))
    if isinstance(x, float) and x == x and abs(x) != float("inf") and x == int(x):
        return repr(int(x))
    if isinstance(x, list):
        return "[" + ", ".join(canon(v, False) for v in x) + "]"
    if isinstance(x, tuple):
        return "(" + ", ".join(canon(v, False) for v in x) + ",)"
    if isinstance(x, dict):
        return "{" + ", ".join(sorted(canon(k, False) + ": " + canon(v, False) for k, v in x.items())) + "}"
    return repr(x)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:24]


MARK = "SZ-LCB-DIGESTS "

_HARNESS = r'''
import builtins, hashlib, io, json, signal, sys
CODE = {code!r}
INPUTS = {inputs!r}
FN = {fn!r}
IMPORTS = {imports!r}
PER_TEST = {per_test!r}
{helpers}
class _TLE(BaseException):
    pass
def _alarm(signum, frame):
    raise _TLE()
signal.signal(signal.SIGALRM, _alarm)
_out, _in, _open, _exit = sys.stdout, sys.stdin, builtins.open, sys.exit
res = []
def _finish():
    bad = [r for r in res if r == "TLE" or r.startswith("ERR")]
    _out.write("\n" + {mark!r} + json.dumps([len(res), digest("".join(res)), bad[:1]]) + "\n")
    _out.flush()
src = compile(IMPORTS + "\n" + CODE, "solution.py", "exec")
method = None
if FN is not None:
    try:
        signal.alarm(PER_TEST)
        ns = {{"__name__": "solution"}}
        exec(src, ns)
        method = getattr(ns["Solution"](), FN) if "class Solution" in CODE else ns[FN]
    except BaseException as e:
        res.append("ERR:compile:" + type(e).__name__)
    finally:
        signal.alarm(0)
        sys.stdout, sys.stdin, builtins.open = _out, _in, _open
for inp in INPUTS if (FN is None or method is not None) else []:
    try:
        signal.alarm(PER_TEST)
        if FN is None:
            raw = inp.encode("utf-8")
            sys.stdin = io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8")
            buf = io.StringIO()
            sys.stdout = buf
            builtins.open = lambda f, *a, **k: (io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8")
                                                if f == 0 else _open(f, *a, **k))
            try:
                exec(src, {{"__name__": "__main__"}})
            except SystemExit:
                pass
            key = stdio_key(buf.getvalue())
        else:
            args = [json.loads(line) for line in inp.split("\n")]
            key = canon(method(*args))
        signal.alarm(0)
        res.append(digest(key))
    except _TLE:
        res.append("TLE")
    except BaseException as e:
        res.append("ERR:" + type(e).__name__)
    finally:
        signal.alarm(0)
        sys.stdout, sys.stdin, builtins.open = _out, _in, _open
    if res[-1] == "TLE" or res[-1].startswith("ERR"):
        break
_finish()
'''


def harness(code: str, tests: list[dict], func_name: str | None, per_test: int = PER_TEST_S) -> str:
    """The program the sandbox runs: the candidate code against the test inputs (never outputs)."""
    helpers = "\n".join(inspect.getsource(f) for f in (stdio_key, canon, digest))
    return _HARNESS.format(code=code, inputs=[t["input"] for t in tests], fn=func_name,
                           imports=IMPORTS, per_test=per_test, helpers=helpers, mark=MARK)


def expected_digests(tests: list[dict], func_name: str | None) -> list[str]:
    if func_name is None:
        return [digest(stdio_key(t["output"])) for t in tests]
    return [digest(canon(json.loads(t["output"]))) for t in tests]


def run_tests(code: str, tests: list[dict], func_name: str | None, per_test: int = PER_TEST_S,
              timeout: float | None = None) -> dict:
    """Grade `code`: {'passed', 'status' (passed | wrong | error | timeout | no_result | no_code),
    'n_tests', 'detail'}. The program reports (tests run, digest of its per-test digests, first
    error): one short line whatever the number of tests (the sandbox keeps a 4,000-character tail)."""
    from .sandbox import run_program
    n = len(tests)
    out = {"passed": False, "status": "no_code", "n_tests": n, "detail": ""}
    if not code.strip():
        return out
    want = digest("".join(expected_digests(tests, func_name)))
    if timeout is None:
        timeout = min(MAX_PROGRAM_S, 5.0 + per_test * n)
    r = run_program(harness(code, tests, func_name, per_test), timeout=timeout)
    m = re.findall(re.escape(MARK) + r"(\[.*\])", r.stdout)
    if r.status == "timeout":
        return {**out, "status": "timeout", "detail": "sandbox wall-clock limit"}
    try:
        n_run, got, bad = json.loads(m[-1]) if m else (None, None, None)
    except (json.JSONDecodeError, ValueError, TypeError):
        n_run = got = bad = None
    if n_run is None:
        return {**out, "status": "no_result", "detail": (r.stderr.strip().splitlines() or [""])[-1][:200]}
    if bad:
        return {**out, "status": "timeout" if bad[0] == "TLE" else "error", "detail": str(bad[0])}
    if n_run == n and got == want:
        return {**out, "passed": True, "status": "passed"}
    return {**out, "status": "wrong", "detail": f"{n_run} tests run"}


def grade(item, response: str) -> dict:
    return run_tests(extract_code(response), item.meta["tests"], item.meta["func_name"])


def score(item, response: str) -> bool:
    return grade(item, response)["passed"]
