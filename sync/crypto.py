"""Ed25519 keys and signatures (``cryptography``; signing and verifying through libsodium,
PyNaCl), and key files.

Private keys are generated where they are used and never leave that machine: the key file is
written with mode 0600 before any byte of the key goes into it.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import threading
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.bindings import crypto_sign, crypto_sign_open, crypto_sign_seed_keypair
from nacl.exceptions import CryptoError

from sync.errors import ProtocolError, SignatureError
from sync.files import write_private


def b64e(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def b64d(s: str) -> bytes:
    try:
        return base64.b64decode(s, validate=True)
    except (ValueError, TypeError) as exc:
        raise ProtocolError("not valid base64") from exc


class SigningKey:
    """An Ed25519 private key.  :meth:`sign` runs in libsodium (PyNaCl): 21 µs against 33 µs
    in ``cryptography`` here, on every journal append (docs/benchmarks.md); Ed25519 is
    deterministic, so the signature is the same bytes either way (tests/unit/test_crypto.py)."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self._sodium = crypto_sign_seed_keypair(self.to_seed())[1]

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        """A deterministic key from 32 bytes (tests and simulators with a seed)."""
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def sign(self, message: bytes) -> bytes:
        return crypto_sign(message, self._sodium)[:64]  # signature ‖ message

    def to_seed(self) -> bytes:
        """The 32-byte private seed (for a key kept inside a 0600 file of its own, like the
        simulated phone's wallet)."""
        return self._key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    @functools.cached_property
    def public(self) -> VerifyKey:
        """The public key (made once: the feed, every journal check and code use it)."""
        return VerifyKey(self._key.public_key())

    def save(self, path: Path) -> None:
        """Write the key as PKCS#8 PEM, mode 0600, atomically."""
        pem = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_private(path, pem)

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise ProtocolError(f"{path} is not an Ed25519 private key") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ProtocolError(f"{path} is not an Ed25519 private key")
        return cls(key)


class VerifyKey:
    """An Ed25519 public key.  :meth:`verify` and :meth:`ok` run in libsodium (PyNaCl): 54 µs
    against 104 µs in ``cryptography`` here, on every signed request, record and card the
    server or a terminal checks (docs/benchmarks.md).  libsodium is the stricter of the two:
    besides what both refuse, it refuses signatures under small-order keys, which no key made
    here is (tests/unit/test_crypto.py)."""

    def __init__(self, key: Ed25519PublicKey) -> None:
        self._key = key
        self._raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @classmethod
    def from_bytes(cls, raw: bytes) -> VerifyKey:
        if len(raw) != 32:
            raise ProtocolError("an Ed25519 public key is 32 bytes")
        return cls(Ed25519PublicKey.from_public_bytes(raw))

    @classmethod
    def from_b64(cls, text: str) -> VerifyKey:
        return cls.from_bytes(b64d(text))

    def to_bytes(self) -> bytes:
        return self._raw

    def to_b64(self) -> str:
        return b64e(self.to_bytes())

    def verify(self, signature: bytes, message: bytes) -> None:
        """Raise :class:`SignatureError` unless ``signature`` signs ``message``."""
        if not self.ok(signature, message):
            raise SignatureError("signature does not verify")

    def ok(self, signature: bytes, message: bytes) -> bool:
        # libsodium takes the signature and the message as one string: the signature must be
        # exactly 64 bytes, or its end would be read as the message's start
        if len(signature) != 64:
            return False
        try:
            crypto_sign_open(bytes(signature) + bytes(message), self._raw)
        except (CryptoError, ValueError, TypeError):
            return False
        return True

    def ok_remembered(self, signature: bytes, message: bytes) -> bool:
        """:meth:`ok`, for what is checked again and again (a card's signed identity, at every
        tap): a signature found good is remembered (process-wide, the last
        :data:`REMEMBERED` of them, by this key, the signature and the message's SHA-256) and
        not worked out again.  Only good answers are kept, so no input can make a bad
        signature pass; Ed25519 verification is a pure function of the three."""
        if len(signature) != 64:  # fixed, so key ‖ signature ‖ message reads one way only
            return False
        seen = hashlib.sha256(self._raw + bytes(signature) + bytes(message)).digest()
        if seen in _GOOD:
            return True
        if not self.ok(signature, message):
            return False
        with _GOOD_LOCK:
            if len(_GOOD) >= REMEMBERED:
                del _GOOD[next(iter(_GOOD))]  # the oldest
            _GOOD[seen] = None
        return True


#: how many good signatures :meth:`VerifyKey.ok_remembered` keeps (about 100 bytes each)
REMEMBERED = 16_384
_GOOD: dict[bytes, None] = {}
_GOOD_LOCK = threading.Lock()
