"""The glare reader (drivers/qr/glare.py): Reed-Solomon with erasures, the module grid read back
from symbols segno made, and rendered phone-screen frames under a highlight that the decoder
path before it could not read."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
import segno
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.qr import decoders, glare
from drivers.qr.decoders import get_decoder
from sim import phone_screen

#: a phone code as long as the benchmark's (120 characters: a version 5-M symbol, like the
#: codes sim/bench/qr_frames.py renders)
CODE = (
    "*B2HEH0009.0*N2%+2000W50TCRDDESHI4M5UHUFSTM1LV-8YV1XUB+W713OHL6$6HM*N8TF$K3T%GAGU :KU0LR"
    ":O9S9RT49LLDLTU$HU$S0F6JS3 -6%QJ"
)


def _rs_encode(data: list[int], nsym: int) -> list[int]:
    """Systematic Reed-Solomon encoding, as a QR symbol's blocks (generator roots 2^0…)."""
    gen = [1]
    for i in range(nsym):  # gen *= (x - 2^i), highest degree first
        root = glare._EXP[i]
        gen = [a ^ glare._mul(root, b) for a, b in zip([*gen, 0], [0, *gen], strict=True)]
    rem = list(data) + [0] * nsym
    for i in range(len(data)):
        coef = rem[i]
        if coef:
            for j in range(1, len(gen)):
                rem[i + j] ^= glare._mul(gen[j], coef)
    return list(data) + rem[len(data) :]


def _matrix(text: str, **kw: Any) -> Any:
    qr = segno.make(text, micro=False, boost_error=False, **kw)
    return np.array([list(row) for row in qr.matrix_iter(border=0)], dtype=bool)


