"""The package's structure, read statically (ast): every import, top-level and function-local alike.

- no import cycle among silentzone's modules, nor among its rooms (subpackages and top-level
  modules: quantize -> fidelity -> quantize is a loop even when no single module closes it);
- `analysis` is a pure library: it imports nothing of silentzone;
- no module, script or notebook imports another module's private (underscore) name, and a private
  module only from inside its own package;
- no code branches on the engine (`m.kind == "llama.cpp"`, isinstance of an engine's class) outside
  silentzone/backends/: what differs between engines is a method of the model.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("silentzone", "analysis")
ENGINES = {"llama.cpp", "transformers"}
ENGINE_CLASSES = {"LlamaCppModel", "HFModel"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Module name -> file, for every module of the project's packages."""
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _base(mod: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = mod.split(".") if is_pkg else mod.split(".")[:-1]
    parts = parts[:len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def imports(tree: ast.AST, mod: str = "", is_pkg: bool = False, known=()) -> list[tuple[str, str | None, int]]:
    """(module, name taken from it or None, line) for every import in `tree`, at any depth.
    `from pkg import sub`, where pkg.sub is a known module, is an import of pkg.sub."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            src = _base(mod, is_pkg, node)
            for a in node.names:
                sub = f"{src}.{a.name}"
                out.append((sub, None, node.lineno) if sub in known else (src, a.name, node.lineno))
    return out


def graph() -> dict[str, set[str]]:
    """Module -> the project's modules it imports."""
    mods = modules()
    g = {}
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        g[mod] = {m for m, _, _ in imports(tree, mod, path.name == "__init__.py", mods)
                  if m in mods and m != mod}
    return g


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `g` as [a, b, ..., a], or None (depth-first, without recursion)."""
    state = dict.fromkeys(g, 0)  # 0 unseen, 1 on the path, 2 done
    for start in sorted(g):
        if state[start]:
            continue
        state[start] = 1
        path, stack = [start], [iter(sorted(g[start]))]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt, 2) == 1:
                return path[path.index(nxt):] + [nxt]
            elif state.get(nxt) == 0:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(g[nxt])))
    return None


def room(mod: str) -> str:
    """silentzone.fidelity.score -> silentzone.fidelity; silentzone.paths -> silentzone.paths."""
    return ".".join(mod.split(".")[:2])


def test_no_import_cycle_among_modules():
    g = {m: e for m, e in graph().items() if m.split(".")[0] == "silentzone"}
    cycle = find_cycle(g)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_import_loop_among_rooms():
    """The command line (silentzone.cli) dispatches to every stage's own cli and stands above them."""
    g: dict[str, set[str]] = {}
    for m, edges in graph().items():
        if m.startswith("silentzone.") and m != "silentzone.cli":
            g.setdefault(room(m), set()).update(room(e) for e in edges
                                                 if room(e) != room(m) and e != "silentzone.cli")
    cycle = find_cycle(g)
    assert cycle is None, "import loop between rooms: " + " -> ".join(cycle)


def test_analysis_imports_nothing_of_silentzone():
    bad = [f"{m} imports {e}" for m, edges in graph().items() if m.split(".")[0] == "analysis"
           for e in edges if e.split(".")[0] == "silentzone"]
    assert bad == []


def notebook_cells():
    """(notebook and cell, code) of every code cell of notebooks/*.ipynb, magics blanked."""
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for i, cell in enumerate(json.loads(nb.read_text())["cells"]):
            if cell["cell_type"] == "code":
                lines = "".join(cell["source"]).splitlines()
                yield f"{nb.name} cell {i}", "\n".join("" if ln.lstrip().startswith(("%", "!")) else ln
                                                       for ln in lines)


def _sources():
    """(where, module name, is a package, source) of every module, script and notebook cell."""
    mods = modules()
    out = [(str(p.relative_to(ROOT)), m, p.name == "__init__.py", p.read_text()) for m, p in mods.items()]
    for d in ("bench", "perf", "scripts"):
        out += [(str(p.relative_to(ROOT)), "", False, p.read_text()) for p in sorted((ROOT / d).rglob("*.py"))
                if (ROOT / d).is_dir()]
    return out + [(where, "", False, src) for where, src in notebook_cells()]


def private_imports(where: str, mod: str, is_pkg: bool, src: str, known) -> list[str]:
    """Imports in `src` of another module's private name, or of a private module from outside its
    package (`mod` is the importer, "" for a script or notebook)."""
    bad = []
    for target, name, line in imports(ast.parse(src), mod, is_pkg, known):
        parts = target.split(".")
        if parts[0] not in PACKAGES:
            continue
        for i, p in enumerate(parts):  # silentzone._native: private to silentzone
            owner = ".".join(parts[:i])
            if p.startswith("_") and not p.startswith("__") and not (mod + ".").startswith(owner + "."):
                bad.append(f"{where}:{line} imports {target}")
        if name and name.startswith("_") and not name.startswith("__") and target != mod:
            bad.append(f"{where}:{line} imports {target}.{name}")
    return bad


def test_no_private_name_is_imported_from_another_module():
    known = modules()
    bad = [b for where, mod, is_pkg, src in _sources() for b in private_imports(where, mod, is_pkg, src, known)]
    assert bad == []


def engine_branches(src: str) -> list[int]:
    """Lines comparing something with an engine's name, or asking for an engine's class."""
    lines = []
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq))
                                                 for op in node.ops):
            if any(isinstance(x, ast.Constant) and x.value in ENGINES for x in [node.left, *node.comparators]):
                lines.append(node.lineno)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("isinstance", "type"):
            names = {n.id if isinstance(n, ast.Name) else getattr(n, "attr", None)
                     for a in node.args[1:] for n in ast.walk(a)}
            if names & ENGINE_CLASSES:
                lines.append(node.lineno)
    return lines


def test_no_engine_branch_outside_backends():
    bad = [f"{where}:{line}" for where, mod, _, src in _sources()
           if not mod.startswith("silentzone.backends") for line in engine_branches(src)]
    assert bad == []


def test_the_checks_see_what_they_guard():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    tree = ast.parse("def f():\n    from ..x import _y\n")
    assert imports(tree, "silentzone.p.q") == [("silentzone.x", "_y", 2)]
    known = {"silentzone._native": None, "silentzone.fidelity._triton": None}
    assert private_imports("f", "silentzone.fidelity.kernels", False, "from ._triton import row_stats", known) == []
    assert private_imports("f", "silentzone.bench.run", False, "from ..fidelity import _triton", known)
    assert private_imports("nb", "", False, "from silentzone.bench.cli import _models", known)
    assert engine_branches('if m.kind == "llama.cpp":\n    pass\n') == [1]
    assert engine_branches('x = "transformers" != b.kind\nok = isinstance(m, HFModel)\n') == [1, 2]
    assert engine_branches('if task.kind == "gen":\n    pass\n') == []
