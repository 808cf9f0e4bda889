"""Ed25519 signing through libsodium (sync/crypto.py): the same signature bytes as
``cryptography`` makes (Ed25519 is deterministic), verified by the verifying key."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from sync.crypto import SigningKey


@given(seed=st.binary(min_size=32, max_size=32), message=st.binary(max_size=2048))
def test_libsodium_signature_is_the_one_cryptography_makes(seed: bytes, message: bytes) -> None:
    key = SigningKey.from_seed(seed)
    sig = key.sign(message)
    assert sig == Ed25519PrivateKey.from_private_bytes(seed).sign(message)
    assert len(sig) == 64
    assert key.public.ok(sig, message)
    assert not key.public.ok(sig, message + b"!")


def test_generated_keys_sign_and_verify() -> None:
    key = SigningKey.generate()
    assert key.public.ok(key.sign(b"record"), b"record")
    assert SigningKey.from_seed(key.to_seed()).sign(b"record") == key.sign(b"record")