# --- Reed-Solomon ------------------------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(st.data())
def test_errors_and_erasures_within_the_bound_are_corrected(data: st.DataObject) -> None:
    nsym = data.draw(st.sampled_from([7, 10, 16, 18, 22, 24, 26, 28, 30]))
    msg = data.draw(st.lists(st.integers(0, 255), min_size=1, max_size=60))
    block = _rs_encode(msg, nsym)
    n = len(block)
    erased = data.draw(st.integers(0, min(nsym, n)))
    errors = data.draw(st.integers(0, min((nsym - erased) // 2, n - erased)))
    where = data.draw(st.permutations(range(n)))[: erased + errors]
    got = list(block)
    for p in where[:erased]:
        got[p] = data.draw(st.integers(0, 255))
    for p in where[erased:]:
        got[p] ^= data.draw(st.integers(1, 255))
    fixed = glare.rs_correct(got, nsym, sorted(where[:erased]))
    assert fixed is not None
    assert fixed[0] == block
    assert fixed[1] == errors


def test_more_damage_than_the_code_carries_is_refused_not_guessed() -> None:
    rng = random.Random(4)
    block = _rs_encode([rng.randrange(256) for _ in range(43)], 24)
    wrong = 0
    for _ in range(40):
        got = list(block)
        for p in rng.sample(range(len(block)), 16):  # 16 errors: twice what 24 symbols fix
            got[p] ^= rng.randrange(1, 256)
        fixed = glare.rs_correct(got, 24, [])
        wrong += fixed is not None and fixed[0] != block
    assert wrong <= 2, wrong  # a wrong "correction" is rare; the code verifier catches it


# --- the module grid ------------------------------------------------------------------------
@pytest.mark.parametrize("version", range(1, 11))
def test_every_version_level_and_mask_reads_back(version: int) -> None:
    texts = ("HI 42", "0123456", "hé!")  # alphanumeric, numeric, byte (all fit version 1-H)
    for level in "lmqh":
        for mask in range(8):
            text = texts[mask % 3]
            m = _matrix(text, error=level, version=version, mask=mask)
            assert glare.decode_modules(m, np.zeros_like(m)) == text, (version, level, mask)


def _blob(n: int, row: float, col: float, radius: float) -> Any:
    r, c = np.indices((n, n))
    return (r - row) ** 2 + ((c - col) / 1.6) ** 2 < radius**2


def test_a_washed_out_blob_is_read_as_erasures_where_guessing_it_light_fails() -> None:
    m = _matrix(CODE, error="m")
    lost = _blob(m.shape[0], 20, 15, 6)  # 181 of 1369 modules
    seen = m & ~lost  # what a highlight leaves: every lost module looks light
    assert glare.decode_modules(seen, np.zeros_like(m)) is None  # guessed: too many errors
    assert glare.decode_modules(seen, lost) == CODE  # erased: corrected


def test_light_modules_at_the_rim_keep_their_guess_when_erasing_all_is_too_much() -> None:
    m = _matrix(CODE, error="m")
    n = m.shape[0]
    core = _blob(n, 20, 15, 6)
    rim = _blob(n, 20, 15, 8.5) & ~core & ~m  # saturated, but light modules: guessed right
    lost = core | rim
    rows, cols = glare.data_order(5)
    touched = lost[rows, cols][: 134 * 8].reshape(134, 8).any(1)
    assert touched[0::2].sum() > 24 or touched[1::2].sum() > 24  # more than a block can erase
    assert glare.decode_modules(m & ~lost, lost) == CODE


def test_a_blob_beyond_the_error_correction_gives_no_text() -> None:
    m = _matrix(CODE, error="m")
    lost = _blob(m.shape[0], 20, 15, 9)  # about 400 modules: more than 24 codewords a block
    assert glare.decode_modules(m & ~lost, lost) is None


# --- rendered frames ----------------------------------------------------------------------------
def _old_path(img: Any) -> list[str]:
    """The zxing decoder before the glare reader: one pass over the frame, then the crop looks
    (sharpened, thresholded, highlight-aware, deconvolved) on a crop around every detection."""
    dec = decoders.ZxingDecoder()
    got = dec._read(img)
    if got:
        return got
    found = dec._z.read_barcodes(img, formats=dec._fmt, return_errors=True)
    if not found:
        return []
    x0, y0, x1, y1 = decoders._crop_box(img.shape, decoders._corners(found[:6]))
    crop = np.ascontiguousarray(img[y0:y1, x0:x1])
    for look in decoders._crop_looks(crop):
        got = dec._read(look, try_rotate=False)
        if got:
            return got
    return []


#: rendered 1280×720 glare frames (presentation seed, frame) the old path cannot read; of the
#: 96 frames of presentations 7919-7926 it read 86, the decoder with the glare reader 91
GLARED = [(7921, 7), (7921, 8), (7922, 2), (7924, 4), (7924, 5)]


@pytest.mark.parametrize(("seed", "k"), GLARED)
def test_a_glared_frame_the_old_path_missed_is_read(seed: int, k: int) -> None:
    img = phone_screen.presentation(CODE, "glare", k + 1, (1280, 720), seed=seed)[k]
    assert _old_path(img) == []
    assert get_decoder("zxing").decode(img) == [CODE]


def test_a_highlight_with_no_code_located_costs_no_second_look(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def never(crop: Any) -> list[str]:
        raise AssertionError("the glare reader ran on a frame with nothing located")

    monkeypatch.setattr(glare, "read", never)
    img = phone_screen.render(CODE, size=(1280, 720), seed=3, present=False)
    img[300:420, 500:700] = 255  # a lamp in view
    assert get_decoder("zxing").decode(img) == []


def test_the_glare_reader_gives_nothing_for_crops_without_a_symbol(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(5)
    noise = rng.integers(0, 256, (300, 300), dtype=np.uint8)
    noise[100:160, 100:200] = 255
    assert glare.read(noise) == []
    assert glare.read(np.full((200, 200), 255, np.uint8)) == []
    # three finders at a right angle around noise and a highlight: a grid is sampled, no text
    junk = rng.integers(0, 256, (300, 300), dtype=np.uint8)
    for x, y in ((40, 40), (215, 40), (40, 215)):
        _finder(junk, x, y, 6)
    junk[120:170, 110:200] = 255
    calls = []
    real = glare.decode_modules

    def counted(dark: Any, erased: Any) -> str | None:
        calls.append(dark.shape)
        return real(dark, erased)

    monkeypatch.setattr(glare, "decode_modules", counted)
    assert glare.read(junk) == []
    assert calls  # the grid was read and refused
    assert glare.read(np.zeros((40, 40), np.uint8)) == []


def _finder(img: Any, x: int, y: int, m: int) -> None:
    img[y : y + 7 * m, x : x + 7 * m] = 20
    img[y + m : y + 6 * m, x + m : x + 6 * m] = 235
    img[y + 2 * m : y + 5 * m, x + 2 * m : x + 5 * m] = 20


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 200), st.integers(2, 8)), max_size=4),
)
def test_the_glare_reader_never_raises_on_finder_like_junk(
    seed: int, finders: list[tuple[int, int, int]]
) -> None:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (260, 260), dtype=np.uint8)
    for x, y, m in finders:
        _finder(img, x, y, m)
    img[rng.integers(0, 200) :, rng.integers(0, 200) :][:50, :70] = 255  # a highlight
    assert glare.read(img) == []
