"""A simulated camera (``sim://NAME``) implementing :class:`drivers.qr.base.QrSource`.

``ykt sim sale --qr`` and ``ykt sim wallet pay-code --agent`` show it an image (through the
agent's control API): the image file's bytes are decoded by OpenCV into a frame and the frame
goes through the same frame loop and decoder as a real camera's.  Each image shown is a new
presentation, so showing the same picture twice is read twice (and the second payment is
refused as a replay).  As it is a single still picture, the decoder makes its extra passes.
Text can also be handed over directly, as a serial scanner would.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs, urlsplit

from drivers.errors import DeviceUrlError
from drivers.qr.base import QrRead
from drivers.qr.decoders import DEFAULT, decode_image_bytes, get_decoder
from drivers.qr.frames import FrameSource
from sim.errors import SimUsageError
from sim.named import Named

log = logging.getLogger(__name__)

_CAMERAS: Named[SimCamera] = Named("camera")


class SimCamera(FrameSource):
    def __init__(self, name: str, decoder: str = DEFAULT) -> None:
        super().__init__(f"sim://{name}", get_decoder(decoder), still=True)
        self.sim_name = name
        self._texts: list[str] = []
        self._results: dict[int, dict[str, Any]] = {}

    def show_image(self, data: bytes) -> dict[str, Any]:
        """Put a picture (PNG, JPEG …) in front of the camera."""
        try:
            gray = decode_image_bytes(data, "the picture")
        except ValueError as exc:
            raise SimUsageError(str(exc)) from exc
        no = self.put_frame(gray, new_presentation=True)
        h, w = gray.shape[:2]
        return {"presentation": no, "width": w, "height": h, "camera": self.name}

    def decoded(self, frame_no: int, texts: list[str], ms: float) -> None:
        with self._cond:
            self._results[frame_no] = {"read": bool(texts), "decode_ms": round(ms, 2)}
            while len(self._results) > 100:
                del self._results[min(self._results)]
            self._cond.notify_all()

    def wait_result(self, presentation: int, timeout: float) -> dict[str, Any]:
        """Whether the camera read a code in that picture (``read`` is None if it has not
        looked yet, or a newer picture replaced it)."""
        with self._cond:
            self._cond.wait_for(lambda: presentation in self._results, timeout)
            return dict(self._results.get(presentation, {"read": None}))

    def show_frame(self, gray: Any) -> None:
        self.put_frame(gray, new_presentation=True)

    def show_text(self, text: str) -> None:
        """A code read by other means (as a scanner delivers it)."""
        with self._cond:
            self._texts.append(text)
            self._cond.notify_all()

    def read(self, timeout: float) -> QrRead | None:
        with self._cond:
            self._cond.wait_for(lambda: bool(self._texts) or self._frame is not None, timeout)
            if self._texts:
                return QrRead(self._texts.pop(0), self.name, 0, 0.0)
        return super().read(0.0)

    def close(self) -> None:
        super().close()
        _CAMERAS.drop(self.sim_name, self)


def open_url(url: str) -> SimCamera:
    name = _CAMERAS.name_in(url)
    q = {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}
    try:
        cam = SimCamera(name, q.get("decoder", DEFAULT))
    except ValueError as exc:
        raise DeviceUrlError(f"{url}: {exc}") from None
    return _CAMERAS.put(name, cam)


def get(name: str) -> SimCamera:
    return _CAMERAS.get(name)
