"""A terminal's identity: enrollment with a one-time token, its key, and ``terminal.json``.

The Ed25519 key is generated here, on the terminal, written 0600 to ``DATA/terminal.key`` and
never sent anywhere; only the public key goes to the server with the enrollment token.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from sync.client import ServerClient
from sync.crypto import SigningKey
from sync.errors import ConfigError, SyncError
from sync.files import private_dir, write_private

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Identity:
    terminal_id: str
    name: str
    role: str
    server: str
    campus_id: str
    tz: str


def _paths(data: Path) -> tuple[Path, Path]:
    return data / "terminal.json", data / "terminal.key"


def load(data: Path) -> tuple[Identity, SigningKey] | None:
    ident_path, key_path = _paths(data)
    if not ident_path.exists():
        return None
    try:
        ident = Identity(**json.loads(ident_path.read_text()))
        key = SigningKey.load(key_path)
    except (OSError, ValueError, TypeError, SyncError) as exc:
        raise ConfigError(f"terminal identity in {data} is damaged: {exc}") from exc
    return ident, key


def state_dir(data: Path) -> None:
    """The terminal's state directory, private whatever the umask (0700, its files 0600): it
    holds the terminal's key, the journal and the cache of holders' data."""
    try:
        private_dir(data)
    except OSError as exc:
        raise ConfigError(f"cannot use {data} as the terminal's state directory: {exc}") from exc


def enroll(data: Path, server: str, token: str, role: str) -> tuple[Identity, SigningKey]:
    """Generate the key, enroll it with the one-time token, and store the identity."""
    state_dir(data)
    ident_path, key_path = _paths(data)
    key = SigningKey.generate()
    client = ServerClient(server)
    try:
        resp = client.enroll(token, key.public.to_b64(), role)
    except SyncError as exc:
        raise ConfigError(f"enrollment at {server} failed: {exc}") from exc
    finally:
        client.close()
    if resp.get("role") != role:
        raise ConfigError(
            f"the token enrolls a {resp.get('role')} terminal, but this is a {role} agent"
        )
    key.save(key_path)
    ident = Identity(
        terminal_id=resp["terminal_id"],
        name=resp["name"],
        role=resp["role"],
        server=server,
        campus_id=resp["campus_id"],
        tz=resp["tz"],
    )
    write_private(ident_path, json.dumps(asdict(ident), indent=2, ensure_ascii=False).encode())
    log.info("enrolled as terminal %s (%s)", ident.terminal_id, ident.name)
    return ident, key


def load_or_enroll(
    data: Path, server: str | None, token: str | None, role: str
) -> tuple[Identity, SigningKey]:
    state_dir(data)
    found = load(data)
    if found is not None:
        ident, key = found
        if token:
            log.info("already enrolled as %s; ignoring --enroll", ident.terminal_id)
        if server and server.rstrip("/") != ident.server.rstrip("/"):
            log.warning("using server %s (enrolled at %s)", server, ident.server)
            ident = Identity(**{**asdict(ident), "server": server})
        return ident, key
    if not token or not server:
        raise ConfigError(
            f"this terminal is not enrolled yet ({data}): pass --server URL and --enroll TOKEN "
            "(make a token with `ykt admin terminal enroll --role "
            f"{role} --name NAME`)"
        )
    return enroll(data, server, token, role)
