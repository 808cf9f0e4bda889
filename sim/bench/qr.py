"""QR frame → decision on rendered phone screens: the measurement lives in
:mod:`sim.bench.qr_frames`; this module runs it for ``ykt bench`` with zxing-cpp (the default
decoder) and pyzbar (a third of the presentations, for comparison).  ``--seconds`` scales the
presentations per condition and size (5 per second, default 5 s); ``--quick`` renders one
presentation and decodes it with zxing-cpp only."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sim.bench import Options


def run(work: Path, opts: Options) -> dict[str, Any]:
    from sim.bench import qr_frames as bench_qr

    if opts.quick and opts.seconds is None:  # one presentation, zxing only: a smoke test
        plan = [("zxing", 1)]
    else:
        n = max(1, round((opts.seconds or 5.0) * 5))
        plan = [("zxing", n), ("zbar", max(1, n // 3))]
    runs = [{"presentations": p, **bench_qr.run_suite(p, decoder)} for decoder, p in plan]
    return {"frames_per_presentation": bench_qr.FRAMES_PER_PRESENTATION, "runs": runs}
