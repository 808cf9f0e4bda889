"""The POS control API's per-boot token (docs/security.md, "What each terminal holds").

A browser on the terminal may run a foreign page; by DNS rebinding such a page can send
requests to the loopback control API.  So the API checks the ``Host`` header
(:mod:`edge.pos.control`), and every request that changes state carries this token in the
``X-Ykt-Control-Token`` header.  The token is new at each start of the agent; who may use it:

- the screens the agent serves (cashier, customer) get it inside the page, which only a page of
  the agent's own origin can read (the browser's same-origin policy; a rebinding origin fails
  the ``Host`` check before it gets the page);
- the local operator and ``ykt sim``: the agent writes it 0600 to ``DATA/control.token`` and to
  a per-user registry keyed by the control port (``$XDG_RUNTIME_DIR/ykt`` or
  ``/tmp/ykt-<uid>``, a 0700 directory the user owns), where :class:`sim.control.AgentControl`
  finds it from the agent's URL alone.  ``ykt sim … --token-file DATA/control.token`` reads
  the data directory's copy instead (e.g. as root, for an agent run by systemd).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
import tempfile
from pathlib import Path

from sync.files import write_private

log = logging.getLogger(__name__)

HEADER = "X-Ykt-Control-Token"
FILE = "control.token"


def new_token() -> str:
    return secrets.token_urlsafe(32)


def _registry_dir(create: bool) -> Path | None:
    """The per-user registry directory, if it is this user's own and private (0700): another
    user must neither read the tokens in it nor plant a directory to collect them."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    path = Path(base) / ("ykt" if os.environ.get("XDG_RUNTIME_DIR") else f"ykt-{os.getuid()}")
    if create:
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
    try:
        st = path.lstat()
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        log.warning("control token registry %s is not a private directory of this user", path)
        return None
    return path


def registry_path(port: int, create: bool = False) -> Path | None:
    where = _registry_dir(create)
    return None if where is None else where / f"control-{int(port)}.token"


def publish(data: Path, port: int, token: str) -> None:
    """Write the token where the local operator finds it: ``DATA/control.token`` and the
    per-user registry (best effort: a registry that cannot be used is skipped, with a
    warning)."""
    write_private(data / FILE, (token + "\n").encode())
    try:
        path = registry_path(port, create=True)
        if path is not None:
            write_private(path, (token + "\n").encode())
    except OSError as exc:
        log.warning("cannot write the control token registry: %s", exc)


def withdraw(port: int, token: str) -> None:
    """The agent stops: its registry entry goes (unless another agent took the port since)."""
    path = registry_path(port)
    if path is not None and read(path) == token:
        with contextlib.suppress(OSError):
            path.unlink()


def read(path: Path) -> str | None:
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text or None


def find(port: int) -> str | None:
    """The token of the agent on ``port`` from the per-user registry, if there is one."""
    path = registry_path(port)
    return None if path is None else read(path)
