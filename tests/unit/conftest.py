"""The unit layer (``make test-fast``): no processes, no network sockets, no pcscd, no
PostgreSQL.  Every test here runs with process starts and socket connects/binds refused, so a
test that needs them fails at once and belongs in ``tests/`` (the layer above)."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

try:  # pyzbar finds libzbar at import with ctypes.util.find_library, which runs ldconfig
    import pyzbar.pyzbar  # noqa: F401 - imported here, before the guard, for that reason
except ImportError:  # an optional library: the tests that need it say so
    pass


def _refuse(what: str) -> Any:
    def refuse(*args: Any, **kw: Any) -> Any:
        raise AssertionError(
            f"a unit test may not {what} (tests/unit/conftest.py): move it to tests/, "
            "the layer with processes and sockets"
        )

    return refuse


@pytest.fixture(autouse=True)
def _no_processes_no_sockets(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(subprocess.Popen, "__init__", _refuse("start a process"))
    monkeypatch.setattr(os, "fork", _refuse("fork"))
    monkeypatch.setattr(os, "posix_spawn", _refuse("start a process"))
    for name in ("connect", "connect_ex", "bind"):
        monkeypatch.setattr(socket.socket, name, _refuse(f"{name} a socket"))
    yield
