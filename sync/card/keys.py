"""Card keys: master keys, per-card diversification (NXP AN10922 style) and keystore files.

Every key on a card is derived from a 16-byte AES master key and the card's UID::

    K = AES-CMAC(master, 01 ‖ purpose ‖ UID ‖ campus id)          (AN10922 §2.2 style)

and truncated to 6 bytes for the MIFARE Classic (Crypto1) sector keys.  One card's keys,
even if read out of a card, open no other card.

=============  ===================================================  =========================
master         used for                                             held by
=============  ===================================================  =========================
``id_read``    key A of the identity sectors 1-3 (read)             server, desk/kiosk, POS, gate
``id_write``   key B of the identity sectors (write)                server, desk/kiosk
``ctr_read``   key A of the counter sector 4 (read only)            server, desk/kiosk
``ctr_write``  key B of the counter sector 4 (read and write)        server, desk/kiosk, POS
``ctr_mac``    MAC of each counter slot                             server, desk/kiosk, POS
``pin``        salt of the consumption-password verifier (R5)       server, desk/kiosk, POS
``tag_read``   key A of the proof-tag sector 5 (kiosk card proofs)  server, desk/kiosk
issuer key     Ed25519 signature over identity ‖ verifier ‖ UID     server (private), all (public)
=============  ===================================================  =========================

A POS can read identities and keep the counters, but it cannot write an identity, and since
identities are *signed* by the issuer (the central server), not MACed with a shared key, no
terminal can forge a card.  Keystores are JSON files written with mode 0600; loading one that
others can read is refused.  No key is ever logged (``repr`` shows only names).
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import algorithms

from sync.crypto import SigningKey, VerifyKey, b64d, b64e
from sync.errors import ConfigError
from sync.files import write_private

FORMAT = "ykt-card-keystore"
MASTERS = ("id_read", "id_write", "ctr_read", "ctr_write", "ctr_mac", "pin", "tag_read")
ROLE_MASTERS: dict[str, tuple[str, ...]] = {
    "server": MASTERS,
    "desk": MASTERS,
    "kiosk": MASTERS,
    "pos": ("id_read", "ctr_write", "ctr_mac", "pin"),
    "gate": ("id_read",),
}
PURPOSE = {name: i + 1 for i, name in enumerate(MASTERS)}


def aes_cmac(key: bytes, message: bytes) -> bytes:
    c = cmac.CMAC(algorithms.AES(key))
    c.update(message)
    return c.finalize()


@dataclass(repr=False)
class Keystore:
    campus_id: str
    role: str
    masters: dict[str, bytes]
    issuer_public: VerifyKey
    issuer: SigningKey | None = None
    key_version: int = 1
    _cache: dict[tuple[str, bytes], bytes] = field(default_factory=dict)

    def __repr__(self) -> str:  # never the keys themselves
        return (
            f"Keystore(role={self.role!r}, campus={self.campus_id!r}, keys={sorted(self.masters)})"
        )

    # -- derivation -----------------------------------------------------------------------
    def has(self, name: str) -> bool:
        return name in self.masters

    def derive(self, name: str, uid: bytes) -> bytes:
        """The 16-byte diversified key ``name`` of the card ``uid``."""
        hit = self._cache.get((name, uid))
        if hit is not None:
            return hit
        try:
            master = self.masters[name]
        except KeyError:
            raise ConfigError(f"this {self.role} keystore does not hold the {name} key") from None
        out = aes_cmac(master, bytes([0x01, PURPOSE[name]]) + uid + self.campus_id.encode())
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[(name, uid)] = out
        return out

    def sector_key(self, name: str, uid: bytes) -> bytes:
        """A 6-byte MIFARE Classic sector key."""
        return self.derive(name, uid)[:6]

    # -- roles and files ------------------------------------------------------------------
    @classmethod
    def generate(cls, campus_id: str) -> Keystore:
        issuer = SigningKey.generate()
        return cls(
            campus_id=campus_id,
            role="server",
            masters={m: os.urandom(16) for m in MASTERS},
            issuer_public=issuer.public,
            issuer=issuer,
        )

    def for_role(self, role: str) -> Keystore:
        """What a terminal of ``role`` may hold (never the issuer's private key)."""
        if role not in ROLE_MASTERS or role == "server":
            raise ConfigError(
                f"keystores are exported for {', '.join(r for r in ROLE_MASTERS if r != 'server')}"
            )
        missing = [m for m in ROLE_MASTERS[role] if m not in self.masters]
        if missing:
            raise ConfigError(f"this keystore cannot make a {role} keystore (lacks {missing})")
        return Keystore(
            campus_id=self.campus_id,
            role=role,
            masters={m: self.masters[m] for m in ROLE_MASTERS[role]},
            issuer_public=self.issuer_public,
            key_version=self.key_version,
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "format": FORMAT,
            "version": 1,
            "campus_id": self.campus_id,
            "role": self.role,
            "key_version": self.key_version,
            "issuer_public": self.issuer_public.to_b64(),
            "masters": {k: v.hex() for k, v in sorted(self.masters.items())},
        }
        if self.issuer is not None:
            d["issuer_private"] = b64e(self.issuer.to_seed())
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str = "keystore") -> Keystore:
        try:
            if d["format"] != FORMAT or d["version"] != 1:
                raise ConfigError(f"{where} is not a version 1 ykt card keystore")
            masters = {str(k): bytes.fromhex(v) for k, v in d["masters"].items()}
            if any(k not in MASTERS or len(v) != 16 for k, v in masters.items()):
                raise ConfigError(f"{where}: master keys are 16 bytes of hex named {MASTERS}")
            issuer = (
                SigningKey.from_seed(b64d(d["issuer_private"])) if "issuer_private" in d else None
            )
            return cls(
                campus_id=str(d["campus_id"]),
                role=str(d["role"]),
                masters=masters,
                issuer_public=VerifyKey.from_b64(d["issuer_public"]),
                issuer=issuer,
                key_version=int(d.get("key_version", 1)),
            )
        except ConfigError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"{where} is damaged: {exc.__class__.__name__}") from None

    def save(self, path: Path) -> None:
        """Write mode 0600 (before any key byte goes in), atomically."""
        path.parent.mkdir(parents=True, exist_ok=True)
        write_private(path, json.dumps(self.to_dict(), indent=2).encode())

    @classmethod
    def load(cls, path: Path) -> Keystore:
        try:
            st = path.stat()
        except FileNotFoundError:
            raise ConfigError(f"no card keystore at {path}") from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"card keystore {path} is open to other users (mode {stat.S_IMODE(st.st_mode):o}); "
                f"chmod 600 {path}"
            )
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot read card keystore {path}: {exc.__class__.__name__}"
            ) from exc
        return cls.from_dict(data, str(path))
