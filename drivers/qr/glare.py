"""Reading a QR symbol that a highlight has washed out in part (ISO/IEC 18004, model 2).

Where a specular highlight saturates the sensor, dark and light modules alike come out white:
the information is gone, and zxing-cpp (which corrects errors, not erasures) guesses them as
light; when the highlight sits on a finder pattern it does not even locate the symbol.  This
module reads such a symbol itself:

1. the finder patterns are found as nested contours of a binarized crop; when only two are
   visible, the third is placed where the geometry puts it, on the condition that that spot is
   washed out (a hidden finder is only believed inside a highlight);
2. the module grid is sampled through the perspective the finders (and the alignment pattern,
   when visible) give; a module is dark when it is clearly darker than the light around it,
   light when it is as bright as that light, and *erased* when it sits in saturated light and
   is itself saturated (it could be either);
3. the format information is taken from whichever copy reads best; the data modules are
   unmasked and read into codewords in the standard order, the codewords touched by an erased
   module become erasures, and Reed-Solomon decoding (``reedsolo``) restores up to twice as
   many erased codewords as it could correct unknown errors;
4. the segments (numeric, alphanumeric, byte) are parsed, and the padding after them checked.

Only versions 1-10 are read (a phone code is version 5): :data:`EC_BLOCKS` holds their block
structure.  A text read here is an ordinary decoded text: it still goes through the code
verifier like any other.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

#: version -> EC level -> ((blocks, total codewords per block, data codewords per block), ...)
EC_BLOCKS: dict[int, dict[str, tuple[tuple[int, int, int], ...]]] = {
    1: {"L": ((1, 26, 19),), "M": ((1, 26, 16),), "Q": ((1, 26, 13),), "H": ((1, 26, 9),)},
    2: {"L": ((1, 44, 34),), "M": ((1, 44, 28),), "Q": ((1, 44, 22),), "H": ((1, 44, 16),)},
    3: {"L": ((1, 70, 55),), "M": ((1, 70, 44),), "Q": ((2, 35, 17),), "H": ((2, 35, 13),)},
    4: {"L": ((1, 100, 80),), "M": ((2, 50, 32),), "Q": ((2, 50, 24),), "H": ((4, 25, 9),)},
    5: {
        "L": ((1, 134, 108),),
        "M": ((2, 67, 43),),
        "Q": ((2, 33, 15), (2, 34, 16)),
        "H": ((2, 33, 11), (2, 34, 12)),
    },
    6: {"L": ((2, 86, 68),), "M": ((4, 43, 27),), "Q": ((4, 43, 19),), "H": ((4, 43, 15),)},
    7: {
        "L": ((2, 98, 78),),
        "M": ((4, 49, 31),),
        "Q": ((2, 32, 14), (4, 33, 15)),
        "H": ((4, 39, 13), (1, 40, 14)),
    },
    8: {
        "L": ((2, 121, 97),),
        "M": ((2, 60, 38), (2, 61, 39)),
        "Q": ((4, 40, 18), (2, 41, 19)),
        "H": ((4, 40, 14), (2, 41, 15)),
    },
    9: {
        "L": ((2, 146, 116),),
        "M": ((3, 58, 36), (2, 59, 37)),
        "Q": ((4, 36, 16), (4, 37, 17)),
        "H": ((4, 36, 12), (4, 37, 13)),
    },
    10: {
        "L": ((2, 86, 68), (2, 87, 69)),
        "M": ((4, 69, 43), (1, 70, 44)),
        "Q": ((6, 43, 19), (2, 44, 20)),
        "H": ((6, 43, 15), (2, 44, 16)),
    },
}

#: the EC level's two format bits (ISO/IEC 18004 table 12)
_LEVEL_BITS = {"L": 1, "M": 0, "Q": 3, "H": 2}

ALPHANUMERIC = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"

#: a module this bright (grey level, of 255) inside a highlight is taken as saturated
SATURATED = 248
#: … and erased when the darkest module next to it is lifted at least this far by the light
LIFTED = 200

#: a crop with fewer saturated pixels has no highlight (sensor noise makes a few)
HIGHLIGHT_PIXELS = 64


def has_highlight(gray: Any) -> bool:
    """Whether a crop holds a highlight (:data:`HIGHLIGHT_PIXELS` saturated pixels or more)."""
    import numpy as np

    return int(np.count_nonzero(gray >= SATURATED)) >= HIGHLIGHT_PIXELS


#: at most this many (hypothesis, version) module grids are tried per crop
_MAX_TRIES = 6


def _format_word(level: str, mask: int) -> int:
    data = (_LEVEL_BITS[level] << 3) | mask
    rem = data << 10
    for i in range(14, 9, -1):  # BCH(15, 5), generator x^10+x^8+x^5+x^4+x^2+x+1
        if rem & (1 << i):
            rem ^= 0x537 << (i - 10)
    return ((data << 10) | rem) ^ 0x5412


FORMAT_WORDS = {(lv, m): _format_word(lv, m) for lv in "LMQH" for m in range(8)}


def _format_cells(n: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The (row, column) of the 15 format bits, most significant first, in both copies."""
    first = [(8, c) for c in range(6)] + [(8, 7), (8, 8), (7, 8)] + [(r, 8) for r in (5, 4, 3)]
    first += [(r, 8) for r in (2, 1, 0)]
    second = [(r, 8) for r in range(n - 1, n - 8, -1)] + [(8, c) for c in range(n - 8, n)]
    return first, second


