"""The counter peripherals' drivers, frame by frame (CONVENTIONS §5): the ESC/POS printer's
status requests and answers, the receipt's bytes read back as a printer reads them, the pole
display's DM-D commands, the PIN pad's frames and its noise, the receipt's signed QR text.
One contract runs every printer transport (an in-memory simulated printer, a pseudo-terminal)."""

from __future__ import annotations

import os
import threading
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.display.dmd import DmdDisplay, encode_screen
from drivers.errors import DeviceUnavailable, DeviceUrlError
from drivers.pinpad.framed import ACK, NAK, FramedPinPad, FrameReader, frame, lrc
from drivers.printer.base import Printer, PrinterNotReady, Receipt
from drivers.printer.escpos import EscposPrinter, encode_receipt, parse_status
from drivers.registry import open_device
from drivers.transport import SerialTransport
from sim import printer as sim_printer
from sim.escpos_stream import PrinterModel, render
from sim.periph import DisplayModel
from sync import receipt
from sync.crypto import SigningKey
from sync.errors import ProtocolError


class Scripted:
    """A transport that answers from a script and records what was written."""

    two_way = True

    def __init__(self, answers: list[bytes] | None = None) -> None:
        self.name = "scripted"
        self.written = bytearray()
        self.answers = list(answers or [])
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def read(self, n: int, timeout: float) -> bytes:
        return self.answers.pop(0) if self.answers else b""

    def discard_input(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class ModelTransport:
    """The simulated printer in memory: what it printed in ``printed``."""

    two_way = True

    def __init__(self, model: PrinterModel) -> None:
        self.name = "model"
        self.model = model
        self.printed = bytearray()
        self._answers = bytearray()

    def write(self, data: bytes) -> None:
        printed, answers = self.model.receive(data)
        self.printed += printed
        self._answers += answers

    def read(self, n: int, timeout: float) -> bytes:
        out = bytes(self._answers[:n])
        del self._answers[:n]
        return out

    def discard_input(self) -> None:
        self._answers.clear()

    def close(self) -> None:
        pass


RECEIPT = Receipt(
    "一食堂 3号窗口", ["金额 Amount:   ￥12.50", "余额 Balance:  ￥87.50"], "YKTR1|x", ["谢谢"]
)


def test_status_requests_are_dle_eot_1_2_4_and_answers_are_read() -> None:
    t = Scripted([b"\x12", b"\x12", b"\x12"])
    assert EscposPrinter("p", t).status().ready
    assert bytes(t.written) == b"\x10\x04\x01\x10\x04\x02\x10\x04\x04"
    out = parse_status(0x12 | 0x08, 0x12 | 0x20, 0x12 | 0x60)
    assert out.paper_out and not out.online and not out.ready
    assert parse_status(0x12, 0x12 | 0x04, 0x12).cover_open
    assert parse_status(0x12, 0x12, 0x12 | 0x0C).paper_near_end
    assert parse_status(0x12, 0x12, 0x12 | 0x0C).ready


def test_no_answer_is_offline_and_a_garbled_answer_is_an_error() -> None:
    st_ = EscposPrinter("p", Scripted([])).status()
    assert not st_.answered and not st_.ready and st_.describe() == "offline (no answer)"
    with pytest.raises(DeviceUnavailable):
        EscposPrinter("p", Scripted([b"\xff"])).status()


def test_paper_out_before_the_job_sends_nothing_but_the_questions() -> None:
    t = Scripted([b"\x12", b"\x32", b"\x7e"])
    with pytest.raises(PrinterNotReady) as exc:
        EscposPrinter("p", t).print(RECEIPT)
    assert exc.value.status.paper_out
    assert bytes(t.written) == b"\x10\x04\x01\x10\x04\x02\x10\x04\x04"


def test_receipt_bytes_are_python_escpos_commands_with_gb18030_text() -> None:
    data = encode_receipt(RECEIPT)
    assert data.startswith(b"\x1b@\x1c&")  # ESC @, then Chinese mode (FS &)
    assert "一食堂 3号窗口".encode("gb18030") in data
    assert b"\x1d(k\x0a\x001P0YKTR1|x" in data  # the QR's data (GS ( k, fn 80)
    assert data.endswith(b"\x1dV\x00")  # GS V 0: cut
    page = render(data)
    assert page.receipts == [["一食堂 3号窗口", *RECEIPT.lines, "[QR] YKTR1|x", "谢谢"]]
    assert page.qrs == [["YKTR1|x"]] and page.unknown == 0


_CJK = st.characters(codec="gb18030", exclude_categories=("Cc", "Cs", "Zl", "Zp"))


@given(st.lists(st.text(_CJK, max_size=30), max_size=8), st.text(_CJK, min_size=1, max_size=20))
def test_any_receipt_reads_back_as_printed(lines: list[str], title: str) -> None:
    r = Receipt(title, lines)
    assert render(encode_receipt(r)).receipts == [[title, *lines]]


@pytest.fixture
def pty_printer() -> Iterator[tuple[str, PrinterModel]]:
    """A simulated printer behind a real pseudo-terminal (a thread plays the printer)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    model = PrinterModel()
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            _, answers = model.receive(data)
            if answers:
                os.write(master, answers)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield os.ttyname(slave), model
    stop.set()
    os.close(slave)
    os.close(master)
    t.join(2)


def _printer(
    kind: str, pty_printer: tuple[str, PrinterModel], tmp_path: Path
) -> tuple[Printer, PrinterModel]:
    if kind == "memory":
        model = PrinterModel()
        return EscposPrinter(kind, ModelTransport(model)), model
    if kind == "sim":  # sim://, through the registry and the simulator's provider
        p = open_device("printer", f"sim://contract?dir={tmp_path}")
        return p, sim_printer.PRINTERS.get("contract").model
    path, model = pty_printer
    return EscposPrinter(kind, SerialTransport(path, 9600)), model


@pytest.mark.parametrize("kind", ["memory", "sim", "pty"])
def test_printer_contract(kind: str, pty_printer: tuple[str, PrinterModel], tmp_path: Path) -> None:
    p, model = _printer(kind, pty_printer, tmp_path)
    assert isinstance(p, Printer)
    try:
        assert p.status().ready
        p.print(RECEIPT)
        model.paper = False
        assert p.status().paper_out
        with pytest.raises(PrinterNotReady):
            p.print(RECEIPT)
        model.paper = True
        model.paper_after = 40  # runs out in the middle of the next receipt
        with pytest.raises(PrinterNotReady) as exc:
            p.print(RECEIPT)
        assert exc.value.status.paper_out and "while printing" in str(exc.value)
        model.paper = True
        p.print(RECEIPT)
        assert model.dropped > 0
        if kind == "sim":  # what it printed, unchanged, in DIR/NAME.escpos
            page = render((tmp_path / "contract.escpos").read_bytes())
            assert page.receipts[0][0] == RECEIPT.title and page.receipts[-1][0] == RECEIPT.title
    finally:
        p.close()


def test_display_commands_are_dmd_and_read_back() -> None:
    assert encode_screen(["AMOUNT DUE     12.50", "x"]) == (
        b"\x0c\x1f\x24\x01\x01AMOUNT DUE     12.50\x1f\x24\x01\x02x"
    )
    t = Scripted()
    d = DmdDisplay("d", t)
    assert bytes(t.written) == b"\x1b@\x1f\x01\x0c"
    d.show(["TOO LONG FOR A POLE DISPLAY", "余额"])
    model = DisplayModel()
    model.feed(bytes(t.written))
    assert model.lines == ["TOO LONG FOR A POLE", "??"]  # cut to 20 columns, ASCII only


@given(
    st.lists(st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=25), max_size=2)
)
def test_any_screen_reads_back(lines: list[str]) -> None:
    model = DisplayModel()
    for i in range(0, len(data := encode_screen(lines)), 3):  # split anywhere
        model.feed(data[i : i + 3])
    want = [line[:20].rstrip() for line in lines] + [""] * (2 - len(lines))
    assert model.lines == want


def test_pin_frames_and_acks() -> None:
    assert frame("K", "013052") == b"\x02K013052\x03" + bytes([lrc(b"K013052\x03")])
    t = Scripted([frame("K", "013052")])
    pad = FramedPinPad("k", t)
    pad.prompt("PIN 12.50")
    entry = pad.read(1)
    assert entry is not None and entry.kind == "pin" and entry.digits == "013052"
    assert "013052" not in repr(entry)
    assert bytes(t.written) == frame("P", "PIN 12.50") + bytes([ACK])


@pytest.mark.parametrize(
    "noise",
    [b"\xff\xfe", b"\x02K12\x03\x00", b"\x02Kab\x03" + bytes([lrc(b"Kab\x03")]), b"\x02Z\x03Y"],
)
def test_noise_is_refused_and_the_next_frame_still_read(noise: bytes) -> None:
    t = Scripted([noise, frame("K", "111111")])
    pad = FramedPinPad("k", t)
    entry = pad.read(1)
    assert entry is not None and entry.digits == "111111"
    assert pad.stats()["noise"] >= 1
    assert bytes(t.written).endswith(bytes([ACK]))
    if noise.startswith(b"\x02"):
        assert NAK in t.written


def test_a_frame_cut_short_is_dropped_after_the_inter_byte_timeout() -> None:
    t = Scripted([b"\x02K0130"])
    pad = FramedPinPad("k", t)
    assert pad.read(0.5) is None
    assert bytes(t.written) == bytes([NAK]) and pad.stats()["noise"] == 1


@given(st.binary(max_size=200))
def test_any_bytes_never_break_the_frame_reader(data: bytes) -> None:
    r = FrameReader()
    for good, body in r.feed(data):
        assert not good or len(body) >= 1
    r.expire()  # the sender went quiet: a partial frame is dropped
    assert r.feed(frame("K", "123456")) == [(True, b"K123456")]


def test_receipt_code_genuine_and_every_field_change_detected() -> None:
    key = SigningKey.from_seed(bytes(32))
    facts = receipt.ReceiptFacts("T0001", 12, "sale", "card", 1250, 8750, 1733390000000, "ab" * 16)
    text = receipt.sign(facts, key)
    got, sig = receipt.parse(text)
    assert got == facts and receipt.genuine(got, sig, key.public)
    for field in ("12", "1250", "8750", "1733390000000", "card"):
        changed = text.replace(f"|{field}|", f"|{field[:-1]}{'9' if field[-1] != '9' else '8'}|", 1)
        try:
            f2, s2 = receipt.parse(changed)
        except ProtocolError:
            continue
        assert not receipt.genuine(f2, s2, key.public), field
    for bad in ("", "YKTR1|x", "YKTR2" + text[5:], text.replace("|12|", "|-1|")):
        with pytest.raises(ProtocolError):
            receipt.parse(bad)


@pytest.mark.parametrize(
    "url",
    [
        "escpos+usb://04b8",  # no PID
        "escpos+usb://zz:0202",
        "escpos+usb://10000:0202",
        "escpos+net://",
        "escpos+net://10.0.0.5:port",
        "escpos+net://10.0.0.5:9100/x",
        "escpos+serial:///dev/ttyS1?baud=7",
        "escpos+serial:///dev/ttyS1?speed=9600",
        "escpos+serial://host/dev/ttyS1",
    ],
)
def test_bad_printer_urls_are_refused_before_anything_opens(url: str) -> None:
    with pytest.raises(DeviceUrlError):
        open_device("printer", url)


def test_no_display_or_pin_pad_on_a_printer_scheme() -> None:
    with pytest.raises(DeviceUrlError, match="no display driver"):
        open_device("display", "escpos+net://10.0.0.5:9100")
    with pytest.raises(DeviceUrlError, match="no pinpad driver"):
        open_device("pinpad", "camera:///dev/video0")
