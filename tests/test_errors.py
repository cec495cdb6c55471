"""One error base (#21): every exception class of the package derives from SilentzoneError; the CLI
prints exactly one line and exits 2 for it (and for analysis' ContractError, the pure library's own),
while any other exception keeps its traceback; a bug inside a quant builder is not a failed quant row."""

from __future__ import annotations

import ast
import builtins
import importlib
from pathlib import Path
from types import SimpleNamespace

import pytest

from analysis.contracts import ContractError
from silentzone.errors import SilentzoneError
from silentzone.paths import CONFIGS, REPO

# The inventory (by name: modules may move): each must exist and derive from the base.
INVENTORY = {"BackendError", "GGUFFileError", "LoadtimeError", "ConfigError", "CorpusError", "ScoreRefused",
             "NonFiniteLogits", "StoreError", "NumbersError", "WorkflowError", "ModelError", "DataError",
             "DecodeError", "LogSamplesError", "RefStoreError", "TaskError", "QuantFailed", "CompareError"}
# Private control flow that never reaches a user (e.g. livecodebench's _TLE, a BaseException that
# unwinds a timed-out program): a name starting with "_" is not a project error.


def declared() -> dict[tuple[str, str], list[str]]:
    """(module, class) -> base names of every public exception class defined under silentzone/, found
    by reading the source (a class whose base is a builtin exception or another such class)."""
    exc = {n for n in dir(builtins) if isinstance(getattr(builtins, n), type)
           and issubclass(getattr(builtins, n), BaseException)}
    classes = []
    for f in sorted((REPO / "silentzone").rglob("*.py")):
        mod = ".".join(f.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                classes.append((mod, node.name, [ast.unparse(b).split(".")[-1] for b in node.bases]))
    found: dict[tuple[str, str], list[str]] = {}
    grew = True
    while grew:
        grew = False
        for mod, name, bases in classes:
            if (mod, name) not in found and any(b in exc for b in bases):
                found[(mod, name)], grew = bases, True
                exc.add(name)
    return {k: v for k, v in found.items() if not k[1].startswith("_")}


def error_classes() -> list[type]:
    return [getattr(importlib.import_module(mod), name) for mod, name in sorted(declared())]


def test_every_exception_class_derives_from_the_base():
    found = declared()
    names = {n for _, n in found}
    assert INVENTORY <= names, f"missing: {sorted(INVENTORY - names)}"
    stray = [f"{m}.{n}({', '.join(b)})" for (m, n), b in sorted(found.items())
             if not issubclass(getattr(importlib.import_module(m), n), SilentzoneError)]
    assert stray == []


def test_old_builtin_bases_are_kept_for_callers():
    """`except ValueError` around config loading, `except KeyError` around task lookup still work."""
    from silentzone.bench.tasks import TaskError, get
    from silentzone.config import ConfigError, load
    assert issubclass(ConfigError, ValueError) and issubclass(TaskError, KeyError)
    with pytest.raises(ValueError):
        load(CONFIGS / "smollm2.yaml", "no-such-profile")
    with pytest.raises(KeyError) as e:
        get("nope")
    assert isinstance(e.value, SilentzoneError) and str(e.value).startswith("unknown task 'nope'")


@pytest.fixture()
def cli_raising(monkeypatch):
    """main(['validate', 'x']) runs `raise exc`."""
    import silentzone.cli as cli

    def arm(exc):
        def boom(args):
            raise exc
        monkeypatch.setattr(cli, "_validate", boom)
        return cli.main
    return arm


@pytest.mark.parametrize("cls", error_classes() + [ContractError], ids=lambda c: c.__name__)
def test_each_error_class_is_one_line_and_exit_2(cls, cli_raising, capsys):
    main = cli_raising(cls("data/x.csv: column y: is not a number\n  (row 3)"))
    assert main(["validate", "x.yaml"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == ["error: data/x.csv: column y: is not a number | (row 3)"]


@pytest.mark.parametrize("exc", [TypeError("f() takes 1 positional argument"), KeyError("q"),
                                 AttributeError("x"), RuntimeError("a bug"), ValueError("a bug")],
                         ids=lambda e: type(e).__name__)
def test_anything_else_keeps_its_traceback(exc, cli_raising, capsys):
    main = cli_raising(exc)
    with pytest.raises(type(exc)):
        main(["validate", "x.yaml"])
    assert "error:" not in capsys.readouterr().err


def _one_line(capsys, main, argv) -> str:
    capsys.readouterr()
    rc = main(argv)
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: "), (rc, err)
    return err[0]


def test_real_bad_inputs_through_the_cli(tmp_path, capsys):
    """Inputs a new user might give: each is one line naming what is wrong, exit 2."""
    from silentzone.cli import main
    line = _one_line(capsys, main, ["kld", "--reference", "a.gguf", "--candidate", "b.gguf",
                                    "--text", str(tmp_path / "none.txt"), "--ctx", "64"])
    assert line == f"error: {tmp_path / 'none.txt'}: text file not found"
    line = _one_line(capsys, main, ["schema", "nosuchtable"])
    assert "unknown table 'nosuchtable'" in line
    line = _one_line(capsys, main, ["compare-results", "nosuchstudy"])
    assert "data/nosuchstudy" in line and "'nosuchstudy'" in line
    line = _one_line(capsys, main, ["compare-results", "--against", str(tmp_path / "nowhere"), "smollm2"])
    assert str(tmp_path / "nowhere") in line and "neither a directory nor a git revision" in line
    line = _one_line(capsys, main, ["quantize", "--study", "smollm2", "--profile", "smoke",
                                    "--only", "Q9_9", "--quiet"])
    assert "--only names quant(s) not in profile 'smoke'" in line and "Q9_9" in line
    line = _one_line(capsys, main, ["bench", "--study", "smollm2", "--profile", "smoke", "--models", "Q4_0=/x"])
    assert line == "error: silentzone bench: --models needs reference=<GGUF or HF dir>"


# ---- quant failures: only the method's declared failures become failed rows ----------------------

@pytest.fixture()
def toy(tmp_path):
    """The smoke study, a stand-in reference (nothing is built: the builder is replaced) and a root."""
    from silentzone.config import load
    hf = tmp_path / "ref" / "hf"
    hf.mkdir(parents=True)
    ref = SimpleNamespace(name="toyref", dtype="float32", hf_dir=hf, gguf=tmp_path / "ref" / "model.gguf",
                          root=tmp_path / "ref")
    return load(CONFIGS / "smollm2.yaml", "smoke"), ref, tmp_path / "quants"


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*")) if root.exists() else []


@pytest.mark.parametrize("exc", [TypeError("_build() got an unexpected keyword argument 'x'"),
                                 NameError("name 'recipe' is not defined"), AttributeError("no .gguf"),
                                 ImportError("no module named llmcompressor"), KeyError("type")],
                         ids=lambda e: type(e).__name__)
def test_a_bug_in_a_builder_propagates_and_is_no_row(toy, monkeypatch, exc):
    import silentzone.quantize as Q
    study, ref, root = toy

    def broken(*a, **k):
        raise exc
    monkeypatch.setattr(Q, "_build", broken)
    with pytest.raises(type(exc)):
        Q.make_quant(study, study.quant("Q8_0"), ref, root=root)
    with pytest.raises(type(exc)):  # the cohort stops too: no "failed" row hides it
        Q.make_cohort(study, only=["Q8_0"], root=root, reference=ref, write=False, progress=False)
    assert not [n for n in _leftovers(root) if ".tmp-" in n or n.startswith("Q8_0-")]


@pytest.mark.parametrize("exc,reason", [
    (RuntimeError("llama-quantize failed (exit 1): | this quantization requires an imatrix!"),
     "RuntimeError: llama-quantize failed (exit 1): | this quantization requires an imatrix!"),
    (ValueError("group size 128 does not divide 576"), "ValueError: group size 128 does not divide 576"),
    (AssertionError("bad shape"), "AssertionError: bad shape"),
])
def test_a_library_failure_is_a_failed_row(toy, monkeypatch, exc, reason):
    import silentzone.quantize as Q
    study, ref, root = toy

    def failing(*a, **k):
        raise exc
    monkeypatch.setattr(Q, "_build", failing)
    row = Q.make_quant(study, study.quant("Q4_0"), ref, root=root)
    assert (row["status"], row["reason"], row["quant_id"]) == ("failed", reason, "Q4_0")
    assert _leftovers(root) == ["toyref"]  # nothing kept: the next run tries again


def test_a_non_finite_check_is_a_failed_row(toy, monkeypatch):
    """Our own check (QuantFailed) after a build that worked."""
    import silentzone.quantize as Q
    from silentzone.quantize.failures import QuantFailed
    study, ref, root = toy
    monkeypatch.setattr(Q, "_build", lambda tmp, *a, **k: {"info": None, "nbytes": 1, "sha256": "0" * 64})

    def non_finite(*a, **k):
        raise QuantFailed("non-finite logits at 3 of 40 positions")
    monkeypatch.setattr(Q, "_check", non_finite)
    row = Q.make_quant(study, study.quant("Q2_K"), ref, root=root)
    assert row["status"] == "failed"
    assert row["reason"] == "QuantFailed: non-finite logits at 3 of 40 positions"
