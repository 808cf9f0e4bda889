"""Realistic camera frames of a phone screen showing a QR code, for tests, the benchmark and
test engineers without a phone: the code is drawn on a phone screen (light or dark mode), the
phone is held at an angle (a perspective warp), and the camera adds what real ones add: blur,
low light, glare, sensor noise, a small code far away.

Conditions (as in the probe of docs/benchmarks.md): ``clean``, ``tilt``, ``blur``, ``low_light``,
``glare``, ``small``, ``inverted`` (dark mode), ``mixed`` (a bit of everything).
Needs numpy and OpenCV (the ``camera`` extra) and segno.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import segno

CONDITIONS = ("clean", "tilt", "blur", "low_light", "glare", "small", "inverted", "mixed")


@lru_cache(maxsize=64)
def qr_matrix(text: str) -> Any:
    """The code's modules as a 2-D uint8 array (1 = dark), quiet zone included."""
    import numpy as np

    qr = segno.make(text, error="m", micro=False)
    out = np.array([list(row) for row in qr.matrix_iter(border=4)], dtype=np.uint8)
    out.setflags(write=False)
    return out


def qr_version(text: str) -> int:
    return int(segno.make(text, error="m", micro=False).version)


def qr_png(text: str, path: Any, scale: int = 8) -> None:
    """Write the code as a plain PNG (what the phone's screen shows)."""
    segno.make(text, error="m", micro=False).save(path, kind="png", scale=scale, border=4)


@dataclass
class Look:
    """How one frame is taken; :func:`look_for` draws one per condition."""

    code_px: float = 260.0  # width of the code (with quiet zone) in the frame, in pixels
    tilt_x: float = 0.0  # degrees the phone is tilted about its horizontal axis
    tilt_y: float = 0.0  # … about its vertical axis
    roll: float = 0.0  # degrees the phone is turned in the image plane
    blur: float = 0.0  # Gaussian blur sigma in pixels (out of focus, motion)
    light: float = 1.0  # scene brightness (low light < 1)
    glare: float = 0.0  # strength of a specular highlight over the code, 0..1
    inverted: bool = False  # dark mode: light modules on a dark screen
    noise: float = 2.0  # sensor noise sigma (grey levels)
    dx: float = 0.0  # offset of the phone from the centre, as a fraction of the frame
    dy: float = 0.0


def look_for(condition: str, rng: random.Random, size: tuple[int, int] = (1280, 720)) -> Look:
    """A random look for a named condition (scaled to the frame size)."""
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r} (known: {', '.join(CONDITIONS)})")
    k = size[1] / 720
    lk = Look(
        code_px=rng.uniform(220, 320) * k,
        roll=rng.uniform(-8, 8),
        tilt_x=rng.uniform(-5, 5),
        tilt_y=rng.uniform(-5, 5),
        dx=rng.uniform(-0.15, 0.15),
        dy=rng.uniform(-0.1, 0.1),
        noise=rng.uniform(1, 3),
    )
    if condition == "tilt":
        lk.tilt_x, lk.tilt_y = rng.uniform(-30, 30), rng.uniform(-30, 30)
        lk.roll = rng.uniform(-25, 25)
    elif condition == "blur":
        lk.blur = rng.uniform(1.8, 3.6) * k
    elif condition == "low_light":
        lk.light, lk.noise = rng.uniform(0.1, 0.25), rng.uniform(3, 7)
    elif condition == "glare":
        lk.glare = rng.uniform(0.5, 1.2)
    elif condition == "small":
        lk.code_px = rng.uniform(100, 150) * k
    elif condition == "inverted":
        lk.inverted = True
    elif condition == "mixed":
        lk.tilt_x, lk.tilt_y = rng.uniform(-20, 20), rng.uniform(-20, 20)
        lk.blur = rng.uniform(0.8, 2.4) * k
        lk.light = rng.uniform(0.3, 0.9)
        lk.glare = rng.uniform(0.0, 1.0)
        lk.code_px = rng.uniform(170, 260) * k
        lk.inverted = rng.random() < 0.3
        lk.noise = rng.uniform(2, 4)
    return lk


