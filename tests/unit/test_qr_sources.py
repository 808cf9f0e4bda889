"""QR sources and decoders (drivers/qr, sim/camera.py): OpenCV reading real video and image files,
pyserial on a pseudo-terminal, both decoders on rendered phone-screen frames, the frame loop
that drops frames instead of queueing them, and one contract every source keeps."""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.errors import DeviceUnavailable, DeviceUrlError
from drivers.qr.base import QrSource
from drivers.qr.decoders import get_decoder, yuyv_luma
from drivers.qr.frames import FrameSource, Presence
from drivers.qr.serial_scanner import MAX_LINE, SerialScanner
from drivers.registry import open_device
from sim import phone_screen
from sim.camera import SimCamera
from sim.wallet_codes_cli import write_video

CODE = "492O13000380D11WQU000V50$.C7ULDEQ6DVQMG/00ZUVB/LQ0CY2WQ5J1C7*B2.%U$C13HTXGIE7TK+KD3UD"


def frame(condition: str = "clean", seed: int = 1, size: tuple[int, int] = (1280, 720)) -> Any:
    return phone_screen.render(
        CODE, phone_screen.look_for(condition, random.Random(seed), size), size, seed
    )


# --- decoders ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["zxing", "zbar"])
@pytest.mark.parametrize("condition", ["clean", "tilt", "inverted", "small"])
def test_both_decoders_read_phone_screen_frames(name: str, condition: str) -> None:
    assert get_decoder(name).decode(frame(condition)) == [CODE]


@pytest.mark.parametrize("name", ["zxing", "zbar"])
def test_decoders_never_raise_on_odd_frames(name: str) -> None:
    dec = get_decoder(name)
    rng = np.random.default_rng(3)
    for img in (
        np.zeros((1, 1), np.uint8),
        np.zeros((480, 640), np.uint8),
        np.full((720, 1280), 255, np.uint8),
        rng.integers(0, 256, (480, 640), dtype=np.uint8),
    ):
        assert dec.decode(img) == []
        assert dec.decode_still(img) == []


def test_still_image_passes_read_hard_angled_blurred_glare_pictures() -> None:
    dec = get_decoder("zxing")
    look = phone_screen.Look(code_px=230, tilt_x=18, tilt_y=-22, roll=12, blur=2.3, glare=0.7)
    imgs = [phone_screen.render(CODE, look, seed=s) for s in range(8)]
    one_pass = sum(dec._read(img) == [CODE] for img in imgs)  # one plain pass
    still = sum(dec.decode_still(img) == [CODE] for img in imgs)
    assert one_pass <= 2 and still >= 5, (one_pass, still)  # deblurring makes the difference


#: rendered 1280×720 frames (condition, seed of :func:`frame`) that one plain zxing-cpp pass
#: locates but cannot read; the second look at the crop (drivers/qr/decoders.py) reads them all
#: (the old one-pass decoder read 81 % of blurred and 78 % of glared frames, docs/benchmarks.md)
LOCATED_UNREAD = [("blur", s) for s in (1, 3, 4, 14, 25, 29, 31, 49, 57)] + [
    ("glare", s) for s in (1, 4, 31, 57)
]


@pytest.mark.parametrize(("condition", "seed"), LOCATED_UNREAD)
def test_a_located_but_unread_code_is_read_from_a_sharpened_crop(condition: str, seed: int) -> None:
    dec = get_decoder("zxing")
    img = frame(condition, seed)
    assert dec._read(img) == []  # the old path: one pass over the frame
    assert dec.decode(img) == [CODE]


def test_the_second_look_reads_most_blurred_and_glared_frames_the_first_pass_misses() -> None:
    dec = get_decoder("zxing")
    missed = read = 0
    for condition in ("blur", "glare"):
        for img in phone_screen.presentation(CODE, condition, 12, (1280, 720), seed=7921):
            if dec._read(img):
                continue
            missed += 1
            read += dec.decode(img) == [CODE]
    # 15 missed, 8 read when measured; the old path reads none of them by definition
    assert missed >= 5 and read >= missed // 3, (missed, read)


