"""The campus card format and keys (pure), and the card application on the simulated MIFARE
Classic 1K in-process (the same emulator pcscd serves through vpcd)."""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.card.mifare_classic import (
    TRANSPORT_CONDITIONS,
    decode_access,
    encode_access,
)
from drivers.errors import CardGone
from sim import cardimage
from sim.cards import encoded_card
from sim.mifare import MifareClassic1K
from sim.reader import SimReader
from sync.card import layout
from sync.card.app import BadSignature, CampusCard
from sync.card.keys import Keystore
from sync.card.layout import Counters, Identity
from sync.errors import CardRefused, ConfigError

KEYS = Keystore.generate("ynart")
POS = KEYS.for_role("pos")
DESK = KEYS.for_role("desk")
UID = bytes.fromhex("04A1B2C3")
IDENT = Identity("10000001", 7, "student", 1, None, "2026-01-01")
VERIFIER = layout.make_verifier(KEYS, 7, "013052", log2n=10)
BLOB = layout.issue_blob(KEYS, UID, IDENT, VERIFIER)

conds = st.tuples(st.integers(0, 1), st.integers(0, 1), st.integers(0, 1))


@given(st.tuples(conds, conds, conds, conds))
def test_access_bits_round_trip(c: tuple) -> None:
    assert decode_access(encode_access(c)) == c


def test_access_bits_known_values() -> None:
    assert encode_access(TRANSPORT_CONDITIONS) == bytes.fromhex("FF0780")
    assert encode_access(layout.ACCESS) == bytes.fromhex("787788")
    assert decode_access(bytes.fromhex("787789")) is None  # inverted copy broken


@given(
    card_no=st.text("0123456789ABCDEFGHIJ-_", min_size=1, max_size=16),
    account=st.integers(0, 2**32 - 1),
    kind=st.sampled_from(["temporary", "student", "staff", "consumer"]),
    gen=st.integers(0, 65535),
    expires=st.none()
    | st.dates().map(lambda d: d.isoformat()).filter(lambda d: "2000" <= d < "2170"),
)
def test_identity_round_trip(
    card_no: str, account: int, kind: str, gen: int, expires: str | None
) -> None:
    ident = Identity(card_no, account, kind, gen, expires, "2026-03-01")
    assert Identity.decode(ident.header(), ident.card_no_block()) == ident


def test_identity_refuses_other_layouts() -> None:
    header = bytearray(IDENT.header())
    header[3] = 9
    with pytest.raises(CardRefused) as e:
        Identity.decode(bytes(header), IDENT.card_no_block())
    assert e.value.code == "bad_layout"
    with pytest.raises(CardRefused) as e:
        Identity.decode(bytes(16), IDENT.card_no_block())
    assert e.value.code == "foreign_card"