def _background(w: int, h: int, rng: random.Random) -> Any:
    import cv2
    import numpy as np

    base = rng.uniform(60, 150)
    gx = np.linspace(-rng.uniform(10, 40), rng.uniform(10, 40), w, dtype=np.float32)
    gy = np.linspace(-rng.uniform(10, 30), rng.uniform(10, 30), h, dtype=np.float32)
    bg = np.float32(base) + gx[None, :] + gy[:, None]
    blobs = np.zeros((h // 16 + 1, w // 16 + 1), np.float32)
    for _ in range(6):
        cv2.circle(
            blobs,
            (rng.randrange(blobs.shape[1]), rng.randrange(blobs.shape[0])),
            rng.randrange(2, 10),
            rng.uniform(-40, 40),
            -1,
        )
    bg += cv2.resize(cv2.GaussianBlur(blobs, (0, 0), 2), (w, h))
    return bg


def render(
    text: str,
    look: Look | None = None,
    size: tuple[int, int] = (1280, 720),
    seed: int = 0,
    present: bool = True,
) -> Any:
    """One grayscale camera frame (``uint8``, ``size`` = (width, height)) of a phone showing
    ``text`` as a QR code, or of the scene with no phone when ``present`` is false."""
    import cv2
    import numpy as np

    rng = random.Random(seed)
    look = look or Look()
    w, h = size
    frame = _background(w, h, rng)
    if present:
        mods = qr_matrix(text)
        n = mods.shape[0]
        px = max(2, math.ceil(look.code_px / n))  # supersample: draw sharp, warp down
        dark, light = (225.0, 30.0) if look.inverted else (20.0, 235.0)
        cells = np.where(mods == 1, dark, light).astype(np.float32)
        code = cv2.resize(cells, (n * px, n * px), interpolation=cv2.INTER_NEAREST)
        # the phone: screen around the code, body around the screen
        side = n * px
        screen_w, screen_h = int(side * 1.25), int(side * 2.0)
        screen_val = 30.0 if look.inverted else 235.0
        phone = np.full((screen_h + side // 5, screen_w + side // 10), 15.0, np.float32)
        oy, ox = side // 10, side // 20
        phone[oy : oy + screen_h, ox : ox + screen_w] = screen_val
        cy, cx = oy + (screen_h - side) // 2, ox + (screen_w - side) // 2
        phone[cy : cy + side, cx : cx + side] = code
        ph, pw = phone.shape
        # where the phone's corners land: scale, tilt (perspective), roll, offset
        scale = look.code_px / side
        corners = np.array(
            [[-pw / 2, -ph / 2], [pw / 2, -ph / 2], [pw / 2, ph / 2], [-pw / 2, ph / 2]],
            np.float32,
        )
        ax, ay, az = (math.radians(a) for a in (look.tilt_x, look.tilt_y, look.roll))
        pts = []
        f = 1.6 * max(w, h)  # focal length in pixels
        dist = f / scale
        for x, y in corners:
            # rotate about y (tilt_y), x (tilt_x), then z (roll)
            x1, z1 = x * math.cos(ay), x * math.sin(ay)
            y1, z2 = y * math.cos(ax), y * math.sin(ax)
            z = z1 + z2 + dist
            u, v = f * x1 / z, f * y1 / z
            u, v = (
                u * math.cos(az) - v * math.sin(az),
                u * math.sin(az) + v * math.cos(az),
            )
            pts.append([w / 2 + look.dx * w + u, h / 2 + look.dy * h + v])
        dst = np.array(pts, np.float32)
        src = np.array([[0, 0], [pw, 0], [pw, ph], [0, ph]], np.float32)
        m = cv2.getPerspectiveTransform(src, dst)
        warped = cv2.warpPerspective(phone, m, (w, h), flags=cv2.INTER_AREA, borderValue=-1.0)
        mask = cv2.warpPerspective(
            np.ones_like(phone), m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0.0
        )
        frame = frame * (1 - mask) + np.maximum(warped, 0) * mask
        frame = frame.astype(np.float32, copy=False)
        if look.glare > 0:  # a specular highlight over part of the screen
            gx = w / 2 + look.dx * w + rng.uniform(-0.3, 0.3) * look.code_px
            gy = h / 2 + look.dy * h + rng.uniform(-0.3, 0.3) * look.code_px
            r = look.code_px * rng.uniform(0.18, 0.3)
            x0, x1 = max(0, int(gx - 5 * r)), min(w, int(gx + 5 * r) + 1)
            y0, y1 = max(0, int(gy - 3 * r)), min(h, int(gy + 3 * r) + 1)
            if x0 < x1 and y0 < y1:
                xs = ((np.arange(x0, x1, dtype=np.float32) - gx) / (r * 1.6)) ** 2
                ys = ((np.arange(y0, y1, dtype=np.float32) - gy) / r) ** 2
                spot = np.exp(-(ys[:, None] + xs[None, :]))
                frame[y0:y1, x0:x1] += look.glare * 255 * spot * mask[y0:y1, x0:x1]
    if look.blur > 0:
        frame = cv2.GaussianBlur(frame, (0, 0), look.blur)
    frame *= look.light
    nrng = np.random.default_rng(seed)
    frame += nrng.standard_normal(frame.shape, dtype=np.float32) * np.float32(look.noise)
    return np.clip(frame, 0, 255).astype(np.uint8)


def presentation(
    text: str,
    condition: str,
    frames: int = 12,
    size: tuple[int, int] = (1280, 720),
    seed: int = 0,
) -> list[Any]:
    """The frames a camera takes while a phone is held up for about half a second: one look,
    with the small movements (shift, angle, focus) of a hand between frames."""
    rng = random.Random(seed)
    base = look_for(condition, rng, size)
    out = []
    for i in range(frames):
        lk = Look(**vars(base))
        lk.dx += rng.uniform(-0.01, 0.01)
        lk.dy += rng.uniform(-0.01, 0.01)
        lk.tilt_x += rng.uniform(-1.5, 1.5)
        lk.tilt_y += rng.uniform(-1.5, 1.5)
        lk.roll += rng.uniform(-1, 1)
        if lk.blur:
            lk.blur = max(0.0, lk.blur * rng.uniform(0.7, 1.2))
        out.append(render(text, lk, size, seed=seed * 1000 + i))
    return out