def test_unknown_decoder_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown QR decoder"):
        get_decoder("opencv")


def test_yuyv_luma_takes_every_other_byte() -> None:
    y = np.arange(12, dtype=np.uint8).reshape(2, 6)  # 3x2 pixels, Y U Y V …
    assert yuyv_luma(y, 3, 2).tolist() == [[0, 2, 4], [6, 8, 10]]
    with pytest.raises(ValueError):
        yuyv_luma(y, 4, 2)


# --- the frame loop -----------------------------------------------------------------------------
def test_frames_arriving_during_a_decode_are_dropped_not_queued() -> None:
    src = FrameSource("t", get_decoder("zxing"))
    blank = np.zeros((480, 640), np.uint8)
    for _ in range(9):
        src.put_frame(blank)
    src.put_frame(frame(size=(640, 480)))  # the newest frame is the one decoded
    got = src.read(1.0)
    assert got is not None and got.text == CODE and got.frame == 10
    st = src.stats()
    assert (st["frames"], st["dropped"], st["decoded_frames"]) == (10, 9, 1)


def test_presence_reports_a_code_once_per_presentation() -> None:
    p = Presence(gone_frames=3)
    assert p.update(["A"]) == ["A"]
    assert p.update(["A"]) == []
    assert p.update(["A", "B"]) == ["B"]
    for _ in range(4):
        p.update([])
    assert p.update(["A"]) == ["A"]


# --- one contract for every QR source -----------------------------------------------------------
def _sim() -> tuple[QrSource, Callable[[], None]]:
    cam = SimCamera("contract")
    _ok, png = cv2.imencode(".png", frame())
    return cam, lambda: cam.show_image(png.tobytes()) and None


def _images(tmp: Path) -> tuple[QrSource, Callable[[], None]]:
    folder = tmp / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "000.png"), phone_screen.render(CODE, seed=1, present=False))
    cv2.imwrite(str(folder / "001.png"), frame())
    (folder / "002.png").write_bytes(b"not a picture")  # skipped, not fatal
    return open_device("qr", f"camera://file{folder}?fps=50"), lambda: None


def _serial(tmp: Path) -> tuple[QrSource, Callable[[], None]]:
    master, slave = os.openpty()
    scanner = open_device("qr", f"serial://{os.ttyname(slave)}?baud=9600")

    def show() -> None:
        os.write(master, CODE.encode() + b"\r\n")

    scanner._ykt_fds = (master, slave)  # type: ignore[attr-defined]
    return scanner, show


@pytest.fixture(params=["sim", "camera-file", "serial"])
def source(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[QrSource, Any]]:
    make = {
        "sim": lambda: _sim(),
        "camera-file": lambda: _images(tmp_path),
        "serial": lambda: _serial(tmp_path),
    }
    src, show = make[request.param]()
    yield src, show
    src.close()
    for fd in getattr(src, "_ykt_fds", ()):
        os.close(fd)


def test_every_source_reports_a_presented_code_once(source: tuple[QrSource, Any]) -> None:
    src, show = source
    assert src.status() == "ready"
    show()
    got = src.read(5.0)
    assert got is not None and got.text == CODE
    assert src.read(0.3) is None  # still in view (or nothing more sent): not reported again
    assert isinstance(src.stats(), dict)


# --- OpenCV on real files -------------------------------------------------------------------------
def test_camera_reads_a_video_file_through_opencv(tmp_path: Path) -> None:
    video = write_video(CODE, tmp_path / "clip.avi", "tilt", seed=2)
    cam = open_device("qr", f"camera://file{video}?fps=200")
    try:
        got = cam.read(10.0)
        assert got is not None and got.text == CODE
        assert cam.read(3.0) is None  # the code is read once, then the clip ends
        assert cam.status() == "ended"
        assert cam.stats()["frames"] > 30
    finally:
        cam.close()


