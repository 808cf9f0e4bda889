"""The CRT-591 frames and driver, exactly: the bytes it writes for every call, against scripted
answers (the frames of the CRT-591-M001 protocol, worked by hand below), and the noise a
serial line brings — garbage, a NAK, a missing ACK, a short frame, a wrong BCC — each a clear
outcome, never a crash."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as hs

from drivers.dispenser import crt591_frames as f
from drivers.dispenser.crt591 import Crt591Dispenser, Crt591Link, parse_url
from drivers.errors import (
    DeviceUnavailable,
    DeviceUrlError,
    DispenserError,
    DispenserJammed,
    DispenserLineError,
    HopperEmpty,
    RejectBinFull,
)

ACK, NAK, EOT = b"\x06", b"\x15", b"\x04"

# Worked by hand: F2 00 00 03 | 43 31 30 | 03 | BCC = XOR of all before it (the STATUS and
# INIT frames as they appear in public CRT-591 host code)
STATUS = bytes.fromhex("F2 00 00 03 43 31 30 03 B0")
INIT_LEAVE = bytes.fromhex("F2 00 00 03 43 30 33 03 B2")
MOVE_RF = bytes.fromhex("F2 00 00 03 43 32 32 03 B1")
MOVE_GATE = bytes.fromhex("F2 00 00 03 43 32 30 03 B3")
MOVE_REJECT = bytes.fromhex("F2 00 00 03 43 32 33 03 B0")


def p(cm: int, pm: int, st: str, data: bytes = b"") -> bytes:
    """A positive answer, built from its parts by hand (not by the module under test)."""
    text = bytes([0x50, cm, pm]) + st.encode() + data
    body = bytes([0xF2, 0x00, 0x00, len(text)]) + text + b"\x03"
    x = 0
    for b in body:
        x ^= b
    return body + bytes([x])


def n(cm: int, pm: int, err: str) -> bytes:
    text = bytes([0x4E, cm, pm]) + err.encode()
    body = bytes([0xF2, 0x00, 0x00, len(text)]) + text + b"\x03"
    x = 0
    for b in body:
        x ^= b
    return body + bytes([x])


def test_frames_worked_by_hand() -> None:
    assert f.command(0x31, 0x30) == STATUS
    assert f.command(0x30, 0x33) == INIT_LEAVE
    assert f.command(0x32, 0x32) == MOVE_RF
    assert f.command(0x32, 0x30) == MOVE_GATE
    assert f.command(0x32, 0x33) == MOVE_REJECT
    # a status answer: no card, hopper enough, bin has room
    assert p(0x31, 0x30, "020") == bytes.fromhex("F2 00 00 06 50 31 30 30 32 30 03 94")
    assert f.positive(0x31, 0x30, b"020") == p(0x31, 0x30, "020")
    assert f.negative(0x32, 0x32, "A0") == n(0x32, 0x32, "A0")


@given(
    cm=hs.integers(0, 255),
    pm=hs.integers(0, 255),
    data=hs.binary(max_size=64),
    addr=hs.integers(0, 15),
    noise=hs.binary(max_size=16).filter(lambda b: 0xF2 not in b),
)
def test_every_frame_parses_back_whatever_precedes_it(
    cm: int, pm: int, data: bytes, addr: int, noise: bytes
) -> None:
    raw = f.positive(cm, pm, b"120", data, addr)
    events = f.FrameParser().feed(noise + raw)
    frames = [e.frame for e in events if e.kind == "frame"]
    assert len(frames) == 1 and frames[0] is not None
    fr = frames[0]
    assert (fr.addr, fr.cm, fr.pm, fr.st, fr.data) == (addr, cm, pm, b"120", data)


@given(hs.binary(max_size=300))
def test_the_parser_never_raises(data: bytes) -> None:
    parser = f.FrameParser()
    for i in range(0, len(data), 7):  # in arbitrary chunks
        parser.feed(data[i : i + 7])
    parser.cut_short()


def test_parser_events_for_noise() -> None:
    good = f.positive(0x31, 0x30, b"020")
    bad_bcc = good[:-1] + bytes([good[-1] ^ 0xFF])
    events = f.FrameParser().feed(b"\x00\x99" + ACK + bad_bcc + NAK + good)
    kinds = [(e.kind, e.reason.split(" ")[0]) for e in events]
    assert kinds == [
        ("garbage", ""),
        ("control", ""),
        ("bad", "wrong"),
        ("control", ""),
        ("frame", ""),
    ]
    parser = f.FrameParser()
    assert parser.feed(good[:5]) == [] and parser.pending()
    cut = parser.cut_short()
    assert cut is not None and cut.kind == "bad" and "short" in cut.reason


# -- the driver against a scripted port ---------------------------------------------------------
class FakePort:
    """A serial port: every write but a lone ACK or EOT (a frame, a NAK) delivers the next
    scripted reply; reads take what was delivered, and an empty read lets the (fake) clock run
    on by the read timeout."""

    def __init__(self, replies: list[bytes]) -> None:
        self.replies = list(replies)
        self.buf = bytearray()
        self.written: list[bytes] = []
        self.now = 0.0
        self.closed = False

    def clock(self) -> float:
        return self.now

    @property
    def in_waiting(self) -> int:
        return len(self.buf)

    def write(self, data: bytes) -> int:
        self.written.append(bytes(data))
        if self.replies and bytes(data) not in (ACK, EOT):
            self.buf += self.replies.pop(0)
        return len(data)

    def read(self, size: int = 1) -> bytes:
        if not self.buf:
            self.now += 0.02
            return b""
        out = bytes(self.buf[:size])
        del self.buf[:size]
        return out

    def reset_input_buffer(self) -> None:
        self.buf.clear()

    def close(self) -> None:
        self.closed = True


def driver(replies: list[bytes]) -> tuple[Crt591Dispenser, FakePort]:
    port = FakePort(replies)
    return Crt591Dispenser(Crt591Link(port, "test", clock=port.clock)), port


def S(st: str) -> bytes:
    """ACK and the status answer."""
    return ACK + p(0x31, 0x30, st)


def test_to_encoder_writes_status_move_and_acks(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "drivers.dispenser.crt591")
    d, port = driver([S("020"), ACK + p(0x32, 0x32, "220")])
    d.to_encoder()
    assert port.written == [STATUS, ACK, MOVE_RF, ACK]
    assert f"test >>> {STATUS.hex()}" in caplog.text
    assert f"test <<< {ACK.hex()}" in caplog.text or "test <<< 06" in caplog.text


def test_to_encoder_with_a_card_at_the_encoder_feeds_no_second_blank() -> None:
    d, port = driver([S("220")])
    d.to_encoder()
    assert port.written == [STATUS, ACK]  # no MOVE


def test_to_encoder_refuses_a_card_at_the_mouth() -> None:
    d, port = driver([S("120")])
    with pytest.raises(DispenserError, match="mouth"):
        d.to_encoder()
    assert port.written == [STATUS, ACK]


def test_to_mouth_capture_and_their_idempotence() -> None:
    d, port = driver([S("220"), ACK + p(0x32, 0x30, "120"), S("120")])
    d.to_mouth()
    d.to_mouth()
    assert port.written == [STATUS, ACK, MOVE_GATE, ACK, STATUS, ACK]
    d, port = driver([S("120"), ACK + p(0x32, 0x33, "020"), S("020")])
    d.capture()
    d.capture()
    assert port.written == [STATUS, ACK, MOVE_REJECT, ACK, STATUS, ACK]
    d, port = driver([S("020")])
    with pytest.raises(DispenserError, match="no card"):
        d.to_mouth()


def test_a_move_answered_with_the_card_elsewhere_is_an_error() -> None:
    d, _ = driver([S("020"), ACK + p(0x32, 0x32, "020")])
    with pytest.raises(DispenserError, match="no card in the channel"):
        d.to_encoder()


def test_status_decoded() -> None:
    d, _ = driver([S("211")])
    st = d.status()
    assert (st.card_at, st.hopper, st.jammed, st.reject_bin_full) == ("encoder", "low", False, True)
    assert "reject bin full" in st.detail
    d, _ = driver([S("9x0")])
    with pytest.raises(DispenserLineError, match="mean nothing"):
        d.status()


@pytest.mark.parametrize(
    ("code", "error"),
    [("A0", HopperEmpty), ("10", DispenserJammed), ("A1", RejectBinFull), ("51", DispenserError)],
)
def test_negative_answers_become_typed_errors(code: str, error: type[DispenserError]) -> None:
    d, _ = driver([S("020"), ACK + n(0x32, 0x32, code)])
    with pytest.raises(error) as got:
        d.to_encoder()
    assert got.value.device_code == code
    assert f"({code})" in str(got.value)


def test_a_unit_just_powered_up_is_initialised_and_asked_again() -> None:
    d, port = driver([ACK + n(0x31, 0x30, "B0"), ACK + p(0x30, 0x33, "020", b"CRT-591"), S("020")])
    assert d.status().card_at == "none"
    assert port.written == [STATUS, ACK, INIT_LEAVE, ACK, STATUS, ACK]
    assert d.firmware == "CRT-591"


def test_a_jam_is_reported_by_status_and_cleared_by_reset() -> None:
    d, port = driver([ACK + n(0x31, 0x30, "10"), ACK + p(0x30, 0x33, "220"), S("220")])
    assert d.status().jammed
    d.reset()
    assert port.written == [STATUS, ACK, INIT_LEAVE, ACK, STATUS, ACK]
    d, _ = driver([ACK + n(0x30, 0x33, "10")])
    with pytest.raises(DispenserJammed):
        d.reset()


# -- noise ----------------------------------------------------------------------------------------
def test_garbage_around_the_ack_and_the_answer_is_skipped() -> None:
    d, port = driver([b"\x00\xff\x13" + ACK + b"\x7f" + p(0x31, 0x30, "020") + b"\x01"])
    assert d.status().card_at == "none"
    assert port.written == [STATUS, ACK]
    assert d.link.noise == 2


def test_a_nak_makes_the_driver_send_the_command_again() -> None:
    d, port = driver([NAK, S("020")])
    assert d.status().hopper == "ok"
    assert port.written == [STATUS, STATUS, ACK]


def test_no_ack_at_all_is_an_unavailable_device() -> None:
    d, port = driver([b"", b"", b"", b""])
    with pytest.raises(DeviceUnavailable, match="does not acknowledge"):
        d.status()
    assert port.written == [STATUS] * 4


def test_a_missing_ack_with_the_answer_arriving_is_accepted() -> None:
    d, port = driver([p(0x31, 0x30, "020")])
    assert d.status().card_at == "none"
    assert port.written == [STATUS, ACK]


def test_a_wrong_bcc_is_refused_with_nak_and_the_resent_answer_taken() -> None:
    good = p(0x31, 0x30, "220")
    d, port = driver([ACK + good[:-1] + b"\x00", good])
    assert d.status().card_at == "encoder"
    assert port.written == [STATUS, NAK, ACK]


def test_a_short_frame_is_refused_with_nak() -> None:
    good = p(0x31, 0x30, "220")
    d, port = driver([ACK + good[:6], good])
    assert d.status().card_at == "encoder"
    assert port.written == [STATUS, NAK, ACK]


def test_answers_damaged_again_and_again_are_a_line_error() -> None:
    bad = p(0x31, 0x30, "220")[:-1] + b"\x00"
    d, port = driver([ACK + bad, bad, bad])
    with pytest.raises(DispenserLineError, match="damaged 3 times"):
        d.status()
    assert port.written == [STATUS, NAK, NAK]


def test_an_acknowledged_command_without_an_answer_is_a_line_error_then_eot() -> None:
    d, port = driver([ACK])
    with pytest.raises(DispenserLineError, match="outcome is unknown"):
        d.status()
    assert port.written == [STATUS, EOT]


def test_a_stray_answer_is_acknowledged_and_ignored() -> None:
    stray = p(0x32, 0x30, "120")
    d, port = driver([ACK + stray + p(0x31, 0x30, "020")])
    assert d.status().card_at == "none"
    assert port.written == [STATUS, ACK, ACK]


def test_the_port_going_away_is_an_unavailable_device() -> None:
    d, port = driver([])

    def gone(*_a: object) -> bytes:
        raise OSError(5, "Input/output error")

    port.read = gone  # type: ignore[assignment]
    port.write = gone  # type: ignore[assignment]
    with pytest.raises(DeviceUnavailable, match="Input/output"):
        d.status()
    d.close()
    assert port.closed


@pytest.mark.parametrize(
    "url",
    [
        "serial://dev/ttyS0",
        "serial:///dev/ttyS0?baud=9601",
        "serial:///dev/ttyS0?addr=16",
        "serial:///dev/ttyS0?parity=E",
        "serial:///dev/ttyS0?baud=fast",
    ],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(DeviceUrlError):
        parse_url(url)
    assert parse_url("serial:///dev/ttyS0?baud=38400&addr=3") == ("/dev/ttyS0", 38400, 3)


def test_the_address_goes_into_every_frame() -> None:
    port = FakePort([ACK + f.positive(0x31, 0x30, b"020", addr=3)])
    d = Crt591Dispenser(Crt591Link(port, "t", addr=3, clock=port.clock))
    d.status()
    assert port.written[0] == f.command(0x31, 0x30, addr=3)
    assert port.written[0][1] == 3
