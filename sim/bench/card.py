"""A tap through pcscd with a simulated card in vpcd: the measurement lives in
:mod:`sim.bench.card_tap`; this module runs it for ``ykt bench`` (about 8 taps per second of
``--seconds`` in each mode, at least 10; 1 s with ``--quick``) and keeps its figures.  Without
pyscard the figures say the benchmark was skipped."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sim.bench import Options


def run(work: Path, opts: Options) -> dict[str, Any]:
    from sim.bench import card_tap as bench_card

    seconds = opts.seconds if opts.seconds is not None else (1.0 if opts.quick else 5.0)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # it prints its own lines; ykt bench prints once
        modes = bench_card.run(seconds, as_json=True)
    out: dict[str, Any] = {"modes": modes}
    if not modes:
        out["skipped"] = printed.getvalue().strip()
    return out
