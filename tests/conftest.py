from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import PosProc, ServerProc
from tests.live import Live, open_live


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProc]:
    """A real `ykt server` on loopback with a fresh SQLite database."""
    s = ServerProc(tmp_path / "server").start()
    yield s
    s.stop()


@pytest.fixture
def pos(tmp_path: Path, server: ServerProc) -> Iterator[PosProc]:
    """A real `ykt pos` agent on a simulated reader, enrolled at `server`."""
    p = PosProc(tmp_path / "pos", server, token=server.enroll_token("canteen-1")).start()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """One real `ykt server` shared by a test module whose tests each make their own accounts
    and terminals (starting a server per test would cost a second each)."""
    s = ServerProc(tmp_path_factory.mktemp("server") / "server").start()
    yield s
    s.stop()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    """The real server app on loopback in this process (uvicorn in a thread)."""
    s = open_live(tmp_path / "live")
    yield s
    s.stop()
