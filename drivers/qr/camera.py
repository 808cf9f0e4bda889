"""Cameras read through OpenCV (``cv2.VideoCapture``), as QR sources.

=========================================== ==================================================
``camera:///dev/video0``                    a V4L2 device; ``?width=1280&height=720&fps=30``,
                                            ``&format=yuyv`` takes the Y plane of raw YUYV
                                            frames (cheaper than decoding MJPEG)
``camera://file/PATH``                      a video file, an image file, or a folder of images
                                            (sorted by name), played at ``?fps=`` (default:
                                            the video's own rate, 10 for images) like a live
                                            camera; ``&loop=1`` starts over at the end
any camera                                  ``&decoder=zbar`` picks the decoder (default zxing)
=========================================== ==================================================

``PATH`` is absolute (``camera://file/srv/clip.mp4`` is ``/srv/clip.mp4``); when no such file
exists it is taken relative to the working directory.  A capture thread reads frames at the
camera's pace into the one-frame mailbox of :class:`drivers.qr.frames.FrameSource`; frames
that arrive while a decode runs replace each other (dropped, counted), never queue.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from drivers.errors import DeviceUnavailable, DeviceUrlError
from drivers.qr.decoders import DEFAULT, get_decoder, to_gray, yuyv_luma
from drivers.qr.frames import FrameSource

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".tif", ".tiff", ".webp"}
GONE_AFTER_FAILS = 30  # consecutive failed grabs before a device counts as gone


@dataclass
class CameraUrl:
    device: str | None  # /dev/videoN
    file: Path | None  # a video, an image or a folder of images
    fps: float | None
    loop: bool
    width: int | None
    height: int | None
    yuyv: bool
    decoder: str


def parse_url(url: str) -> CameraUrl:
    parts = urlsplit(url)
    if parts.scheme != "camera":
        raise DeviceUrlError(f"not a camera URL: {url!r}")
    q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    known = {"fps", "loop", "width", "height", "format", "decoder"}
    unknown = set(q) - known
    if unknown:
        raise DeviceUrlError(f"{url}: unknown camera option(s) {', '.join(sorted(unknown))}")
    try:
        fps = float(q["fps"]) if "fps" in q else None
        width = int(q["width"]) if "width" in q else None
        height = int(q["height"]) if "height" in q else None
    except ValueError:
        raise DeviceUrlError(f"{url}: fps, width and height are numbers") from None
    if fps is not None and not 0 < fps <= 1000:
        raise DeviceUrlError(f"{url}: fps must be between 0 and 1000")
    fmt = q.get("format", "").lower()
    if fmt not in ("", "yuyv", "mjpg"):
        raise DeviceUrlError(f"{url}: format is yuyv or mjpg")
    common = dict(
        fps=fps,
        loop=q.get("loop", "0") in ("1", "true", "yes"),
        width=width,
        height=height,
        yuyv=fmt == "yuyv",
        decoder=q.get("decoder", DEFAULT),
    )
    if parts.netloc == "file":
        raw = parts.path
        if not raw or raw == "/":
            raise DeviceUrlError(f"{url}: camera://file/PATH needs a path")
        path = Path(raw)
        if not path.exists() and Path(raw.lstrip("/")).exists():
            path = Path(raw.lstrip("/"))
        return CameraUrl(device=None, file=path, **common)  # type: ignore[arg-type]
    if parts.netloc:
        raise DeviceUrlError(f"{url}: use camera:///dev/videoN or camera://file/PATH")
    if not parts.path.startswith("/dev/"):
        raise DeviceUrlError(f"{url}: a camera device is /dev/videoN")
    return CameraUrl(device=parts.path, file=None, **common)  # type: ignore[arg-type]


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:
        raise DeviceUnavailable("OpenCV is not installed: pip install 'ykt[camera]'") from exc
    return cv2


class Camera(FrameSource):
    """A camera device or a recorded file, read through OpenCV."""

    def __init__(self, url: str, decoder: str | None = None) -> None:
        self.url = url
        self.cfg = parse_url(url)
        if decoder and "decoder=" not in url:
            self.cfg.decoder = decoder
        try:
            dec = get_decoder(self.cfg.decoder)
        except ValueError as exc:
            raise DeviceUrlError(f"{url}: {exc}") from None
        super().__init__(url, dec)
        self._cv2 = _cv2()
        self._stop = threading.Event()
        self._images: list[Path] = []
        self._cap: Any = None
        self._open()
        self._thread = threading.Thread(target=self._produce, name="camera", daemon=True)
        self._thread.start()

    # -- opening ------------------------------------------------------------------------------
    def _open(self) -> None:
        cv2 = self._cv2
        c = self.cfg
        if c.file is not None:
            if c.file.is_dir():
                self._images = sorted(
                    p for p in c.file.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
                )
                if not self._images:
                    raise DeviceUnavailable(f"{self.url}: no images in {c.file}")
                return
            if not c.file.exists():
                raise DeviceUnavailable(f"{self.url}: no such file {c.file}")
            if c.file.suffix.lower() in IMAGE_SUFFIXES:
                self._images = [c.file]
                return
            self._cap = cv2.VideoCapture(str(c.file))
        else:
            assert c.device is not None
            self._cap = cv2.VideoCapture(c.device, cv2.CAP_V4L2)
            if c.width:
                self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, c.width)
            if c.height:
                self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, c.height)
            if c.fps:
                self._cap.set(cv2.CAP_PROP_FPS, c.fps)
            if c.yuyv:
                self._cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*"YUYV"))
                self._cap.set(cv2.CAP_PROP_CONVERT_RGB, 0)
        if not self._cap.isOpened():
            self._cap.release()
            raise DeviceUnavailable(f"{self.url}: OpenCV cannot open it")

    def _gray(self, frame: Any) -> Any:
        if self.cfg.yuyv and self._cap is not None:
            w = int(self._cap.get(self._cv2.CAP_PROP_FRAME_WIDTH))
            h = int(self._cap.get(self._cv2.CAP_PROP_FRAME_HEIGHT))
            if frame.size == w * h * 2:
                return yuyv_luma(frame, w, h)
        return to_gray(frame)

    # -- producing ----------------------------------------------------------------------------
    def _produce(self) -> None:
        try:
            if self._images:
                self._produce_images()
            elif self.cfg.file is not None:
                self._produce_video()
            else:
                self._produce_device()
        except Exception as exc:  # the capture thread reports, never dies silently
            log.exception("camera %s failed", self.url)
            self.fail(f"capture failed: {exc}")
        finally:
            if self._cap is not None:
                self._cap.release()

    def _pace(self, start: float, n: int, fps: float) -> bool:
        """Wait until frame ``n`` is due; False when stopping."""
        delay = start + n / fps - time.monotonic()
        return not self._stop.wait(delay) if delay > 0 else not self._stop.is_set()

    def _produce_images(self) -> None:
        fps = self.cfg.fps or 10.0
        frames = []
        for p in self._images:
            img = self._cv2.imread(str(p), self._cv2.IMREAD_GRAYSCALE)
            if img is None:
                log.warning("camera %s: %s is not an image; skipped", self.url, p)
                continue
            frames.append(img)
        if not frames:
            self.fail("no readable images")
            return
        start, n = time.monotonic(), 0
        while True:
            for img in frames:
                if not self._pace(start, n, fps):
                    return
                self.put_frame(img)
                n += 1
            if not self.cfg.loop:
                self.finish()
                return

    def _produce_video(self) -> None:
        cap = self._cap
        fps = self.cfg.fps or cap.get(self._cv2.CAP_PROP_FPS) or 25.0
        start, n = time.monotonic(), 0
        while True:
            ok, frame = cap.read()
            if not ok:
                if not self.cfg.loop or n == 0:
                    self.finish()
                    return
                cap.set(self._cv2.CAP_PROP_POS_FRAMES, 0)
                continue
            if not self._pace(start, n, fps):
                return
            self.put_frame(self._gray(frame))
            n += 1

    def _produce_device(self) -> None:
        fails = 0
        while not self._stop.is_set():
            ok, frame = self._cap.read()  # blocks for the next frame: the camera's pace
            if not ok or frame is None:
                fails += 1
                if fails >= GONE_AFTER_FAILS:
                    self.fail("camera gone (no frames)")
                    return
                self._stop.wait(0.01)
                continue
            fails = 0
            self.put_frame(self._gray(frame))

    def close(self) -> None:
        self._stop.set()
        super().close()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=2)


def open_url(url: str) -> Camera:
    return Camera(url)
