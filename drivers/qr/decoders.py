"""QR decoders behind one interface (:class:`drivers.qr.base.Decoder`).

=========== ==============================================================================
``zxing``   zxing-cpp ``read_barcodes`` restricted to QR (the default: 10-12× faster than
            all formats, and the best read rate measured on phone screens, docs/benchmarks.md);
            a symbol it locates but cannot read (blur, glare) gets a second look at a crop
            around it, so extra work is spent only on frames that show a code; under a
            highlight that look is :mod:`drivers.qr.glare` (washed-out modules as erasures)
``zbar``    pyzbar on Debian's ``libzbar0``, with an inverted pass for dark-mode codes
=========== ==============================================================================

Both libraries are optional (the ``camera`` extra); :func:`get_decoder` says how to install a
missing one.  Library errors never escape a decoder: a frame it cannot read is no code.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from drivers.errors import DeviceUnavailable
from drivers.qr import glare

log = logging.getLogger(__name__)

DEFAULT = "zxing"


def _still_variants(gray: Any) -> list[Any]:
    """Extra looks at a still image, in the order that read most of the hard rendered frames
    (blur is the hard case; glare next): unsharp-masked, adaptive threshold, gently
    sharpened, local contrast (CLAHE), flattened illumination, halved."""
    import cv2
    import numpy as np

    def sharpen(sigma: float, amount: float) -> Any:
        soft = cv2.GaussianBlur(gray, (0, 0), sigma)
        return cv2.addWeighted(gray, 1 + amount, soft, -amount, 0)

    out = [
        sharpen(3.0, 2.0),
        cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, cv2.THRESH_BINARY, 31, 5),
        sharpen(2.0, 1.0),
        cv2.createCLAHE(3.0, (8, 8)).apply(gray),
    ]
    light = cv2.GaussianBlur(gray.astype(np.float32), (0, 0), 25)
    out.append(np.clip(gray.astype(np.float32) / (light + 1) * 128, 0, 255).astype(np.uint8))
    h, w = gray.shape[:2]
    if min(h, w) >= 240:
        out.append(cv2.resize(gray, (w // 2, h // 2), interpolation=cv2.INTER_AREA))
    return out


#: (Gaussian sigma in pixels, regularization) tried by :func:`_deblurred`, the most useful first
_WIENER = ((2.5, 0.001), (3.0, 0.001), (2.0, 0.001), (3.5, 0.001), (2.5, 0.003), (3.0, 0.003))


def _hard_looks(gray: Any) -> Iterator[Any]:
    """Every extra look of a still picture, cheapest first: the variants, then deblurred, then
    deblurred after flattening the light (blur and glare together)."""
    yield from _still_variants(gray)
    if gray.ndim != 2 or gray.size > 4096 * 4096:
        return
    yield from _deblurred(gray)
    import cv2
    import numpy as np

    light = cv2.GaussianBlur(gray.astype(np.float32), (0, 0), 8)
    flat = np.clip(gray.astype(np.float32) / (light + 1) * 128, 0, 255).astype(np.uint8)
    yield from _deblurred(flat)


def _deblurred(gray: Any) -> Iterator[Any]:
    """Wiener deconvolution of a Gaussian blur for a few guessed widths (an out-of-focus phone
    is the hardest case; on rendered angled, blurred frames it rescued 9 in 10 of the pictures
    the other passes missed)."""
    import numpy as np

    img = gray.astype(np.float32)
    h, w = img.shape[:2]
    spectrum = np.fft.rfft2(img)
    f2 = (np.fft.fftfreq(h)[:, None] ** 2 + np.fft.rfftfreq(w)[None, :] ** 2).astype(np.float32)
    for sigma, k in _WIENER:
        otf = np.exp(-2 * np.pi**2 * sigma**2 * f2)
        out = np.fft.irfft2(spectrum * (otf / (otf * otf + k)), s=(h, w))
        yield np.clip(out, 0, 255).astype(np.uint8)


#: the most partial detections of a located-but-unread symbol that the crop is laid around
_MAX_LOCATED = 6

#: how far (in sides of a located part) a symbol may reach from the finder of a part of it
#: that zxing-cpp located on its own (a version 10 symbol is 57 modules, a part 11-17)
_FINDER_ONLY_REACH = 3.0


def _crop_box(shape: tuple[int, ...], quad: Any, margin: float = 0.35) -> tuple[int, int, int, int]:
    """The box (x0, y0, x1, y1) around a located symbol's corners, widened by ``margin`` of its
    size on every side (a symbol located in part, a finder pattern lost in glare, still lands
    inside) and at least 64 pixels wide, clipped to the frame."""
    import numpy as np

    pts = np.asarray(quad, np.float32)
    (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
    side = max(float(x1 - x0), float(y1 - y0), 64.0)
    m = margin * side
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = side / 2 + m
    h, w = shape[:2]
    return (
        max(0, int(cx - half)),
        max(0, int(cy - half)),
        min(w, int(cx + half) + 1),
        min(h, int(cy + half) + 1),
    )


def _corners(found: list[Any]) -> list[tuple[float, float]]:
    """The four corners of every detection, in turn."""
    return [
        (c.x, c.y)
        for b in found
        for c in (
            b.position.top_left,
            b.position.top_right,
            b.position.bottom_right,
            b.position.bottom_left,
        )
    ]


def _around_finders(shape: tuple[int, ...], corners: list[tuple[float, float]]) -> tuple[int, ...]:
    """The box (x0, y0, x1, y1) a symbol fits in when only parts of it were located (four
    corners each, as zxing-cpp reports a micro-symbol-like part: its finder at the top-left
    corner, the rest of the part inward): from each part's finder corner, up to
    :data:`_FINDER_ONLY_REACH` of the part's sides inward and a little outward; clipped to the
    frame."""
    import numpy as np

    pts = np.asarray(corners, np.float32).reshape(-1, 4, 2)
    sides = (pts.max(1) - pts.min(1)).max(1)
    side = max(float(sides.max()), 32.0)
    # the parts of one symbol: those near the first (others are stray)
    centres = pts.mean(1)
    pts = pts[np.linalg.norm(centres - centres[0], axis=1) <= 3 * side]
    ends = []
    for tl, tr, _, bl in pts:
        u, v = tr - tl, bl - tl
        for a in (-0.3, _FINDER_ONLY_REACH):
            for b in (-0.3, _FINDER_ONLY_REACH):
                ends.append(tl + a * u + b * v)
    (x0, y0), (x1, y1) = np.min(ends, 0), np.max(ends, 0)
    h, w = shape[:2]
    return (
        max(0, int(x0)),
        max(0, int(y0)),
        min(w, int(x1) + 1),
        min(h, int(y1) + 1),
    )


def _wiener(gray: Any, sigma: float, k: float) -> Any:
    """Wiener deconvolution of a Gaussian blur of ``sigma`` pixels (on a crop: about 1 ms)."""
    import cv2
    import numpy as np

    h, w = gray.shape[:2]
    hh, ww = cv2.getOptimalDFTSize(h), cv2.getOptimalDFTSize(w)
    img = cv2.copyMakeBorder(gray, 0, hh - h, 0, ww - w, cv2.BORDER_REPLICATE).astype(np.float32)
    f2 = (np.fft.fftfreq(hh)[:, None] ** 2 + np.fft.rfftfreq(ww)[None, :] ** 2).astype(np.float32)
    otf = np.exp(np.float32(-2 * np.pi**2 * sigma**2) * f2)
    out = np.fft.irfft2(np.fft.rfft2(img) * (otf / (otf * otf + np.float32(k))), s=(hh, ww))
    return np.clip(out[:h, :w], 0, 255).astype(np.uint8)


def _crop_looks(crop: Any, deblur: bool = True) -> Iterator[Any]:
    """Extra looks at the crop around a located-but-unread symbol, in the order that read most
    of the rendered blurred and glared frames the plain pass missed (sim/phone_screen.py):
    unsharp-masked (blur); thresholded against the local mean (glare: around a highlight the
    dark modules stay below the saturated light ones, but not below the frame's light level);
    the same on a denoised crop with every unsaturated pixel inside a highlight taken as dark;
    deconvolved (heavy blur)."""
    import cv2
    import numpy as np

    soft = cv2.GaussianBlur(crop, (0, 0), 3.0)
    yield cv2.addWeighted(crop, 3.0, soft, -2.0, 0)
    yield cv2.adaptiveThreshold(crop, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 21, 0)
    smooth = cv2.GaussianBlur(crop, (0, 0), 1.0)
    mean = cv2.blur(smooth, (21, 21)).astype(np.int16)
    dark = (smooth < mean - 2) | ((smooth < 252) & (mean > 242))
    yield np.where(dark, 0, 255).astype(np.uint8)
    if deblur:
        yield _wiener(crop, 3.0, 0.001)


class ZxingDecoder:
    name = "zxing"

    def __init__(self) -> None:
        try:
            import zxingcpp
        except ImportError as exc:
            raise DeviceUnavailable(
                "zxing-cpp is not installed: pip install 'ykt[camera]'"
            ) from exc
        self._z = zxingcpp
        self._fmt = zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode)

    def _read(self, gray: Any, **kw: Any) -> list[str]:
        try:
            found = self._z.read_barcodes(gray, formats=self._fmt, **kw)
        except Exception as exc:  # the library's own errors: no code in this frame
            log.debug("zxing-cpp failed on a frame: %s", exc)
            return []
        return [b.text for b in found if b.valid and b.text]

    def decode(self, gray: Any) -> list[str]:
        """The codes in one camera frame.  A symbol that zxing-cpp located but could not read
        (a checksum or format error: blur, glare) gets a second look at a crop around it: under
        a highlight first the glare reader (its saturated modules as Reed-Solomon erasures),
        then sharpened, binarized locally, deblurred (not under a highlight); a frame with no
        symbol costs nothing more."""
        try:
            found = self._z.read_barcodes(gray, formats=self._fmt, return_errors=True)
        except Exception as exc:  # the library's own errors: no code in this frame
            log.debug("zxing-cpp failed on a frame: %s", exc)
            return []
        texts = [b.text for b in found if b.valid and b.text]
        if texts or not found:
            return texts
        # zxing-cpp reports one symbol as several partial detections: one crop around them all
        corners = _corners(found[:_MAX_LOCATED])
        if gray.ndim != 2:
            return []
        import numpy as np

        # a highlight: the modules it washed out are read as erasures (drivers/qr/glare.py);
        # with no whole symbol located (a finder lost in the light) the crop must reach as far
        # as the symbol may extend from the finder that was found
        located = found[:_MAX_LOCATED]
        whole = [b for b in located if b.format == self._z.BarcodeFormat.QRCode]
        if whole:
            x0, y0, x1, y1 = _crop_box(gray.shape, _corners(whole[:1]))
        else:
            x0, y0, x1, y1 = _around_finders(gray.shape, _corners(located))
        wide = gray[y0:y1, x0:x1]
        highlight = x1 - x0 >= 16 and y1 - y0 >= 16 and glare.has_highlight(wide)
        if highlight:
            try:
                got = glare.read(np.ascontiguousarray(wide))
            except Exception as exc:  # odd geometry: no code from this look, never a crash
                log.debug("glare reader failed on a crop: %s", exc)
                got = []
            if got:
                return got
        x0, y0, x1, y1 = _crop_box(gray.shape, corners)
        if x1 - x0 < 16 or y1 - y0 < 16:
            return []
        crop = np.ascontiguousarray(gray[y0:y1, x0:x1])
        # under a highlight the deconvolution read none of the rendered frames the rest missed
        for look in _crop_looks(crop, deblur=not highlight):
            got = self._read(look, try_rotate=False)
            if got:
                return got
        return []

    def decode_still(self, gray: Any) -> list[str]:
        """The codes in a still picture: the camera path first (with its second look at a
        located symbol), then whole-picture passes on sharpened, thresholded, deblurred looks."""
        got = self.decode(gray) or self._read(gray, binarizer=self._z.Binarizer.GlobalHistogram)
        for look in _hard_looks(gray):
            if got:
                break
            got = self._read(look)
        return got


class ZbarDecoder:
    name = "zbar"

    def __init__(self) -> None:
        try:
            from pyzbar import pyzbar
        except ImportError as exc:  # pyzbar missing, or Debian's libzbar0 missing
            raise DeviceUnavailable(
                f"pyzbar is unusable ({exc}): pip install 'ykt[camera]' and apt-get install "
                "--no-install-recommends libzbar0"
            ) from exc
        self._zbar = pyzbar
        self._symbols = [pyzbar.ZBarSymbol.QRCODE]

    def _read(self, gray: Any) -> list[str]:
        try:
            found = self._zbar.decode(gray, symbols=self._symbols)
        except Exception as exc:
            log.debug("zbar failed on a frame: %s", exc)
            return []
        out = []
        for sym in found:
            try:
                out.append(sym.data.decode("utf-8"))
            except UnicodeDecodeError:
                continue
        return out

    def decode(self, gray: Any) -> list[str]:
        got = self._read(gray)
        if not got:  # dark mode: zbar reads only dark-on-light codes
            got = self._read(255 - gray)
        return got

    def decode_still(self, gray: Any) -> list[str]:
        got = self.decode(gray)
        for look in _hard_looks(gray):
            if got:
                break
            got = self.decode(look)
        return got


DECODERS: dict[str, type[ZxingDecoder] | type[ZbarDecoder]] = {
    "zxing": ZxingDecoder,
    "zbar": ZbarDecoder,
}


def get_decoder(name: str = DEFAULT) -> ZxingDecoder | ZbarDecoder:
    """A decoder by name (``zxing`` or ``zbar``); :class:`DeviceUnavailable` when its library
    is missing, :class:`ValueError` for an unknown name."""
    try:
        cls = DECODERS[name]
    except KeyError:
        raise ValueError(f"unknown QR decoder {name!r} (known: {', '.join(DECODERS)})") from None
    return cls()


def to_gray(image: Any) -> Any:
    """A grayscale ``uint8`` view of a camera frame (BGR, BGRA or already gray)."""
    import cv2

    if image.ndim == 2:
        return image
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def yuyv_luma(frame: Any, width: int, height: int) -> Any:
    """The Y plane of a raw YUYV (YUY2) frame: every other byte (0.1 ms, cheaper than any
    colour conversion or MJPEG decode)."""
    import numpy as np

    flat = np.asarray(frame, dtype=np.uint8).reshape(-1)
    if flat.size != width * height * 2:
        raise ValueError(f"a {width}x{height} YUYV frame is {width * height * 2} bytes")
    return flat.reshape(height, width * 2)[:, 0::2]


def read_image(path: Any) -> Any:
    """A grayscale image from a file (PNG, JPEG …) through OpenCV; ValueError if unreadable."""
    import numpy as np

    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc
    return decode_image_bytes(data.tobytes(), str(path))


def decode_image_bytes(data: bytes, what: str = "image") -> Any:
    import cv2
    import numpy as np

    img = None
    if data:
        try:
            img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        except cv2.error:
            img = None
    if img is None:
        raise ValueError(f"{what} is not an image OpenCV can read")
    if img.dtype != np.uint8:  # 16-bit PNGs and the like
        img = cv2.convertScaleAbs(img, alpha=255.0 / max(1.0, float(img.max())))
    if img.ndim == 3 and img.shape[2] in (2, 4):  # transparency: lay it on a white screen
        alpha = img[:, :, -1:].astype(np.float32) / 255.0
        color = img[:, :, :-1].astype(np.float32)
        img = (color * alpha + 255.0 * (1 - alpha)).astype(np.uint8)
        if img.shape[2] == 1:
            img = img[:, :, 0]
    return to_gray(img)
