"""The keys every server process shares, kept in the database's settings with copies in the
data directory for the operator: the campus card keys (the server is the card issuer) and the
phone-code issuer (docs/codes.md).  Processes starting together agree on one set; files in
DATA that hold other keys are refused (a configuration error), never replaced.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sync.card.keys import MASTERS, Keystore
from sync.crypto import SigningKey, VerifyKey
from sync.db import Database, Tx
from sync.errors import ConfigError
from sync.files import write_private

ISSUER_KID = 1


def put_setting(tx: Tx, key: str, value: Any) -> None:
    tx.execute(
        "INSERT INTO settings (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, json.dumps(value, ensure_ascii=False)),
    )


@dataclass(frozen=True)
class Issuer:
    kid: int
    key: SigningKey
    proof_secret: bytes

    def public_keys(self) -> dict[int, VerifyKey]:
        return {self.kid: self.key.public}


def code_issuer(data: Path, db: Database) -> Issuer:
    """The campus's phone-code issuer, kept in the database (settings ``code_issuer``) so
    that every server process sharing it signs with the same key; the files in DATA are the
    operator's copies, and the source of keys made before they moved into the database."""
    key_path, secret_path = data / "code-issuer.key", data / "code-proof.secret"
    raw = db.scalar("SELECT value FROM settings WHERE key = 'code_issuer'")
    if raw is not None:  # the usual case; a read works inside a caller's transaction too
        stored = json.loads(raw)
        key = SigningKey.from_seed(base64.b64decode(stored["key"]))
        secret = base64.b64decode(stored["proof_secret"])
        _issuer_files(data, db, key, secret)
        return Issuer(ISSUER_KID, key, secret)
    with db.tx() as tx:  # processes starting together agree on one issuer
        raw = tx.scalar("SELECT value FROM settings WHERE key = 'code_issuer'")
        if raw is not None:
            stored = json.loads(raw)
            key = SigningKey.from_seed(base64.b64decode(stored["key"]))
            secret = base64.b64decode(stored["proof_secret"])
        else:
            key = SigningKey.load(key_path) if key_path.exists() else SigningKey.generate()
            secret = secret_path.read_bytes() if secret_path.exists() else secrets.token_bytes(32)
            put_setting(
                tx,
                "code_issuer",
                {
                    "key": base64.b64encode(key.to_seed()).decode(),
                    "proof_secret": base64.b64encode(secret).decode(),
                },
            )
        _issuer_files(data, db, key, secret)
    return Issuer(ISSUER_KID, key, secret)


def _issuer_files(data: Path, db: Database, key: SigningKey, secret: bytes) -> None:
    """The copies in DATA: written when missing; files with other keys are refused."""
    key_path, secret_path = data / "code-issuer.key", data / "code-proof.secret"
    if key_path.exists() and SigningKey.load(key_path).to_seed() != key.to_seed():
        raise ConfigError(
            f"{key_path} holds another code-issuer key than the database {db.name}: move it away"
        )
    if secret_path.exists() and secret_path.read_bytes() != secret:
        raise ConfigError(
            f"{secret_path} holds another proof secret than the database {db.name}: move it away"
        )
    if not key_path.exists():
        key.save(key_path)
    if not secret_path.exists():
        write_private(secret_path, secret)


def card_keys(data: Path, db: Database, campus_id: str) -> Keystore:
    """The campus card keys (master keys and the issuer key), made on first use and kept in
    the database (so every server process sharing it issues and reads cards with the same
    keys), with a copy in DATA/card-keys.json (mode 0600) for the operator."""
    raw = db.scalar("SELECT value FROM settings WHERE key = 'card_keystore'")
    if raw is not None:  # the usual case; a read works inside a caller's transaction too
        keys = Keystore.from_dict(json.loads(raw), "the database's card keystore")
        if all(m in keys.masters for m in MASTERS):
            _card_keys_file(data, db, keys)
            return keys
    with db.tx() as tx:  # processes starting together agree on one keystore
        raw = tx.scalar("SELECT value FROM settings WHERE key = 'card_keystore'")
        path = data / "card-keys.json"
        if raw is not None:
            keys = Keystore.from_dict(json.loads(raw), "the database's card keystore")
        elif path.exists():  # made before the keys moved into the database: keep them
            keys = Keystore.load(path)
        else:
            keys = Keystore.generate(campus_id)
        missing = [m for m in MASTERS if m not in keys.masters]
        if missing:  # keys added by a later version: made once, kept
            keys.masters.update({m: os.urandom(16) for m in missing})
        if raw is None or missing:
            put_setting(tx, "card_keystore", keys.to_dict())
        _card_keys_file(data, db, keys)
    return keys


def _card_keys_file(data: Path, db: Database, keys: Keystore) -> None:
    """DATA/card-keys.json: written when missing; one with other keys is refused."""
    path = data / "card-keys.json"
    if not path.exists():
        keys.save(path)
        return
    on_file = Keystore.load(path)
    same = on_file.issuer_public.to_b64() == keys.issuer_public.to_b64() and all(
        keys.masters.get(m) == v for m, v in on_file.masters.items()
    )
    if not same:
        raise ConfigError(
            f"{path} holds other card keys than the database {db.name}: "
            "cards issued with them would not be read; move the file away"
        )
    if on_file.masters != keys.masters:
        keys.save(path)
