"""The one-way layers of docs/architecture.md, checked on every ``make test``: the import-linter
contracts of ``pyproject.toml`` (``lint-imports``, also run by ``make lint``), no module-level
import cycle, nothing outside ``sim/`` and ``tests/`` imports ``sim``, and imports inside
functions only where an optional library needs it."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import grimp
import pytest
from importlinter import configuration
from importlinter.application.use_cases import lint_imports

from tests.helpers import DEV_ONLY, ROOT

PACKAGES = ("drivers", "sync", "edge", "sim", "kiosk_ui")
#: libraries a module imports inside the function that needs them, so that ykt imports and
#: runs without them (the extras of pyproject.toml: camera, serial, pcsc, pg)
OPTIONAL = {
    "cv2",
    "numpy",
    "zxingcpp",
    "pyzbar",
    "serial",
    "psycopg",
    "smartcard",
    "escpos",
    "usb",
    "PIL",
}
#: ykt modules that exist to wrap one optional library (importing them imports it)
OPTIONAL_WRAPPERS = {"sync.db.postgres": "psycopg"}
#: folders that are not ykt's code
NOT_OURS = {".venv", ".git", "build", "dist", ".mypy_cache", ".ruff_cache", ".pytest_cache"}


def _python_files(*tops: str) -> Iterator[Path]:
    roots = [ROOT / t for t in tops] if tops else [ROOT]
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(ROOT).parts
            if not NOT_OURS.intersection(rel) and not rel[0].endswith(".egg-info"):
                yield path


def _imported(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:  # relative: ykt does not use them, and they would hide a package
        return [f"<relative {node.module}>"]
    return [node.module or ""]


def test_import_linter_contracts_hold(capsys: pytest.CaptureFixture[str]) -> None:
    """What ``lint-imports`` (``make lint``) checks, through import-linter's Python API (its
    command-line entry also reconfigures logging, which would disable the loggers of every
    module imported so far for the tests after this one)."""
    configuration.configure()
    ok = lint_imports(config_filename=str(ROOT / "pyproject.toml"), cache_dir=None, no_logo=True)
    assert ok, capsys.readouterr().out


def test_no_module_level_import_cycle() -> None:
    """Tarjan's strongly connected components over the import graph (TYPE_CHECKING imports
    left out: they never run)."""
    graph = grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True, cache_dir=None)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    assert len(graph.modules) > 100
    assert cycles == []


def test_nothing_outside_sim_and_tests_imports_sim() -> None:
    """``edge/cli.py`` may name sim's commands by module path (a string); nothing imports them."""
    offenders = []
    for path in _python_files():
        top = path.relative_to(ROOT).parts[0]
        if top in ("sim", "tests"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for name in _imported(node):
                    if name == "sim" or name.startswith("sim."):
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    assert offenders == []


def test_imports_inside_functions_only_for_optional_libraries() -> None:
    found = []
    for path in _python_files(*PACKAGES):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if not isinstance(node, ast.Import | ast.ImportFrom):
                    continue
                names = _imported(node)
                if isinstance(node, ast.ImportFrom):  # from pkg import module
                    names = [*names, *(f"{node.module}.{a.name}" for a in node.names)]
                if any(n.split(".")[0] in OPTIONAL or n in OPTIONAL_WRAPPERS for n in names):
                    continue
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {names[0]}")
    assert found == [], "import these at the top of the module:\n" + "\n".join(found)


def test_no_dev_only_package_is_imported() -> None:
    """``ykt bench`` and everything else run on a production install
    (tests/test_production_install.py builds one)."""
    found = []
    for path in _python_files(*PACKAGES):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for name in _imported(node):
                    if name.split(".")[0] in DEV_ONLY:
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    assert found == []


def test_the_checks_see_what_they_look_for(tmp_path: Path) -> None:
    """The AST checks above would find an offender (they are not vacuous)."""
    tree = ast.parse("def f():\n    import sync.money\n    from sim import demo\n")
    names = [
        n
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for n in _imported(node)
    ]
    assert names == ["sync.money", "sim"]
