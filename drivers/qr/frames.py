"""The frame loop shared by image sources (OpenCV cameras, the simulated camera).

A producer (the capture thread) puts frames into a one-frame mailbox; :meth:`FrameSource.read`
decodes the newest frame.  When decoding is slower than the camera, an unread frame is
replaced by the next one and counted as dropped: the decision always works on the latest
picture and no queue builds up behind it.

:class:`Presence` turns per-frame decodes into presentations: a text is reported when it
appears, and again only after it has been out of view for ``gone_frames`` decoded frames.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from drivers.errors import DeviceUnavailable
from drivers.qr.base import Decoder, QrRead

log = logging.getLogger(__name__)


class Presence:
    def __init__(self, gone_frames: int = 8) -> None:
        self.gone_frames = gone_frames
        self._last: dict[str, int] = {}
        self._n = 0

    def update(self, texts: list[str]) -> list[str]:
        """The texts that are newly in view in this frame."""
        self._n += 1
        fresh = [t for t in dict.fromkeys(texts) if t not in self._last]
        for t in texts:
            self._last[t] = self._n
        for t in [t for t, n in self._last.items() if self._n - n > self.gone_frames]:
            del self._last[t]
        return fresh

    def reset(self) -> None:
        self._last.clear()


class FrameSource:
    """Base of the image sources; subclasses run a producer that calls :meth:`put_frame`."""

    def __init__(self, name: str, decoder: Decoder, still: bool = False, gone_frames: int = 8):
        self.name = name
        self.decoder = decoder
        self.still = still  # single still images: decode with the extra passes
        self.presence = Presence(gone_frames)
        self._cond = threading.Condition()
        self._frame: Any = None
        self._fresh_presentation = False
        self._frame_no = 0
        self._closed = False
        self._ended = False
        self._error = ""
        self._stats = {
            "frames": 0,
            "dropped": 0,
            "decoded_frames": 0,
            "frames_with_code": 0,
            "reads": 0,
            "decode_ms_total": 0.0,
            "decode_ms_max": 0.0,
        }

    # -- producer side ------------------------------------------------------------------------
    def put_frame(self, gray: Any, new_presentation: bool = False) -> int:
        """Hand over the newest frame; returns its number."""
        with self._cond:
            if self._frame is not None:
                self._stats["dropped"] += 1
            self._frame = gray
            self._frame_no += 1
            self._stats["frames"] += 1
            if new_presentation:
                self._fresh_presentation = True
            self._cond.notify_all()
            return self._frame_no

    def fail(self, message: str) -> None:
        """The device failed (unplugged, unreadable): :meth:`read` raises from now on."""
        with self._cond:
            self._error = message
            self._cond.notify_all()

    def finish(self) -> None:
        """A file source reached its end (without looping)."""
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    # -- consumer side ------------------------------------------------------------------------
    def read(self, timeout: float) -> QrRead | None:
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: self._frame is not None or self._closed or bool(self._error),
                    max(0.0, deadline - time.monotonic()),
                )
                if self._error:
                    raise DeviceUnavailable(f"{self.name}: {self._error}")
                if self._closed or self._frame is None:
                    return None
                frame, no = self._frame, self._frame_no
                self._frame = None
                if self._fresh_presentation:
                    self._fresh_presentation = False
                    self.presence.reset()
            t0 = time.perf_counter()
            texts = self.decoder.decode_still(frame) if self.still else self.decoder.decode(frame)
            ms = (time.perf_counter() - t0) * 1000
            fresh = self.presence.update(texts)
            self.decoded(no, texts, ms)
            with self._cond:
                st = self._stats
                st["decoded_frames"] += 1
                st["decode_ms_total"] += ms
                st["decode_ms_max"] = max(st["decode_ms_max"], ms)
                if texts:
                    st["frames_with_code"] += 1
                if fresh:
                    st["reads"] += 1
            if fresh:
                log.debug("%s: frame %d: code read in %.1f ms", self.name, no, ms)
                return QrRead(fresh[0], self.name, no, ms)
            if time.monotonic() >= deadline:
                return None

    def rearm(self) -> None:
        with self._cond:
            self._fresh_presentation = True

    def decoded(self, frame_no: int, texts: list[str], ms: float) -> None:
        """Hook: frame ``frame_no`` was decoded (subclasses may record it)."""

    def stats(self) -> dict[str, Any]:
        with self._cond:
            out: dict[str, Any] = dict(self._stats)
        n = out["decoded_frames"]
        out["decode_ms_mean"] = round(out["decode_ms_total"] / n, 3) if n else None
        out["decode_ms_total"] = round(out["decode_ms_total"], 1)
        out["decode_ms_max"] = round(out["decode_ms_max"], 3)
        out["decoder"] = self.decoder.name
        return out

    def status(self) -> str:
        with self._cond:
            if self._error:
                return f"error: {self._error}"
            if self._closed:
                return "closed"
            if self._ended:
                return "ended"
            return "ready"

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