def test_camera_urls_and_missing_devices_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DeviceUrlError, match="unknown camera option"):
        open_device("qr", "camera:///dev/video0?zoom=2")
    with pytest.raises(DeviceUrlError, match="fps"):
        open_device("qr", "camera:///dev/video0?fps=fast")
    with pytest.raises(DeviceUnavailable, match="no such file"):
        open_device("qr", f"camera://file{tmp_path}/missing.mp4")
    with pytest.raises(DeviceUnavailable, match="no images"):
        open_device("qr", f"camera://file{tmp_path}")
    with pytest.raises(DeviceUnavailable):
        open_device("qr", "camera:///dev/video-not-there")
    with pytest.raises(DeviceUrlError, match="no qr driver for pcsc"):
        open_device("qr", "pcsc://reader")


# --- serial scanner on a pseudo-terminal ----------------------------------------------------------
def test_serial_scanner_drops_noise_and_keeps_spaces(tmp_path: Path) -> None:
    master, slave = os.openpty()
    scanner = SerialScanner(f"serial://{os.ttyname(slave)}?baud=115200")
    try:
        os.write(master, b"\r\n\xff\xfe\x00garbage\n" + b"X" * (MAX_LINE + 10) + b"\nABC\r\n")
        os.write(master, b" LEADING SPACE\n\x1b[2Jescape\n")
        first = scanner.read(3.0)
        second = scanner.read(3.0)
        assert first is not None and first.text == "ABC"
        assert second is not None and second.text == " LEADING SPACE"
        assert scanner.read(0.3) is None
        assert scanner.stats()["noise"] == 3
    finally:
        scanner.close()
        os.close(master)
        os.close(slave)


def test_serial_url_errors() -> None:
    with pytest.raises(DeviceUrlError, match="baud"):
        SerialScanner("serial:///dev/ttyACM0?baud=123")
    with pytest.raises(DeviceUnavailable):
        SerialScanner("serial:///dev/ttyACM-not-there?baud=9600")


def test_sim_camera_says_whether_a_picture_held_a_code() -> None:
    cam = SimCamera("verdict")
    done: dict[str, Any] = {}

    def consumer() -> None:
        done["read"] = cam.read(5.0)

    t = threading.Thread(target=consumer)
    t.start()
    _ok, png = cv2.imencode(".png", np.full((100, 100), 200, np.uint8))
    shown = cam.show_image(png.tobytes())
    assert cam.wait_result(shown["presentation"], 5.0)["read"] is False
    t.join(6)
    assert done["read"] is None
    cam.close()


def test_rearm_reports_a_code_still_in_view_again() -> None:
    src = FrameSource("t", get_decoder("zxing"))
    img = frame(size=(640, 480))
    src.put_frame(img)
    assert src.read(1.0) is not None
    src.put_frame(img)
    assert src.read(0.5) is None  # still in view: not a new presentation
    src.rearm()  # the POS starts waiting for a credential
    src.put_frame(img)
    got = src.read(1.0)
    assert got is not None and got.text == CODE


class _Port:
    """A pyserial-like port that hands out scripted bytes (for the property test)."""

    def __init__(self, data: bytes) -> None:
        self.data = bytearray(data)

    @property
    def in_waiting(self) -> int:
        return len(self.data)

    def read(self, n: int) -> bytes:
        out = bytes(self.data[:n])
        del self.data[:n]
        return out

    def close(self) -> None:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300) | st.sampled_from([b"\r\n", b"\n", CODE.encode()])))
def test_no_serial_noise_crashes_the_scanner_or_passes_through(chunks: list[bytes]) -> None:
    scanner = SerialScanner("serial:///dev/ttyFAKE?baud=9600", port=_Port(b"".join(chunks)))
    reads = []
    while (got := scanner.read(0.0)) is not None:
        reads.append(got.text)
    assert all(t.isascii() and t.isprintable() and 0 < len(t) <= MAX_LINE for t in reads)
    complete = b"".join(chunks).replace(b"\r", b"\n").split(b"\n")[:-1]
    assert reads.count(CODE) == sum(1 for line in complete if line == CODE.encode())
