"""The notebooks as papermill sees them: every parameter parsed.

The run_notebook fixture's time limit (tests/conftest.py) has no test of its own: firing SIGALRM
into a running papermill left CPython's AST compiler in a broken state ("AST constructor recursion
depth mismatch" at the session's end), so it is a guard for a hang only, never triggered on purpose."""

from __future__ import annotations

import ast

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
