"""Receipts: the printer never delays a sale, and a receipt comes out soon after the approval.

A real :class:`edge.pos.agent.PosAgent` runs in this process against a real ``ykt server`` on
loopback, with a simulated ESC/POS printer in a process of its own on a pseudo-terminal
(``ykt sim printer``, :mod:`sim.periph`): python-escpos's bytes go through pyserial and the pty,
the printer answers the ``DLE EOT`` status requests.  Sales on the in-process simulated reader
(:mod:`sim.bench.sale`'s taps):

- ``with_printer``: approval latency (amount keyed and card put down → approval shown), and
  ``receipt``: the record's time (taken before the approval) → the printer said it printed the
  whole receipt (its status answered after the job): an upper bound of approval → printed;
- ``paper_out``: the same sales with the printer out of paper: approval latency (it must not
  move), receipts queued; then paper back and ``drain_s``, the time to print them all.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.pos.agent import PosAgent, PosConfig
from sim import cards as sim_cards
from sim import periph_cli
from sim.bench.errors import BenchmarkError
from sim.bench.sale import AMOUNT_FEN, _quiet
from sim.bench.server import BenchServer, wait_until
from sim.bench.stats import summary_ms
from sim.harness import procs
from sim.reader import SimReader

if TYPE_CHECKING:
    from sim.bench import Options


SKIPPED = "python-escpos or pyserial is not installed (pip install 'ykt[printer]'); skipped"


def _available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("escpos", "serial"))


def run(work: Path, opts: Options) -> dict[str, Any]:
    if not _available():
        return {"skipped": f"printer bench: {SKIPPED}"}
    n_cards, n = (10, 20) if opts.quick else (50, 200)
    work.mkdir(parents=True, exist_ok=True)
    info = periph_cli.start("printer", work, "bench")
    counter_log = logging.getLogger("edge.counter")  # paper out is on purpose here
    level, counter_log.level = counter_log.level, logging.CRITICAL
    with _quiet():
        srv = BenchServer(work / "server").start()
        agent: PosAgent | None = None
        try:
            cards = srv.populate(n_cards, 1_000_000, cards=True)
            admin = srv.admin()
            token = admin.call(  # a sim:// reader: a simulated terminal
                "POST",
                "/v1/admin/terminals/tokens",
                {"role": "pos", "name": "bench-printer", "simulated": True},
            )
            admin.close()
            agent = PosAgent(
                PosConfig(
                    data=work / "pos",
                    server=srv.url,
                    enroll=token["token"],
                    reader=f"sim://bench-printer-{os.getpid()}",
                    printer=f"escpos+serial://{info['device']}",
                    seed=1,
                )
            )
            agent.start()
            return _measure(agent, work, cards, n)
        finally:
            if agent is not None:
                agent.stop()
            srv.stop()
            periph_cli.stop(work, "bench")
            counter_log.setLevel(level)


def _sale(a: PosAgent, reader: SimReader, card: dict[str, Any]) -> int:
    """One sale: amount keyed, card put down, until the approval is shown (ns).  A printer
    notice also changes the screen: wait for the outcome itself."""
    emu = sim_cards.card_at(a, card["card_no"], card["uid"])
    s = a.engine.key_amount(AMOUNT_FEN)
    t0 = time.perf_counter_ns()
    reader.present(emu)
    deadline = time.monotonic() + 10
    while s["state"] not in ("approved", "declined"):
        if time.monotonic() > deadline:
            raise BenchmarkError(f"printer benchmark: no decision within 10 s ({s['state']})")
        s = a.engine.wait(s["version"], 1.0)
    took = time.perf_counter_ns() - t0
    if not s["approved"]:
        raise BenchmarkError(f"printer benchmark: a sale was declined: {s['reason']}")
    return took


def _sales(
    a: PosAgent, reader: SimReader, cards: list[dict[str, Any]], n: int,
    printed_each: bool,
) -> list[int]:  # fmt: skip
    totals = []
    printed = a.receipts.counts()["printed"]
    for i in range(n):
        totals.append(_sale(a, reader, cards[i % len(cards)]))
        if printed_each:  # this sale's receipt printed (the queue takes it from the journal a
            # moment after the approval: an empty queue alone may be before it is there)
            want = printed + i + 1
            wait_until(
                lambda want=want: a.receipts.counts()["printed"] >= want,
                10,
                "the receipt printing",
            )
    return totals


def _measure(a: PosAgent, work: Path, cards: list[dict[str, Any]], n: int) -> dict[str, Any]:
    wait_until(lambda: isinstance(a.reader, SimReader), 10, "the simulated reader opening")
    wait_until(lambda: a.cache.counts()["cards"] >= len(cards), 30, "the cards reaching the POS")
    wait_until(lambda: a.counter.dev["printer"].state == "ready", 10, "the printer answering")
    reader = a.reader
    assert isinstance(reader, SimReader)
    for _ in range(3):  # warm-up
        _sales(a, reader, cards, 1, True)
    a.counter.latencies_ms.clear()
    with_printer = _sales(a, reader, cards, n, True)
    receipt_ms = list(a.counter.latencies_ms)
    periph_cli.control(work, "bench", {"cmd": "paper", "value": "out"})
    wait_until(  # before the next sale: its receipt must find the paper out, not print
        lambda: a.counter.dev["printer"].state.startswith("paper out"), 10, "the printer noticing"
    )
    paper_out = _sales(a, reader, cards, n, False)
    # the queue takes each receipt from the journal a moment after its approval
    procs.poll(lambda: a.receipts.counts()["queued"] >= n, 10)
    queued = a.receipts.counts()["queued"]
    t0 = time.perf_counter()
    periph_cli.control(work, "bench", {"cmd": "paper", "value": "ok"})
    wait_until(lambda: a.receipts.counts()["queued"] == 0, 120, "the queue draining")
    drain = time.perf_counter() - t0
    return {
        "printer": "escpos+serial:// on a pty (simulated, sim/periph.py)",
        "amount_fen": AMOUNT_FEN,
        "with_printer": summary_ms(with_printer),
        "receipt": summary_ms(ms * 1_000_000 for ms in receipt_ms),
        "paper_out": summary_ms(paper_out),
        "queued_with_paper_out": queued,
        "drain_s": round(drain, 2),
        "receipts_per_s": round(queued / drain, 1) if drain > 0 else None,
    }
