"""Files that hold secrets (keys, tokens, the phone's wallet): written whole or not at all, and
the data directories that hold them: readable by their owner only, whatever the umask
(docs/security.md, "What a stolen terminal gives an attacker")."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)


def private_dir(path: Path) -> Path:
    """Make ``path`` (with its parents) a directory only its owner can enter (0700), and take
    group and other permissions off every file directly in it (keys, databases, tokens made
    before, or under a lax umask).  A file of another owner is left alone, with a warning."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    for entry in os.scandir(path):
        if not entry.is_file(follow_symlinks=False):
            continue
        mode = entry.stat(follow_symlinks=False).st_mode
        if mode & 0o077:
            try:
                os.chmod(entry.path, stat.S_IMODE(mode) & 0o700)
            except OSError as exc:
                log.warning("cannot make %s private: %s", entry.path, exc)
    return path


def private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 when it does not exist; take group and other
    permissions off it when it does (a database before SQLite opens it: SQLite gives its
    -wal and -shm files the database file's mode)."""
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o600)
    try:
        mode = os.fstat(fd).st_mode
        if mode & 0o077:
            try:
                os.fchmod(fd, stat.S_IMODE(mode) & 0o700)
            except OSError as exc:
                log.warning("cannot make %s private: %s", path, exc)
    finally:
        os.close(fd)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file beside it, synced, then renamed
    over it), mode 0600 before the first byte goes in."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # a temporary file left by a crash keeps the mode it had
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
