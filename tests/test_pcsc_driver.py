"""The PC/SC reader and MIFARE Classic drivers against a real pcscd with vpcd virtual readers:
exact APDU sequences with scripted card responses, status words to typed errors, card
arrival and removal events, a card gone mid-exchange, reader-name filtering.

libpcsclite reads PCSCLITE_CSOCK_NAME once per process, so this module's private pcscd is
the only one the test process itself talks to (other modules drive pcscd from child
processes)."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.card.mifare_classic import KEY_A, KEY_B, MifareClassic
from drivers.errors import (
    CardAuthError,
    CardGone,
    CardIOError,
    CardNotSupported,
    CardStatusError,
    DeviceUrlError,
    ReaderNotFound,
)
from drivers.reader import pcsc
from sim.harness import pcscd
from sim.harness.procs import pid_alive
from sim.vicc import VirtualCard
from tests.card_helpers import Scripted

UID = bytes.fromhex("04A1B2C3")
KEY = bytes.fromhex("A0A1A2A3A4A5")


@pytest.fixture(scope="module")
def readers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pcscd.VirtualReaders]:
    vr = pcscd.VirtualReaders(tmp_path_factory.mktemp("pcscd"))
    vr.start(2)
    before = os.environ.get("PCSCLITE_CSOCK_NAME")
    os.environ["PCSCLITE_CSOCK_NAME"] = str(vr.socket_path)
    yield vr
    if before is None:
        os.environ.pop("PCSCLITE_CSOCK_NAME", None)
    else:
        os.environ["PCSCLITE_CSOCK_NAME"] = before
    vr.stop()


@pytest.fixture
def reader(readers: pcscd.VirtualReaders) -> Iterator[pcsc.PcscReader]:
    r = pcsc.open_url("pcsc://" + readers.slot(0)["name"])
    yield r
    r.close()


def present(readers: pcscd.VirtualReaders, card: Scripted, slot: int = 0) -> VirtualCard:
    vc = VirtualCard(card, readers.slot(slot)["port"]).start()
    vc.wait_inserted()
    return vc


def arrive(
    reader: pcsc.PcscReader, readers: pcscd.VirtualReaders, card: Scripted
) -> tuple[VirtualCard, pcsc.PcscCard]:
    assert reader.wait_for_card(0.05) is None  # learn the empty state first
    vc = present(readers, card)
    got = reader.wait_for_card(3.0)
    assert got is not None
    return vc, got


def test_exact_apdus_for_uid_authenticate_read_write(
    readers: pcscd.VirtualReaders, reader: pcsc.PcscReader, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    card = Scripted(UID)
    card.script[bytes.fromhex("FFB0000410")] = bytes(range(16)) + b"\x90\x00"
    vc, pc = arrive(reader, readers, card)
    try:
        assert pc.uid == UID and pc.atr.hex().upper().startswith("3B8F8001804F")
        mf = MifareClassic(pc)
        with pc.exclusive():
            mf.load_key(0, KEY)
            mf.authenticate(4, KEY_A, 0)
            assert mf.read_block(4) == bytes(range(16))
            mf.load_key(1, KEY)
            mf.authenticate(7, KEY_B, 1)
            mf.write_block(5, bytes([0xAB] * 16))
        assert [c.hex().upper() for c in card.got] == [
            "FFCA000000",
            "FF82000006A0A1A2A3A4A5",
            "FF860000050100046000",
            "FFB0000410",
            "FF82000106A0A1A2A3A4A5",
            "FF860000050100076101",
            "FFD6000510" + "AB" * 16,
        ]
        assert "A0 A1 A2 A3 A4 A5" not in caplog.text  # keys masked in the >>> log
        assert ">>> FF 82 00 00 06 ** ** ** ** ** **" in caplog.text
        assert "<<< 00 01 02 03" in caplog.text
    finally:
        pc.close()
        vc.remove()


@pytest.mark.parametrize(
    ("sw", "error"),
    [
        ("6300", CardAuthError),
        ("6982", CardAuthError),
        ("6A81", CardNotSupported),
        ("6581", CardStatusError),
        ("90", CardIOError),
    ],
)
def test_status_words_become_typed_errors(
    readers: pcscd.VirtualReaders, reader: pcsc.PcscReader, sw: str, error: type[Exception]
) -> None:
    card = Scripted(UID)
    vc, pc = arrive(reader, readers, card)
    try:
        assert pc.uid == UID
        card.queue.append(bytes.fromhex(sw))
        with pytest.raises(error) as e:
            MifareClassic(pc).authenticate(4, KEY_A, 0)
        if isinstance(e.value, CardStatusError):
            assert e.value.sw == int(sw, 16)
    finally:
        pc.close()
        vc.remove()


def test_card_gone_mid_exchange_and_removal_event(
    readers: pcscd.VirtualReaders, reader: pcsc.PcscReader
) -> None:
    card = Scripted(UID)
    vc, pc = arrive(reader, readers, card)
    vc.remove()  # the card leaves while we hold it
    with pytest.raises(CardGone):
        for _ in range(50):  # pcscd notices within its 400 ms poll
            MifareClassic(pc).read_block(4)
            time.sleep(0.02)
    pc.close()
    assert reader.wait_for_card(1.0) is None  # a removal is not an arrival
    assert reader.current_card() is None
    vc2, pc2 = arrive(reader, readers, Scripted(bytes.fromhex("04FFEEDD")))
    assert pc2.uid == bytes.fromhex("04FFEEDD")
    pc2.close()
    vc2.remove()


def test_card_lying_on_the_reader_and_reset(readers: pcscd.VirtualReaders) -> None:
    card = Scripted(UID)
    vc = present(readers, card, slot=1)
    assert pcscd.wait_slot(readers.socket_path, readers.slot(1)["name"], True)
    r = pcsc.open_url("pcsc://" + readers.slot(1)["name"])
    try:
        assert r.wait_for_card(0.6) is None  # lying there before we looked: no arrival
        pc = r.current_card()
        assert pc is not None and pc.uid == UID
        resets = card.resets
        pc.reset()
        assert card.resets > resets
        pc.close()
    finally:
        r.close()
        vc.remove()


def test_reader_name_filter(readers: pcscd.VirtualReaders) -> None:
    names = [s["name"] for s in readers.state()["slots"]]
    r = pcsc.open_url("pcsc://" + names[1])
    assert r.readers()[:2] == names or set(names) <= set(r.readers())
    r.wait_for_card(0.05)
    assert r.reader_name == names[1]
    r.close()
    unknown = pcsc.open_url("pcsc://ACS ACR122U")
    with pytest.raises(ReaderNotFound, match="present: "):
        unknown.wait_for_card(0.2)
    assert "not found" in unknown.status() and not unknown.healthy()
    unknown.close()
    with pytest.raises(DeviceUrlError):
        pcsc.parse_url("pcsc://a%0Ab")
    assert pcsc.parse_url("pcsc://ACS%20ACR122U%2000%2000") == "ACS ACR122U 00 00"
    assert pcsc.matches("ACS ACR122U", "ACS ACR122U PICC Interface 00 00")


def test_feedback_only_on_readers_that_have_it(
    readers: pcscd.VirtualReaders, reader: pcsc.PcscReader
) -> None:
    card = Scripted(UID)
    vc, pc = arrive(reader, readers, card)
    try:
        assert pc.uid == UID
        pc.feedback(True)  # a vpcd slot has no LED: nothing is sent
        assert card.got == [bytes.fromhex("FFCA000000")]
        pc.reader = "ACS ACR122U PICC Interface 00 00"
        pc.feedback(False)
        assert card.got[-1] == pcsc.feedback_apdu(False)
        assert pcsc.feedback_apdu(True).hex().upper() == "FF00402E0401000101"
    finally:
        pc.close()
        vc.remove()


def test_readers_start_again_on_other_ports_when_one_is_taken_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A port picked free can be taken (by an outgoing connection) before pcscd's driver binds
    it: that pcscd never lists the reader; it is stopped and the readers start on ports picked
    again (:meth:`sim.harness.pcscd.VirtualReaders.start`)."""
    taken = socket.socket()
    taken.bind(("0.0.0.0", 0))
    taken.listen()
    busy = taken.getsockname()[1]
    picks = iter([busy - 1])  # the first entry's second slot: the port held above
    real_pick = pcscd.pick_ports
    monkeypatch.setattr(
        pcscd, "pick_ports", lambda n, base: next(picks, None) or real_pick(n, base)
    )
    launched: list[int] = []
    real_launch = pcscd.VirtualReaders._launch

    def launch(self: pcscd.VirtualReaders) -> int:
        launched.append(real_launch(self))
        return launched[-1]

    monkeypatch.setattr(pcscd.VirtualReaders, "_launch", launch)
    vr = pcscd.VirtualReaders(tmp_path / "readers")
    try:
        st = vr.start(2, timeout=3.0)
        assert len(launched) == 2 and not pid_alive(launched[0])
        assert st["base_port"] != busy - 1
        listed = pcscd.list_readers(vr.socket_path) or []
        assert {s["name"] for s in st["slots"]} <= set(listed) and len(st["slots"]) == 2
    finally:
        vr.stop()
        taken.close()