def alignment_centers(version: int) -> list[int]:
    if version == 1:
        return []
    n = 4 * version + 17
    count = version // 7 + 2
    last = n - 7
    step = 0 if count == 2 else math.ceil((last - 6) / (count - 1) / 2) * 2
    return [6] + [last - step * (count - 2 - i) for i in range(count - 1)]


@lru_cache(maxsize=16)
def function_mask(version: int) -> Any:
    """Boolean N×N: True where a module is not data (finders, separators, timing, alignment,
    format and version information, the dark module)."""
    import numpy as np

    n = 4 * version + 17
    f = np.zeros((n, n), bool)
    f[:9, :9] = True
    f[:9, n - 8 :] = True
    f[n - 8 :, :9] = True
    f[6, :] = True
    f[:, 6] = True
    centers = alignment_centers(version)
    for r in centers:
        for c in centers:
            if (r < 9 and c < 9) or (r < 9 and c > n - 9) or (r > n - 9 and c < 9):
                continue
            f[r - 2 : r + 3, c - 2 : c + 3] = True
    if version >= 7:
        f[:6, n - 11 : n - 8] = True
        f[n - 11 : n - 8, :6] = True
    return f


@lru_cache(maxsize=16)
def _mask_bits(mask: int, n: int) -> Any:
    import numpy as np

    i, j = np.indices((n, n))
    conds = (
        (i + j) % 2 == 0,
        i % 2 == 0,
        j % 3 == 0,
        (i + j) % 3 == 0,
        (i // 2 + j // 3) % 2 == 0,
        (i * j) % 2 + (i * j) % 3 == 0,
        ((i * j) % 2 + (i * j) % 3) % 2 == 0,
        ((i + j) % 2 + (i * j) % 3) % 2 == 0,
    )
    return conds[mask]


@lru_cache(maxsize=16)
def data_order(version: int) -> tuple[Any, Any]:
    """The rows and columns of the data modules in the order their bits are placed (two
    columns at a time from the right, up and down in turn, skipping the vertical timing
    pattern)."""
    import numpy as np

    n = 4 * version + 17
    func = function_mask(version)
    rows: list[int] = []
    cols: list[int] = []
    upward = True
    col = n - 1
    while col > 0:
        if col == 6:
            col -= 1
        for r in range(n - 1, -1, -1) if upward else range(n):
            for c in (col, col - 1):
                if not func[r, c]:
                    rows.append(r)
                    cols.append(c)
        upward = not upward
        col -= 2
    return np.array(rows, np.intp), np.array(cols, np.intp)


def decode_modules(dark: Any, erased: Any) -> str | None:
    """The text of a sampled symbol: ``dark`` and ``erased`` are N×N booleans (an erased module
    is unknown); None when the format cannot be read, the Reed-Solomon decoding fails or the
    bit stream is not a well-formed QR message."""
    import numpy as np

    n = dark.shape[0]
    version = (n - 17) // 4
    if version not in EC_BLOCKS or n != 4 * version + 17:
        return None
    level_mask = _read_format(dark, erased)
    if level_mask is None:
        return None
    level, mask = level_mask
    rows, cols = data_order(version)
    bits = dark[rows, cols] ^ _mask_bits(mask, n)[rows, cols]
    gone = erased[rows, cols]
    blocks = EC_BLOCKS[version][level]
    total = sum(b * t for b, t, _ in blocks)
    bits, gone = bits[: total * 8], gone[: total * 8]
    codewords = np.packbits(bits.astype(np.uint8)).tolist()
    # a codeword with an erased module is an erasure; when that is more than the blocks carry,
    # the codewords at the highlight's rim with a single erased module keep their guess (a
    # saturated module there is most likely light), then those with two
    counts = gone.reshape(total, 8).sum(1)
    for least in (1, 2, 3):
        if least > 1 and not np.any(counts == least - 1):
            continue
        data = _correct(codewords, (counts >= least).tolist(), blocks)
        if data is not None:
            return _parse(data, version)
    return None


def _read_format(dark: Any, erased: Any) -> tuple[str, int] | None:
    n = dark.shape[0]
    best: tuple[int, str, int] | None = None
    for cells in _format_cells(n):
        known = [(r, c) for r, c in cells if not erased[r, c]]
        if len(known) < 10:
            continue
        word = 0
        for r, c in cells:
            word = (word << 1) | int(bool(dark[r, c]))
        care = 0
        for k, (r, c) in enumerate(cells):
            if not erased[r, c]:
                care |= 1 << (14 - k)
        for (lv, m), w in FORMAT_WORDS.items():
            dist = bin((w ^ word) & care).count("1")
            if best is None or dist < best[0]:
                best = (dist, lv, m)
    if best is None or best[0] > 3:
        return None
    return best[1], best[2]


# -- Reed-Solomon over GF(256) (x^8+x^4+x^3+x^2+1, generator roots 2^0 .. 2^(nsym-1)) ---------

_EXP = [0] * 512
_LOG = [0] * 256
_v = 1
for _i in range(255):
    _EXP[_i] = _v
    _LOG[_v] = _i
    _v <<= 1
    if _v & 0x100:
        _v ^= 0x11D
for _i in range(255, 512):
    _EXP[_i] = _EXP[_i - 255]
del _v, _i


def _mul(a: int, b: int) -> int:
    return 0 if a == 0 or b == 0 else _EXP[_LOG[a] + _LOG[b]]


def _syndromes(block: list[int], nsym: int) -> list[int]:
    import numpy as np

    r = np.asarray(block, np.int64)
    n = len(block)
    nz = np.nonzero(r)[0]
    if nz.size == 0:
        return [0] * nsym
    logs = np.asarray(_LOG, np.int64)[r[nz]]
    powers = (n - 1 - nz).astype(np.int64)
    j = np.arange(nsym, dtype=np.int64)
    terms = np.asarray(_EXP, np.int64)[(logs[None, :] + j[:, None] * powers[None, :]) % 255]
    return [int(v) for v in np.bitwise_xor.reduce(terms, axis=1)]


def rs_correct(block: list[int], nsym: int, erasures: list[int]) -> tuple[list[int], int] | None:
    """``block`` (data then EC codewords, as a QR stores them) with its errors and the erasures
    (positions) corrected, and the number of errors found; None when it cannot be corrected
    (errors-and-erasures Berlekamp-Massey, Chien search, Forney)."""
    import numpy as np

    n = len(block)
    synd = _syndromes(block, nsym)
    if not any(synd) and not erasures:
        return list(block), 0
    # the erasure locator, then Berlekamp-Massey on top of it
    lam = [1]
    for pos in erasures:
        x = _EXP[n - 1 - pos]
        lam = [a ^ _mul(x, b) for a, b in zip([*lam, 0], [0, *lam], strict=True)]
    e = len(erasures)
    big_l = e
    b_poly = list(lam)
    for r in range(e + 1, nsym + 1):
        delta = 0
        for j, c in enumerate(lam):
            if r - 1 - j >= 0:
                delta ^= _mul(c, synd[r - 1 - j])
        xb = [0, *b_poly]
        if delta == 0:
            b_poly = xb
            continue
        size = max(len(lam), len(xb))
        new = [
            (lam[k] if k < len(lam) else 0) ^ (_mul(delta, xb[k]) if k < len(xb) else 0)
            for k in range(size)
        ]
        if 2 * big_l <= r - 1 + e:
            inv = _EXP[255 - _LOG[delta]]
            b_poly = [_mul(c, inv) for c in lam]
            big_l = r - big_l + e
        else:
            b_poly = xb
        lam = new
    while len(lam) > 1 and lam[-1] == 0:
        lam.pop()
    degree = len(lam) - 1
    if degree != big_l or 2 * (degree - e) + e > nsym:
        return None
    # Chien search: the roots X^-1 among the block's positions
    positions = np.arange(n, dtype=np.int64)
    exp_t, log_t = np.asarray(_EXP, np.int64), np.asarray(_LOG, np.int64)
    value = np.zeros(n, np.int64)
    for d, c in enumerate(lam):
        if c:
            value ^= exp_t[(log_t[c] - d * (n - 1 - positions)) % 255]
    roots = [int(i) for i in np.nonzero(value == 0)[0]]
    if len(roots) != degree:
        return None
    # Forney: error value X * Omega(X^-1) / Psi'(X^-1)
    omega = [0] * nsym
    for i, s in enumerate(synd):
        if s:
            for j, c in enumerate(lam):
                if i + j < nsym:
                    omega[i + j] ^= _mul(s, c)
    out = list(block)
    for i in roots:
        xl = n - 1 - i  # log of X
        xinv = (255 - xl) % 255
        num = 0
        for d, c in enumerate(omega):
            if c:
                num ^= _EXP[(_LOG[c] + d * xinv) % 255]
        den = 0
        for d in range(1, len(lam), 2):
            if lam[d]:
                den ^= _EXP[(_LOG[lam[d]] + (d - 1) * xinv) % 255]
        if den == 0:
            return None
        out[i] ^= _mul(_EXP[xl], _mul(num, _EXP[255 - _LOG[den]])) if num else 0
    if any(_syndromes(out, nsym)):
        return None
    return out, degree - e


def _correct(
    codewords: list[int], lost: list[bool], blocks: tuple[tuple[int, int, int], ...]
) -> bytes | None:
    """The data codewords of all blocks, de-interleaved and corrected; None if any block is
    beyond repair (a margin of one symbol is kept against a wrong "correction")."""
    shapes = [(t, d) for b, t, d in blocks for _ in range(b)]
    data_idx: list[list[int]] = [[] for _ in shapes]
    k = 0
    for i in range(max(d for _, d in shapes)):
        for bi, (_, d) in enumerate(shapes):
            if i < d:
                data_idx[bi].append(k)
                k += 1
    ec_idx: list[list[int]] = [[] for _ in shapes]
    for i in range(max(t - d for t, d in shapes)):
        for bi, (t, d) in enumerate(shapes):
            if i < t - d:
                ec_idx[bi].append(k)
                k += 1
    out = bytearray()
    for bi, (t, d) in enumerate(shapes):
        idx = data_idx[bi] + ec_idx[bi]
        erase = [p for p, j in enumerate(idx) if lost[j]]
        nsym = t - d
        if len(erase) > nsym - 1:
            return None
        fixed = rs_correct([codewords[j] for j in idx], nsym, erase)
        if fixed is None or 2 * fixed[1] + len(erase) > nsym - 1:
            return None
        out += bytes(fixed[0][:d])
    return bytes(out)


class _Bits:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def left(self) -> int:
        return len(self.data) * 8 - self.pos

    def take(self, n: int) -> int:
        if n > self.left():
            raise ValueError("bit stream too short")
        v = 0
        for _ in range(n):
            byte = self.data[self.pos >> 3]
            v = (v << 1) | ((byte >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return v


def _parse(data: bytes, version: int) -> str | None:
    """The text of a corrected data stream (numeric, alphanumeric and byte segments; byte
    segments as UTF-8, else ISO 8859-1); None for anything else or a malformed stream."""
    widths = {1: 10, 2: 9, 4: 8} if version <= 9 else {1: 12, 2: 11, 4: 16}
    bits = _Bits(data)
    raw = bytearray()
    try:
        while bits.left() >= 4:
            mode = bits.take(4)
            if mode == 0:
                break
            if mode not in widths:
                return None
            count = bits.take(widths[mode])
            if mode == 4:
                raw += bytes(bits.take(8) for _ in range(count))
            elif mode == 2:
                for _ in range(count // 2):
                    v = bits.take(11)
                    if v >= 45 * 45:
                        return None
                    raw += (ALPHANUMERIC[v // 45] + ALPHANUMERIC[v % 45]).encode()
                if count % 2:
                    v = bits.take(6)
                    if v >= 45:
                        return None
                    raw += ALPHANUMERIC[v].encode()
            else:
                for _ in range(count // 3):
                    v = bits.take(10)
                    if v > 999:
                        return None
                    raw += f"{v:03d}".encode()
                if count % 3 == 2:
                    v = bits.take(7)
                    if v > 99:
                        return None
                    raw += f"{v:02d}".encode()
                elif count % 3 == 1:
                    v = bits.take(4)
                    if v > 9:
                        return None
                    raw += str(v).encode()
    except ValueError:
        return None
    # after the terminator: zero bits to the byte boundary (some encoders add a zero byte
    # more), then 0xEC 0x11 padding
    while bits.pos % 8 and bits.left():
        if bits.take(1):
            return None
    pad = data[bits.pos // 8 :].lstrip(b"\x00")
    if any(b != (0xEC, 0x11)[i % 2] for i, b in enumerate(pad)):
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:  # no ECI: the standard's default character set
        return raw.decode("latin-1")


# -- finding and sampling the symbol in an image ----------------------------------------------


def _finders(crop: Any) -> list[tuple[float, float, float]]:
    """Finder pattern candidates (x, y, module pitch) in a grayscale crop: a dark ring around
    a light ring around a dark core, as nested contours of a locally thresholded picture."""
    import cv2
    import numpy as np

    smooth = cv2.GaussianBlur(crop, (0, 0), 1.0)
    mean = cv2.blur(smooth, (25, 25)).astype(np.int16)
    dark = ((smooth < mean - 4) | ((smooth < SATURATED) & (mean > 242))).astype(np.uint8)
    contours, hier = cv2.findContours(dark, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    if hier is None:
        return []
    h = hier[0]
    out: list[tuple[float, float, float]] = []
    for i, cnt in enumerate(contours):
        hole = h[i][2]
        if hole < 0:
            continue
        core = h[hole][2]
        if core < 0:
            continue
        a_out = cv2.contourArea(cnt)
        a_hole = cv2.contourArea(contours[hole])
        a_core = cv2.contourArea(contours[core])
        if a_out < 49 or a_core <= 0 or a_hole <= 0:
            continue
        if not (1.3 < a_out / a_hole < 3.5 and 2.5 < a_out / a_core < 12):
            continue
        _, _, w, hh = cv2.boundingRect(cnt)
        if not 0.5 < w / hh < 2.0:
            continue
        m = cv2.moments(contours[core])
        if m["m00"] <= 0:
            continue
        cx, cy = m["m10"] / m["m00"], m["m01"] / m["m00"]
        pitch = math.sqrt(a_out) / 7
        if any(abs(cx - ox) < 2 * pitch and abs(cy - oy) < 2 * pitch for ox, oy, _ in out):
            continue
        out.append((cx, cy, pitch))
    return out


def _triples(
    finders: list[tuple[float, float, float]], bright: Any
) -> Iterator[tuple[Any, Any, Any, float]]:
    """(top-left, top-right, bottom-left, pitch) hypotheses: from three finders that form a
    right angle, or from two with the third hidden in a washed-out spot of ``bright``."""
    import numpy as np

    pts = [(np.array([x, y], np.float64), p) for x, y, p in finders[:5]]

    def perp(v: Any) -> Any:
        return np.array([-v[1], v[0]])

    for i in range(len(pts)):
        for j in range(len(pts)):
            for k in range(len(pts)):
                if len({i, j, k}) < 3 or j > k:
                    continue
                a, b, c = pts[i][0], pts[j][0], pts[k][0]
                u, v = b - a, c - a
                lu, lv = np.linalg.norm(u), np.linalg.norm(v)
                if not 0.8 < lu / lv < 1.25 or abs(u @ v) > 0.25 * lu * lv:
                    continue
                pitch = (pts[i][1] + pts[j][1] + pts[k][1]) / 3
                if u[0] * v[1] - u[1] * v[0] > 0:
                    yield a, b, c, pitch
                else:
                    yield a, c, b, pitch
    h, w = bright.shape

    def washed(p: Any, pitch: float) -> bool:
        x, y = int(p[0]), int(p[1])
        r = max(1, int(3.5 * pitch))  # the finder's own area
        if not (0 <= x < w and 0 <= y < h):
            return False
        area = bright[max(0, y - r) : y + r + 1, max(0, x - r) : x + r + 1]
        return bool(area.mean() > 0.15)

    for i in range(len(pts)):
        for j in range(len(pts)):
            if i == j:
                continue
            a, b = pts[i][0], pts[j][0]
            pitch = (pts[i][1] + pts[j][1]) / 2
            d = b - a
            # a = top-left and b = top-right (bottom-left hidden), or b = bottom-left (top-right
            # hidden); a = top-right and b = bottom-left (top-left hidden); the swapped pair is
            # another (i, j)
            hyps = [(a, b, a + perp(d)), (a, a - perp(d), b)]
            mid = (a + b) / 2
            hyps.append((mid - perp(a - b) / 2, a, b))
            for tl, tr, bl in hyps:
                hidden = [p for p in (tl, tr, bl) if not any(p is q for q in (a, b))]
                if hidden and washed(hidden[0], pitch):
                    yield tl, tr, bl, pitch


def _grid_maps(tl: Any, tr: Any, bl: Any, pitch: float) -> list[tuple[int, Any]]:
    """(N, affine map from module coordinates to the crop as a 3×3 matrix) for the versions
    the finders' spacing suggests, the likeliest first."""
    import cv2
    import numpy as np

    span = (np.linalg.norm(tr - tl) + np.linalg.norm(bl - tl)) / 2
    guess = (span / pitch + 7 - 17) / 4
    versions = sorted(
        {min(10, max(1, round(guess) + d)) for d in (0, -1, 1)}, key=lambda v: abs(v - guess)
    )
    out = []
    for version in versions:
        n = 4 * version + 17
        src = np.array([[3.5, 3.5], [n - 3.5, 3.5], [3.5, n - 3.5]], np.float32)
        dst = np.array([tl, tr, bl], np.float32)
        out.append((n, np.vstack([cv2.getAffineTransform(src, dst), [0, 0, 1]])))
    return out


def _refine(hom: Any, n: int, version: int, gray: Any, bright: Any) -> Any:
    """The homography corrected by the bottom-right alignment pattern, when it is visible."""
    import cv2
    import numpy as np

    if version < 2:
        return hom
    c = n - 6.5
    pt = hom @ np.array([c, c, 1.0])
    px, py = pt[0] / pt[2], pt[1] / pt[2]
    step = np.linalg.norm(hom[:2, 0])
    s = max(2, round(float(step)))
    tpl = np.zeros((5 * s, 5 * s), np.uint8)  # dark ring, light ring, dark centre
    tpl[s : 4 * s, s : 4 * s] = 255
    tpl[2 * s : 3 * s, 2 * s : 3 * s] = 0
    r = int(2.5 * step) + 5 * s // 2
    x0, y0 = int(px) - r, int(py) - r
    h, w = gray.shape
    if x0 < 0 or y0 < 0 or x0 + 2 * r >= w or y0 + 2 * r >= h:
        return hom
    win = gray[y0 : y0 + 2 * r + 1, x0 : x0 + 2 * r + 1]
    if bright[y0 : y0 + 2 * r + 1, x0 : x0 + 2 * r + 1].mean() > 0.2:
        return hom
    res = cv2.matchTemplate(win, tpl, cv2.TM_CCOEFF_NORMED)
    _, score, _, loc = cv2.minMaxLoc(res)
    if score < 0.4:
        return hom
    ax = x0 + loc[0] + 2.5 * s - 0.5
    ay = y0 + loc[1] + 2.5 * s - 0.5
    src = np.array([[3.5, 3.5], [n - 3.5, 3.5], [3.5, n - 3.5], [c, c]], np.float32)
    tl = hom @ np.array([3.5, 3.5, 1.0])
    tr = hom @ np.array([n - 3.5, 3.5, 1.0])
    bl = hom @ np.array([3.5, n - 3.5, 1.0])
    dst = np.array([tl[:2], tr[:2], bl[:2], [ax, ay]], np.float32)
    return cv2.getPerspectiveTransform(src, dst)


def sample(smooth: Any, hom: Any, n: int) -> tuple[Any, Any]:
    """(dark, erased) N×N booleans from ``smooth`` (the crop, lightly blurred): each module's
    centre compared with the light and dark levels around it; saturated modules where even the
    dark ones around are lifted near saturation are erased."""
    import cv2
    import numpy as np

    j, i = np.meshgrid(np.arange(n) + 0.5, np.arange(n) + 0.5)
    pts = np.stack([j.ravel(), i.ravel(), np.ones(n * n)])
    img = hom @ pts
    xs = (img[0] / img[2]).reshape(n, n).astype(np.float32)
    ys = (img[1] / img[2]).reshape(n, n).astype(np.float32)
    v = cv2.remap(smooth, xs, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    v = v.astype(np.float32)
    k3, k5 = np.ones((3, 3), np.uint8), np.ones((5, 5), np.uint8)
    light = cv2.dilate(v, k5)
    deep3, deep5 = cv2.erode(v, k3), cv2.erode(v, k5)
    # the dark level next to the module (the glare lifts it), or further out when every
    # neighbour is light
    deep = np.where(light - deep3 >= 40, deep3, deep5)
    dark = v < (light + deep) / 2
    # washed out: saturated where even the dark modules around are lifted near saturation;
    # no contrast: nothing to tell dark from light
    erased = ((v >= SATURATED) & (deep3 >= LIFTED)) | (light - deep5 < 25)
    return dark, erased


def read(gray: Any) -> list[str]:
    """The text of a partly washed-out QR symbol in ``gray`` (a crop around it), or [] (at
    once when the crop holds no highlight, or fewer than two finder patterns)."""
    import cv2
    import numpy as np

    bright = gray >= SATURATED
    if np.count_nonzero(bright) < HIGHLIGHT_PIXELS:
        return []
    finders = _finders(gray)
    if len(finders) < 2:
        return []
    pitch = float(np.median([p for _, _, p in finders]))
    smooth = cv2.GaussianBlur(gray, (0, 0), max(0.5, pitch / 5))
    hypotheses = itertools.islice(_triples(finders, bright), _MAX_TRIES)
    grids = [_grid_maps(tl, tr, bl, p) for tl, tr, bl, p in hypotheses]
    # the likeliest version of every hypothesis first, then the neighbouring versions
    order = [g[k] for k in range(3) for g in grids if k < len(g)][:_MAX_TRIES]
    for n, hom in order:
        hom = _refine(hom, n, (n - 17) // 4, gray, bright)
        dark, erased = sample(smooth, hom, n)
        if erased.mean() > 0.3:
            continue
        text = decode_modules(dark, erased)
        if text:
            return [text]
    return []
