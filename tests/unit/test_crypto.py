"""Ed25519 signing and verifying through libsodium (sync/crypto.py): the same signature bytes
as ``cryptography`` makes (Ed25519 is deterministic), verified as it verifies them."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from sync.crypto import SigningKey, VerifyKey
from sync.errors import SignatureError


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


@given(
    seed=st.binary(min_size=32, max_size=32),
    message=st.binary(max_size=512),
    flip=st.integers(min_value=0, max_value=64 * 8 - 1),
)
def test_verification_agrees_with_cryptography(seed: bytes, message: bytes, flip: int) -> None:
    """libsodium verifies (sync.crypto.VerifyKey) what ``cryptography`` verifies, and refuses a
    signature with any one bit changed, as it does."""
    key = SigningKey.from_seed(seed)
    sig = key.sign(message)
    theirs = Ed25519PrivateKey.from_private_bytes(seed).public_key()
    assert key.public.ok(sig, message)
    key.public.verify(sig, message)
    bad = bytearray(sig)
    bad[flip // 8] ^= 1 << (flip % 8)
    assert not key.public.ok(bytes(bad), message)
    with pytest.raises(InvalidSignature):
        theirs.verify(bytes(bad), message)
    with pytest.raises(SignatureError):
        key.public.verify(bytes(bad), message)


def test_a_signature_of_the_wrong_length_is_refused() -> None:
    """libsodium reads signature ‖ message as one string: a short signature must not borrow
    the message's first bytes, nor a long one lend its last bytes to the message."""
    key = SigningKey.generate()
    message = b"a record of the journal"
    sig = key.sign(message)
    assert not key.public.ok(sig[:63], sig[63:] + message)
    assert not key.public.ok(sig + message[:1], message[1:])
    assert not key.public.ok(b"", message)


def test_a_small_order_public_key_verifies_nothing() -> None:
    """The identity point as a public key: the signature (R = identity, S = 0) holds for every
    message in the bare equation; libsodium refuses it."""
    identity = bytes([1]) + bytes(31)
    forged = identity + bytes(32)
    assert not VerifyKey.from_bytes(identity).ok(forged, b"any message")


def test_a_remembered_signature_is_one_found_good() -> None:
    """``ok_remembered`` (a card's identity, checked at every tap) answers as ``ok`` does,
    the second time from memory, and a signature moved into the message is not taken for the
    remembered one."""
    key = SigningKey.generate()
    message = b"card 2026000123, generation 2"
    sig = key.sign(message)
    for _ in range(2):
        assert key.public.ok_remembered(sig, message)
        assert not key.public.ok_remembered(sig, message + b"!")
        assert not key.public.ok_remembered(sig[:63] + bytes([sig[63] ^ 1]), message)
    assert not key.public.ok_remembered(sig + message[:1], message[1:])
    assert not key.public.ok_remembered(sig[:63], sig[63:] + message)
    assert not SigningKey.generate().public.ok_remembered(sig, message)
