"""``ykt bench --only qr``: QR frame → decision on realistic phone-screen frames (docs/benchmarks.md).

For 640×480 and 1280×720 and each condition of :mod:`sim.phone_screen` (clean, tilt, blur,
low light, glare, small, dark-mode inverted, mixed) it renders presentations (a phone held up
for about half a second: 12 frames with a hand's small movements) and times, per frame, the
decision path a POS runs on one core: decode (restricted to QR) + code verification
(:class:`sync.codes.CodeVerifier`: format, campus, window, certificate chain, signature) +
the seen-set look-up.  It prints p50/p99 of that, the empty-frame cost, and the decode rate
per frame and per presentation.  Figures only: nothing here fails on a timing.

``ykt bench`` runs it with zxing-cpp (the default decoder) and pyzbar (a third of the
presentations, for comparison).  ``--seconds`` scales the presentations per condition and size
(5 per second, default 5 s); ``--quick`` renders one presentation and decodes it with zxing-cpp
only.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drivers.qr.decoders import get_decoder
from sim import phone_screen
from sync import codes
from sync.crypto import SigningKey
from sync.errors import CodeError

if TYPE_CHECKING:
    from sim.bench import Options

SIZES = ((640, 480), (1280, 720))
FRAMES_PER_PRESENTATION = 12


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def _setup() -> tuple[str, Any, set[tuple[int, int]], int]:
    issuer, phone = SigningKey.from_seed(b"\x01" * 32), SigningKey.from_seed(b"\x02" * 32)
    campus = codes.campus_tag("bench")
    now = int(time.time())
    cert = codes.make_cert(
        issuer, 1, campus, 7, 1001, now - 60, now + 86400, phone.public.to_bytes()
    )
    text = codes.to_text(codes.make_code(phone, codes.Kind.PAY, campus, 7, now, 1, True))
    verifier = codes.CodeVerifier(
        campus, {1: issuer.public}, lambda s: codes.KnownCert(cert) if s == 7 else None
    )
    return text, verifier, set(), now * 1000


def run_suite(presentations: int, decoder_name: str, seed: int = 1) -> dict[str, Any]:
    decoder = get_decoder(decoder_name)
    text, verifier, seen, at_ms = _setup()

    def decide(frame: Any) -> bool:
        for t in decoder.decode(frame):
            try:
                v = verifier.verify(t, at_ms)  # the moment the code was shown, however long we run
            except CodeError:
                continue
            # the seen-set look-up (a POS then spends the code; here every frame decides afresh)
            return (v.code.serial, v.code.counter) not in seen
        return False

    out: dict[str, Any] = {"decoder": decoder.name, "code_chars": len(text), "sizes": {}}
    out["qr_version"] = phone_screen.qr_version(text)
    for size in SIZES:
        label = f"{size[0]}x{size[1]}"
        empty_ms = []
        for i in range(30):
            frame = phone_screen.render(text, size=size, seed=seed + i, present=False)
            t0 = time.perf_counter()
            decide(frame)
            empty_ms.append((time.perf_counter() - t0) * 1000)
        all_ms: list[float] = []
        conds: dict[str, Any] = {}
        for cond in phone_screen.CONDITIONS:
            ok_frames = ok_pres = 0
            ms: list[float] = []
            for p in range(presentations):
                frames = phone_screen.presentation(
                    text, cond, FRAMES_PER_PRESENTATION, size, seed=seed * 7919 + p
                )
                read = False
                for frame in frames:
                    t0 = time.perf_counter()
                    got = decide(frame)
                    ms.append((time.perf_counter() - t0) * 1000)
                    ok_frames += got
                    read = read or got
                ok_pres += read
            n = presentations * FRAMES_PER_PRESENTATION
            conds[cond] = {
                "per_frame": ok_frames / n,
                "per_presentation": ok_pres / presentations,
                "p50_ms": _pct(ms, 0.5),
                "p99_ms": _pct(ms, 0.99),
            }
            all_ms += ms
        out["sizes"][label] = {
            "frame_to_decision_p50_ms": _pct(all_ms, 0.5),
            "frame_to_decision_p99_ms": _pct(all_ms, 0.99),
            "frame_to_decision_mean_ms": statistics.fmean(all_ms),
            "empty_frame_p50_ms": _pct(empty_ms, 0.5),
            "empty_frame_p99_ms": _pct(empty_ms, 0.99),
            "conditions": conds,
        }
    return out


def run(work: Path, opts: Options) -> dict[str, Any]:
    """``ykt bench --only qr``: zxing-cpp with ``5 × seconds`` presentations per condition and
    size, pyzbar with a third of that; with ``--quick`` one presentation, zxing-cpp only."""
    if opts.quick and opts.seconds is None:  # a smoke test
        plan = [("zxing", 1)]
    else:
        n = max(1, round((opts.seconds or 5.0) * 5))
        plan = [("zxing", n), ("zbar", max(1, n // 3))]
    runs = [{"presentations": p, **run_suite(p, decoder)} for decoder, p in plan]
    return {"frames_per_presentation": FRAMES_PER_PRESENTATION, "runs": runs}
