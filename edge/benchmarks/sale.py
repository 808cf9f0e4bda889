"""Sale latency from tap to decision on the in-process simulated reader (``sim://``).

A real :class:`edge.pos.agent.PosAgent` (journal, caches, uplink, engine, reader thread) runs in
this process against a real ``ykt server`` on loopback.  For each sale the amount is keyed, the
clock starts, a card is put on the simulated reader, and the clock stops when the engine shows
the decision.  Thin timing wrappers around the agent's own methods (the real ones still run)
split each sale into:

- ``decision``: online, the authorize round trip to the server; offline, the cache and journal
  queries and the rules (``Decider._offline`` less its journal append);
- ``append``: the durable journal append;
- ``rest``: reader wake-up, state machine, threads.

CPU per tap is the CPU time (user + system, no waiting on I/O) of the reader thread that
handles the tap, from the card's arrival to the decision shown; ``process_cpu`` is the whole
process's CPU time over the same interval (includes anything the background threads did).

Online, each sale waits for its record to be acked and the delta feed to come back before the
next tap (taps at a canteen are seconds apart); offline, the server is stopped and the taps
follow each other at once.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.benchmarks.errors import BenchmarkError
from edge.benchmarks.server import BenchServer, wait_until
from edge.benchmarks.stats import summary_ms
from edge.pos.agent import PosAgent, PosConfig
from sim.reader import SimReader

if TYPE_CHECKING:
    from edge.benchmarks import Options

AMOUNT_FEN = 100  # ¥1.00: far below every limit, so each sale is a plain approval
WARMUP = 5
QUIET = ("edge.uplink", "edge.pos.decide", "edge.pos.engine", "edge.link")


class Probe:
    """Per-tap timings filled by wrappers around the agent's methods."""

    def __init__(self) -> None:
        self.cur: dict[str, int] = {}

    def timed(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kw: Any) -> Any:
            t0 = time.perf_counter_ns()
            try:
                return fn(*args, **kw)
            finally:
                self.cur[name] = self.cur.get(name, 0) + time.perf_counter_ns() - t0

        return wrapper

    def on_card(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kw: Any) -> Any:
            self.cur["thread_cpu0"] = time.thread_time_ns()
            try:
                return fn(*args, **kw)
            finally:
                self.cur["thread_cpu"] = time.thread_time_ns() - self.cur["thread_cpu0"]
                self.cur["process_cpu_end"] = time.process_time_ns()

        return wrapper

    def shown(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kw: Any) -> Any:
            out = fn(*args, **kw)
            self.cur["shown"] = time.perf_counter_ns()
            return out

        return wrapper


def instrument(agent: PosAgent, probe: Probe) -> None:
    d, e = agent.decider, agent.engine
    d.client.authorize = probe.timed("authorize", d.client.authorize)  # type: ignore[method-assign]
    d._offline = probe.timed("offline", d._offline)  # type: ignore[method-assign]
    agent.journal.append = probe.timed("append", agent.journal.append)  # type: ignore[method-assign]
    e.on_card = probe.on_card(e.on_card)  # type: ignore[method-assign]
    e._show = probe.shown(e._show)  # type: ignore[method-assign]


def _tap(agent: PosAgent, reader: SimReader, probe: Probe, card: dict[str, Any]) -> dict[str, Any]:
    keyed = agent.engine.key_amount(AMOUNT_FEN)
    probe.cur = {}
    cpu0 = time.process_time_ns()
    t0 = time.perf_counter_ns()
    reader.present(card["card_no"], card["uid"])
    screen = agent.engine.wait(keyed["version"], 10.0)
    cur = dict(probe.cur)
    if "shown" not in cur:
        raise BenchmarkError(f"sale benchmark: no decision within 10 s (screen {screen['state']})")
    total = cur["shown"] - t0
    append = cur.get("append", 0)
    decision = cur["authorize"] if "authorize" in cur else cur.get("offline", 0) - append
    return {
        "approved": bool(screen["approved"]),
        "offline": bool(screen["offline"]),
        "reason": screen["reason"],
        "total": total,
        "decision": decision,
        "append": append,
        "rest": total - decision - append,
        "thread_cpu": cur["thread_cpu"],
        "process_cpu": cur["process_cpu_end"] - cpu0,
    }


