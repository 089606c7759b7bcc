"""The layout shows the architecture, and the code keeps to it (read from the source, with ``ast``).

- production (``routerlab/*.py``) imports neither ``routerlab.data`` nor ``routerlab.workbench``;
  ``routerlab.data`` never imports ``routerlab.workbench``; only the CLI sits on top of all three;
- no import circle between routerlab modules (imports inside functions count too);
- no private name (``_x``) imported from another module;
- no state parked on another module's objects through ``__dict__``;
- every error class is exported from ``routerlab`` and drawn in the error tree of ``routerlab.errors``.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import routerlab
from routerlab import errors

PKG = Path(routerlab.__file__).resolve().parent
TOP = {"routerlab.cli", "routerlab.__main__"}


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = p.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, names, line) for every ``import``/``from ... import`` of a routerlab module in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("routerlab"):
            found.append((node.module, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("routerlab")]
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        for target, names, _ in _imports(p):
            for name in names or [""]:
                sub = f"{target}.{name}"
                dep = sub if sub in mods else target
                if dep != m and dep in mods:
                    graph[m].add(dep)
    return graph


def _room(module: str) -> str:
    if module in TOP:
        return "top"
    if module.startswith("routerlab.workbench"):
        return "workbench"
    if module.startswith("routerlab.data"):
        return "data"
    return "production"


def test_arrows_point_down() -> None:
    allowed = {
        "production": {"production"},
        "data": {"production", "data"},
        "workbench": {"production", "data", "workbench"},
        "top": {"production", "data", "workbench", "top"},
    }
    bad = [(m, d) for m, deps in _graph().items() for d in deps if _room(d) not in allowed[_room(m)]]
    assert bad == []


def test_no_import_circles() -> None:
    graph = _graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if d in ("routerlab",):  # the package root re-exports; importing it is not an edge back
                continue
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d) :] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert cycles == []


def test_the_package_root_imports_only_production() -> None:
    assert all(_room(d) == "production" for d in _graph()["routerlab"])


def test_no_private_names_imported_across_modules() -> None:
    bad = [
        f"{p.relative_to(PKG.parent)}:{line} imports {name} from {mod}"
        for p in _modules().values()
        for mod, names, line in _imports(p)
        for name in names
        if name.startswith("_") and name != "__version__"
    ]
    assert bad == []


def test_no_state_parked_through_dunder_dict() -> None:
    bad = [str(p) for p in _modules().values() if ".__dict__[" in p.read_text() or "__dict__.get(" in p.read_text()]
    assert bad == []


def test_every_error_is_exported_and_drawn_in_the_tree() -> None:
    classes = [
        c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.RouterlabError)
    ]  # fmt: skip
    assert len(classes) > 20
    doc = errors.__doc__ or ""
    for c in classes:
        assert getattr(routerlab, c.__name__, None) is c, f"{c.__name__} is not exported from routerlab"
        assert c.__name__ in doc, f"{c.__name__} is missing from the tree in routerlab.errors' docstring"
