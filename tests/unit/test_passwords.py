"""sync.passwords: scrypt hashes of the query and consumption passwords (R4, R5)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.passwords import MAX_LOG2_N, MIN_LOG2_N, hash_password, verify_password

CHEAP = MIN_LOG2_N


def test_hash_verifies_and_only_the_right_password() -> None:
    h = hash_password("013052", log2_n=CHEAP)
    assert verify_password("013052", h)
    assert not verify_password("013053", h)
    assert not verify_password("", h)
    assert not verify_password("0130520", h)


def test_hash_format_and_no_plain_text() -> None:
    h = hash_password("013052", log2_n=CHEAP)
    scheme, cost, r, p, salt, dk = h.split("$")
    assert (scheme, cost, r, p) == ("scrypt", str(CHEAP), "8", "1")
    assert "013052" not in h
    assert salt and dk


def test_salted_every_time() -> None:
    a, b = hash_password("013052", log2_n=CHEAP), hash_password("013052", log2_n=CHEAP)
    assert a != b
    assert verify_password("013052", a) and verify_password("013052", b)


def test_fixed_salt_is_deterministic() -> None:
    salt = bytes(16)
    assert hash_password("101305", log2_n=CHEAP, salt=salt) == hash_password(
        "101305", log2_n=CHEAP, salt=salt
    )


def test_cost_is_part_of_the_hash() -> None:
    """A server can raise the cost for new hashes while old ones still verify."""
    old, new = hash_password("013052", log2_n=CHEAP), hash_password("013052", log2_n=CHEAP + 1)
    assert old.split("$")[1] != new.split("$")[1]
    assert verify_password("013052", old) and verify_password("013052", new)


@pytest.mark.parametrize("cost", [0, 4, MIN_LOG2_N - 1, MAX_LOG2_N + 1])
def test_costs_that_could_not_verify_are_refused(cost: int) -> None:
    """A hash made at a cost verify_password refuses would lock every card holder out."""
    with pytest.raises(ValueError):
        hash_password("013052", log2_n=cost)


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "x",
        "scrypt",
        "scrypt$10$8$1$AAAA$",
        "scrypt$10$8$1$!!!$!!!",
        "scrypt$9$8$1$AAAA$AAAA",
        "scrypt$21$8$1$AAAA$AAAA",
        "scrypt$ten$8$1$AAAA$AAAA",
        "scrypt$10$0$1$AAAA$AAAA",
        "scrypt$10$8$0$AAAA$AAAA",
        "scrypt$10$-8$1$AAAA$AAAA",
        "argon2$10$8$1$AAAA$AAAA",
        "scrypt$10$8$1$AAAA$AAAA$extra",
    ],
)
def test_malformed_hash_never_verifies_and_never_raises(stored: str) -> None:
    assert verify_password("013052", stored) is False


def test_a_hash_edited_in_its_digest_fails() -> None:
    h = hash_password("013052", log2_n=CHEAP)
    head, dk = h.rsplit("$", 1)
    flipped = ("B" if dk[0] != "B" else "C") + dk[1:]
    assert not verify_password("013052", f"{head}${flipped}")


@settings(max_examples=25, deadline=None)
@given(st.text(max_size=12))
def test_any_text_hashes_and_verifies(pw: str) -> None:
    try:
        pw.encode()
    except UnicodeEncodeError:
        return
    h = hash_password(pw, log2_n=CHEAP, salt=b"0123456789abcdef")
    assert verify_password(pw, h)
    assert not verify_password(pw + "0", h)
