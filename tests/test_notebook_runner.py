"""The notebooks as papermill sees them: every parameter parsed, and the tests' runner bounded in time."""

from __future__ import annotations

import ast
import time

import nbformat
import pytest

from silentzone.paths import NOTEBOOKS


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_papermill_parses_every_parameter(path, caplog):
    """`papermill --help-notebook` and its "unknown parameter" check read the parameters cell with a
    regex that stops at an `=` in a comment; Python's own parser is the expectation."""
    import papermill as pm
    book = nbformat.read(path, as_version=4)
    cell = next(c for c in book.cells if "parameters" in c.metadata.get("tags", []))
    expected = [n.target.id for n in ast.parse(cell.source).body if isinstance(n, ast.AnnAssign)]
    assert expected, f"{path.name}: no annotated parameters"
    with caplog.at_level("WARNING", logger="papermill"):
        found = list(pm.inspect_notebook(str(path)))
    assert found == expected, f"{path.name}: papermill reads {found}"
    assert not [r for r in caplog.records if "Unable to parse" in r.getMessage()]


def test_a_kernel_that_never_finishes_fails_within_the_limit(tmp_path, run_notebook):
    book = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import time\ntime.sleep(300)")])
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    src = tmp_path / "sleeper.ipynb"
    nbformat.write(book, src)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match=r"^sleeper.ipynb: the kernel did not finish in 8 s$"):
        run_notebook(src, tmp_path / "out.ipynb", limit_s=8)
    assert time.monotonic() - t0 < 60