def _series(
    agent: PosAgent,
    reader: SimReader,
    probe: Probe,
    cards: list[dict[str, Any]],
    n: int,
    settle: Callable[[], None] | None,
) -> dict[str, Any]:
    taps = []
    for i in range(WARMUP + n):
        t = _tap(agent, reader, probe, cards[i % len(cards)])
        if not t["approved"]:
            raise BenchmarkError(f"sale benchmark: a sale was declined: {t['reason']}")
        if i >= WARMUP:
            taps.append(t)
        if settle is not None:
            settle()
    return {
        "sales": n,
        "decided_offline": sum(t["offline"] for t in taps),
        **{k: summary_ms(t[k] for t in taps) for k in ("total", "decision", "append", "rest")},
        "cpu_thread": summary_ms(t["thread_cpu"] for t in taps),
        "cpu_process": summary_ms(t["process_cpu"] for t in taps),
    }


@contextmanager
def _quiet() -> Iterator[None]:
    """The agent warns at every offline sale and retry; the figures say it better."""
    saved = {n: logging.getLogger(n).level for n in QUIET}
    for n in QUIET:
        logging.getLogger(n).setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)


def run(work: Path, opts: Options) -> dict[str, Any]:
    n_cards, n = (20, 30) if opts.quick else (100, 300)
    work.mkdir(parents=True, exist_ok=True)
    with _quiet():
        srv = BenchServer(work / "server").start()
        agent: PosAgent | None = None
        try:
            cards = srv.populate(n_cards, 100_000, cards=True)
            admin = srv.admin()
            token = admin.call(
                "POST", "/v1/admin/terminals/tokens", {"role": "pos", "name": "bench"}
            )
            admin.close()
            cfg = PosConfig(
                data=work / "pos",
                server=srv.url,
                enroll=token["token"],
                reader=f"sim://bench-{os.getpid()}",
                seed=1,
            )
            agent = PosAgent(cfg)
            probe = Probe()
            instrument(agent, probe)
            agent.start()
            online, offline, queued = _measure(agent, probe, srv, cards, n)
        finally:
            if agent is not None:
                agent.stop()
            srv.stop()
    return {
        "reader": "sim:// (in-process)",
        "amount_fen": AMOUNT_FEN,
        "online": online,
        "offline": offline,
        "queued_after_offline": queued,
    }


def _measure(
    a: PosAgent, probe: Probe, srv: BenchServer, cards: list[dict[str, Any]], n: int
) -> tuple[dict[str, Any], dict[str, Any], int]:
    wait_until(lambda: isinstance(a.reader, SimReader), 10, "the simulated reader opening")
    with a.uplink.synced:
        ok = a.uplink.synced.wait_for(
            lambda: a.cache.counts()["cards"] >= len(cards) and a.link.online, 30
        )
    if not ok:
        raise BenchmarkError("sale benchmark: the agent did not receive the cards")
    reader = a.reader
    assert isinstance(reader, SimReader)
    client = a.decider.client

    def settle() -> None:
        """Wait for the ack and the feed page that follow a sale."""
        with a.uplink.synced:
            a.uplink.synced.wait_for(lambda: a.journal.queued == 0, 10)
        version = client.health()["version"]
        with a.uplink.synced:
            a.uplink.synced.wait_for(lambda: a.cache.version >= version, 10)

    online = _series(a, reader, probe, cards, n, settle)
    srv.stop()
    wait_until(lambda: not a.link.online, 30, "the agent noticing the server is gone")
    offline = _series(a, reader, probe, cards, n, None)
    return online, offline, a.journal.queued
