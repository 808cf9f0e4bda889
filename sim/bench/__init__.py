"""The benchmarks behind ``ykt bench`` / ``make bench`` (docs/benchmarks.md).  They print figures; none
of them passes or fails on a timing.

================  ===========================================================================
``sqlite``        :mod:`.sqlite_floor`: raw SQLite WAL + synchronous=FULL commit and batch rate
``journal``       :mod:`.journal_append`: Journal.append, empty and with 1,000,000 queued
``ingest``        :mod:`.ingest`: a real ``ykt server`` fed 500-record batches; ingest alone
``sale``          :mod:`.sale`: tap → decision on the simulated reader, online and offline
``api``           :mod:`.api_load`: API requests/s with 1 and 2 server processes
``qr``            :mod:`.qr_frames`: QR frame → decision on rendered phone screens
``card``          :mod:`.card_tap`: a tap through pcscd + vpcd, online and offline
``db``            :mod:`.db_load`: ingest and API on SQLite and PostgreSQL
``hotlist``       :mod:`.hotlist`: loss report → the card on the hotlist of 500 long-polling terminals
``printer``       :mod:`.printer`: sales with a receipt printer (pty): approval not delayed, receipt
                  printed after the approval, paper out and back
``kiosk``         :mod:`.kiosk`: a kiosk reissue, confirm → card at the mouth (pcscd, a pty dispenser)
``peak``          :mod:`.peak`: a lunch peak on one SQLite server process (then ``peak_pg``)
``peak_pg``       :mod:`.peak_pg`: the same on PostgreSQL with two server processes
================  ===========================================================================
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cryptography

from sim.bench import report
from sim.bench.errors import BenchmarkError
from sync.errors import SyncError


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "cryptography": cryptography.__version__,
        "platform": platform.platform(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


@dataclass(frozen=True)
class Options:
    quick: bool
    cache_dir: Path | None
    seconds: float | None = None  # api: load time per measurement
    pg_flush_delay_ms: float = 0.0  # peak_pg: every WAL flush of PostgreSQL waits this long more


#: benchmark name -> module of sim.bench with ``run(work: Path, opts: Options) -> dict``
#: (in the order they run; ``report.RENDERERS`` may hold a text renderer for each)
MODULES = {
    "sqlite": "sqlite_floor",
    "journal": "journal_append",
    "ingest": "ingest",
    "sale": "sale",
    "api": "api_load",
    "qr": "qr_frames",
    "card": "card_tap",
    "db": "db_load",
    "hotlist": "hotlist",
    "printer": "printer",
    "kiosk": "kiosk",
    "peak": "peak",
    "peak_pg": "peak_pg",
}
#: ``--only NAME`` runs these too
ALSO = {"peak": ("peak_pg",)}


def _run(name: str, work: Path, opts: Options) -> dict[str, Any]:
    module = importlib.import_module(f"sim.bench.{MODULES[name]}")
    figures: dict[str, Any] = module.run(work / name, opts)
    return figures


def main(args: argparse.Namespace) -> int:
    only = set(args.only or ())
    for n in list(only):
        only.update(ALSO.get(n, ()))
    names = [n for n in MODULES if not only or n in only]
    cache_dir: Path | None = None
    if not args.no_cache:
        cache_dir = args.cache_dir or Path(tempfile.gettempdir()) / "ykt-bench-cache"
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ykt-bench-", dir=args.dir))  # fresh for every run
    out: dict[str, Any] = {"machine": machine(), "quick": bool(args.quick), "benchmarks": {}}
    started = time.perf_counter()
    if not args.json:
        print(report.header(out), flush=True)
    try:
        opts = Options(
            quick=bool(args.quick),
            cache_dir=cache_dir,
            seconds=getattr(args, "seconds", None),
            pg_flush_delay_ms=getattr(args, "pg_flush_delay_ms", 0.0),
        )
        for name in names:
            if not args.json:
                print(f"running {name} …", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            try:
                figures = _run(name, work, opts)
            except SyncError as exc:  # the server under test answered wrongly or not at all
                raise BenchmarkError(f"{name} benchmark: {exc}") from exc
            figures["seconds"] = round(time.perf_counter() - t0, 1)
            out["benchmarks"][name] = figures
            if not args.json:
                print(report.render(name, figures), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out["seconds"] = round(time.perf_counter() - started, 1)
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
    else:
        print(f"done in {out['seconds']} s; figures only, nothing passes or fails on a timing")
    return 0
