"""The exception trees the errors modules draw in their docstrings are the classes: every ykt
exception is drawn, under its own base class, in the module it is defined in or with that module
named (CONVENTIONS 6: one tree, drawn)."""

from __future__ import annotations

import importlib
import pkgutil
import re
import textwrap

from drivers.errors import YktError

#: the modules whose docstrings draw (a part of) the tree
TREES = ("drivers.errors", "sync.errors", "sync.server.errors", "edge.errors", "sim.errors")
PACKAGES = ("drivers", "sync", "edge", "sim")
#: a drawn class: its depth is the column of its name over 4, a ``(module)`` may follow it
_ENTRY = re.compile(
    r"^(?P<lead>(?:[│ ]   )*(?:[├└]── )?)(?P<name>[A-Z]\w+)(?:\s+\((?P<mod>[\w.]+)\))?"
)


def _all_classes() -> dict[str, type[YktError]]:
    for package in PACKAGES:
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, f"{package}."):
            importlib.import_module(info.name)
    found: dict[str, type[YktError]] = {}
    todo: list[type[YktError]] = [YktError]
    while todo:
        cls = todo.pop()
        assert cls.__name__ not in found, f"two ykt exceptions named {cls.__name__}"
        found[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return found


def _drawn(module: str) -> list[tuple[str, str | None, str]]:
    """(class, parent or None for the root, the module the line names) for each line."""
    doc = importlib.import_module(module).__doc__ or ""
    tree = textwrap.dedent(doc.split("::\n", 1)[1])
    out: list[tuple[str, str | None, str]] = []
    stack: list[str] = []
    for line in tree.splitlines():
        m = _ENTRY.match(line.rstrip())
        if not line.strip() or m is None or (line[0] in "│ " and "──" not in line):
            continue  # a blank or a continuation line
        depth = len(m["lead"]) // 4
        del stack[depth:]
        out.append((m["name"], stack[-1] if stack else None, m["mod"] or module))
        stack.append(m["name"])
    return out


def test_every_drawn_class_is_defined_under_its_drawn_parent() -> None:
    classes = _all_classes()
    for module in TREES:
        for name, parent, where in _drawn(module):
            assert name in classes, f"{module} draws {name}, which is no ykt exception"
            cls = classes[name]
            assert cls.__module__ == where, (
                f"{module} draws {name} in {where}, not {cls.__module__}"
            )
            if parent is not None:
                bases = [b.__name__ for b in cls.__bases__]
                assert parent in bases, f"{module} draws {name} under {parent}; its bases: {bases}"


def test_every_ykt_exception_is_drawn() -> None:
    drawn = {name for module in TREES for name, _parent, _where in _drawn(module)}
    missing = sorted(set(_all_classes()) - drawn)
    assert not missing, f"exceptions no errors module draws: {missing}"