@given(
    seq=st.integers(0, 65535),
    spent=st.integers(0, 2**24 - 1),
    taps=st.integers(0, 2**24 - 1),
    tries=st.integers(0, 255),
    offline=st.integers(0, 2**16 - 1),
    version=st.sampled_from([1, 2]),
    flip=st.integers(0, 127),
)
@settings(max_examples=100)
def test_counters_mac_detects_every_bit_flip(
    seq: int, spent: int, taps: int, tries: int, offline: int, version: int, flip: int
) -> None:
    """Both counter record versions, each field at the width its version holds."""
    if version == 1:
        c = Counters(seq, "2026-05-01", spent, taps, tries, 3, version=1)
    else:
        c = Counters(seq & 0xFF, "2026-05-01", spent, taps >> 4, tries & 0xF, 3, offline)
    block = c.encode(POS, UID)
    assert Counters.decode(block, POS, UID) == c
    bad = bytearray(block)
    bad[flip // 8] ^= 1 << (flip % 8)
    assert Counters.decode(bytes(bad), POS, UID) is None
    assert Counters.decode(block, POS, bytes.fromhex("04A1B2C4")) is None  # bound to the UID


@given(st.integers(0, 65535), st.integers(1, 3))
def test_newest_slot_wins_across_wraparound(seq: int, step: int) -> None:
    old, new = Counters(seq), Counters((seq + step) & 0xFFFF)
    assert layout.choose_slot(old, new) == (1, new)
    assert layout.choose_slot(new, old) == (0, new)
    assert layout.choose_slot(None, old) == (1, old)
    with pytest.raises(CardRefused):
        layout.choose_slot(None, None)


def test_keystore_file_is_private_and_roles_are_limited(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "k.json"
    POS.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = Keystore.load(path)
    assert sorted(loaded.masters) == ["ctr_mac", "ctr_write", "id_read", "pin"]
    assert loaded.issuer is None and not loaded.has("id_write")
    assert "masters" not in repr(loaded) and POS.masters["pin"].hex() not in repr(loaded)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        Keystore.load(path)
    with pytest.raises(ConfigError):
        KEYS.for_role("server")
    with pytest.raises(CardRefused):
        layout.issue_blob(POS, UID, IDENT, VERIFIER)  # only the issuer signs


def test_keys_are_diversified_per_card_and_campus() -> None:
    other = Keystore.generate("ynart")
    k1 = KEYS.sector_key("id_read", UID)
    assert len(k1) == 6
    assert k1 != KEYS.sector_key("id_read", bytes.fromhex("04A1B2C4"))
    assert k1 != KEYS.sector_key("ctr_write", UID)
    assert k1 != other.sector_key("id_read", UID)
    assert POS.sector_key("id_read", UID) == k1


# -- the application on the in-process simulated card ----------------------------------------------
def _on_reader(card: MifareClassic1K) -> tuple[SimReader, CampusCard]:
    reader = SimReader("t")
    return reader, CampusCard(reader.present(card), POS)


def test_encode_read_pin_and_counters(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    card = cardimage.new_card(UID)
    reader = SimReader("t")
    CampusCard(reader.present(card), DESK).encode(BLOB)
    app = CampusCard(reader.current_card(), POS)  # type: ignore[arg-type]
    view = app.read()
    assert view.identity == IDENT and view.counters == Counters(1)
    assert app.check_pin(view, "013052") and not app.check_pin(view, "013053")
    app.write_counters(view, view.counters.next(day="2026-01-02", spent_fen=1250, taps=1))
    again = CampusCard(reader.current_card(), POS).read()  # type: ignore[arg-type]
    assert again.counters == Counters(2, "2026-01-02", 1250, 1) and again.slot == 1
    # the trailers now hold this card's own keys; no key ever reached the log
    for name in ("id_read", "id_write", "ctr_write"):
        assert DESK.sector_key(name, UID).hex().upper() not in caplog.text.replace(" ", "")
    assert "** ** ** ** ** **" in caplog.text


def test_a_new_card_starts_with_the_counters_the_issuer_carries() -> None:
    """R6 across a reissue: the issuer's tracked amount of the day goes onto the new card."""
    card = cardimage.new_card(UID)
    reader = SimReader("t")
    carried = Counters.carried({"day": "2026-01-02", "spent_fen": 4500})
    CampusCard(reader.present(card), DESK).encode(BLOB, counters=carried)
    view = CampusCard(reader.current_card(), POS).read()  # type: ignore[arg-type]
    assert view.counters == Counters(1, "2026-01-02", 4500)
    assert Counters.carried(None) == Counters() == Counters.carried({"day": None})
    assert Counters.carried({"day": "", "spent_fen": 99}) == Counters()  # no day: nothing


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ([], "must be an object"),
        ({"day": 20260102}, "day must be a date"),
        ({"day": "2026-13-40", "spent_fen": 1}, "month must be in 1..12"),
        ({"day": "1999-12-31", "spent_fen": 1}, "outside 2000-01-01"),
        ({"day": "2026-01-02", "spent_fen": -1}, "spent_fen must be"),
        ({"day": "2026-01-02", "spent_fen": True}, "spent_fen must be"),
        ({"day": "2026-01-02", "spent_fen": 2**24}, "spent_fen must be"),
    ],
)
def test_carried_counters_that_a_card_cannot_hold_are_refused(given: object, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        Counters.carried(given)


@pytest.mark.parametrize("mode", ["before", "after", "partial"])
def test_encode_survives_being_pulled_away_at_every_step(mode: str) -> None:
    bricked = 0
    for n in range(1, 26):
        card = cardimage.new_card(UID)
        reader = SimReader("t")
        card.tear_after(n, mode)
        try:
            CampusCard(reader.present(card), DESK).encode(BLOB)
        except CardGone:
            pass
        card.tear_after(None)
        try:
            CampusCard(reader.present(card), DESK).encode(BLOB)  # the desk runs it again
        except CardRefused as exc:
            # only a trailer written half (its access bits torn apart) ruins a sector, as on
            # a real MIFARE Classic; the desk is told so clearly
            assert mode == "partial" and "not a blank card" in exc.reason
            bricked += 1
            continue
        assert CampusCard(reader.current_card(), POS).read().identity == IDENT  # type: ignore[arg-type]
    assert bricked <= 4


def test_counter_write_torn_at_any_point_keeps_old_or_new() -> None:
    for mode in ("before", "partial", "after"):
        card = encoded_card(UID, _b64(BLOB), KEYS)
        reader, app = _on_reader(card)
        view = app.read()
        old = view.counters
        new = old.next(spent_fen=500, taps=1)
        card.tear_after(0, mode)
        with pytest.raises(CardGone):
            app.write_counters(view, new)
        card.tear_after(None)
        got = CampusCard(reader.present(card), POS).read().counters
        assert got == (new if mode == "after" else old)


def test_refusals_clone_altered_foreign_damaged() -> None:
    other_uid = bytes.fromhex("04DEADBE")
    # same data on another UID, trailers copied: the campus keys of that UID do not open it
    blocks = [bytearray(b) for b in encoded_card(UID, _b64(BLOB), KEYS).blocks]
    clone = MifareClassic1K(other_uid, blocks)
    with pytest.raises(CardRefused) as e:
        _on_reader(clone)[1].read()
    assert e.value.code == "foreign_card"
    # same data on another UID with that UID's keys (a cloner holding the keys)
    with pytest.raises(BadSignature):
        _on_reader(encoded_card(other_uid, _b64(BLOB), KEYS))[1].read()
    # one byte of the identity altered
    altered = bytearray(BLOB)
    altered[9] ^= 1  # account id
    with pytest.raises(BadSignature):
        _on_reader(encoded_card(UID, _b64(bytes(altered)), KEYS))[1].read()
    # a card of another campus, a blank card
    foreign = Keystore.generate("elsewhere")
    with pytest.raises(CardRefused) as e:
        _on_reader(
            encoded_card(UID, _b64(layout.issue_blob(foreign, UID, IDENT, VERIFIER)), foreign)
        )[1].read()
    assert e.value.code == "foreign_card"
    with pytest.raises(CardRefused) as e:
        _on_reader(cardimage.new_card(UID))[1].read()
    assert e.value.code == "foreign_card"
    # both counter slots damaged
    card = encoded_card(UID, _b64(BLOB), KEYS)
    card.blocks[16][0] ^= 1
    card.blocks[17][0] ^= 1
    with pytest.raises(CardRefused) as e:
        _on_reader(card)[1].read()
    assert e.value.code == "counters_damaged"


def test_emulator_enforces_access_conditions() -> None:
    card = encoded_card(UID, _b64(BLOB), KEYS)
    ka = KEYS.sector_key("id_read", UID)

    def run(*apdus: str) -> list[str]:
        return [card.apdu(bytes.fromhex(a)).hex().upper() for a in apdus]

    # key A reads the identity but may not write it; the trailer shows no key A, no key B
    assert run("FF82000006" + ka.hex(), "FF860000050100046000", "FFB0000410")[2].endswith("9000")
    assert run("FFD6000410" + "00" * 16) == ["6300"]
    # like a real card, a refused access halts it until it is selected again
    assert run("FF860000050100046000") == ["6300"]
    card.power_on()
    assert run("FF860000050100046000", "FFB0000710") == [
        "9000",
        "000000000000787788690000000000009000".upper(),
    ]
    # the manufacturer block is read-only even with the transport key
    assert run("FF82000006FFFFFFFFFFFF", "FF860000050100006000", "FFD6000010" + "00" * 16) == [
        "9000",
        "9000",
        "6300",
    ]
    # no authentication: no access; a wrong key: refused
    card.power_on()
    assert run("FFB0000410") == ["6300"]
    assert run("FF82000106000000000000", "FF860000050100046001") == ["9000", "6300"]
    assert run("FFCA000000") == [UID.hex().upper() + "9000"]
    assert run("FF12000000") == ["6A81"]


def _b64(b: bytes) -> str:
    import base64

    return base64.b64encode(b).decode()


def test_proof_tag_is_readable_by_desk_and_kiosk_keys_only() -> None:
    tag = bytes(range(16))
    card = cardimage.new_card(UID)
    reader = SimReader("t")
    CampusCard(reader.present(card), DESK).encode(BLOB, tag)
    proof = CampusCard(reader.current_card(), KEYS.for_role("kiosk")).read_proof()  # type: ignore[arg-type]
    assert proof == {
        "card_no": "10000001",
        "uid": "04A1B2C3",
        "generation": 1,
        "tag": tag.hex().upper(),
    }
    assert not POS.has("tag_read")
    with pytest.raises(ConfigError):
        CampusCard(reader.current_card(), POS).read_proof()  # type: ignore[arg-type]
    # the POS reads the rest of the card as usual
    assert CampusCard(reader.current_card(), POS).read().identity == IDENT  # type: ignore[arg-type]


def test_identity_rewritten_keeps_the_counters() -> None:
    card = encoded_card(UID, _b64(BLOB), KEYS)
    reader, app = _on_reader(card)
    view = app.read()
    app.write_counters(view, view.counters.next(day="2026-01-02", spent_fen=700, taps=3))
    new_verifier = layout.make_verifier(KEYS, 7, "654321", log2n=10)
    blob2 = layout.issue_blob(KEYS, UID, IDENT, new_verifier)
    CampusCard(reader.current_card(), DESK).write_identity(blob2)  # type: ignore[arg-type]
    app2 = CampusCard(reader.current_card(), POS)  # type: ignore[arg-type]
    view2 = app2.read()
    assert app2.check_pin(view2, "654321") and not app2.check_pin(view2, "013052")
    assert view2.counters.spent_fen == 700 and view2.counters.taps == 3
    with pytest.raises(ConfigError, match="id_write"):  # a POS cannot write an identity
        CampusCard(reader.current_card(), POS).write_identity(blob2)  # type: ignore[arg-type]


def test_issuing_the_same_card_again_keeps_its_counters() -> None:
    """The desk runs ``card issue`` again on a card already written and used: its counters
    stay (putting them back would look like a card restored from an old image)."""
    card = cardimage.new_card(UID)
    reader = SimReader("t")
    CampusCard(reader.present(card), DESK).encode(BLOB)
    app = CampusCard(reader.present(card), POS)
    view = app.read()
    used = view.counters.next(day="2026-01-02", spent_fen=900, taps=5, tries=2, offline_fen=900)
    app.write_counters(view, used)
    carried = Counters.carried({"day": "2026-01-02", "spent_fen": 0})
    CampusCard(reader.present(card), DESK).encode(BLOB, counters=carried, keep_counters=True)
    assert CampusCard(reader.present(card), POS).read().counters == used
    # a card pulled away before its counter sector was written gets the carried counters
    fresh = cardimage.new_card(UID)
    fresh.tear_after(12, "before")  # during sector 3
    with pytest.raises(CardGone):
        CampusCard(reader.present(fresh), DESK).encode(BLOB, counters=carried)
    fresh.tear_after(None)
    CampusCard(reader.present(fresh), DESK).encode(BLOB, counters=carried, keep_counters=True)
    assert CampusCard(reader.present(fresh), POS).read().counters == replace(carried, seq=1)
