"""Sale latency from tap to decision on the in-process simulated reader (``sim://``).

A real :class:`edge.pos.agent.PosAgent` (journal, caches, card keys, uplink, engine, card
thread) runs in this process against a real ``ykt server`` on loopback.  For each sale the
simulated MIFARE card is made from the server's record of it (as ``/control/sim/card`` does),
the amount is keyed, the clock starts, the card is put on the simulated reader, and the clock
stops when the engine shows the decision.  Thin timing wrappers around the agent's own methods
(the real ones still run) split each sale into:

- ``decision``: online, the authorize round trip to the server; offline, the checks against
  the caches, the journal and the risk limits (``Decider._offline_checks``);
- ``card_io``: reading the card and writing its counters (the emulated card's APDUs);
- ``append``: the durable journal append;
- ``rest``: reader wake-up, the rules, the state machine, threads.

``cpu_thread`` is the CPU time (user + system, no waiting on I/O) of the card thread that
handles the tap, from the card's arrival to the decision shown; the simulated card answers its
APDUs on that same thread, so ``cpu_agent`` takes the card I/O time off it (the agent's own
CPU per tap, docs/benchmarks.md); ``cpu_process`` is the whole process's CPU time over the same interval
(includes anything the background threads did).

Online, each sale waits for its record to be acked before the next tap (taps at a canteen are
seconds apart); offline, the server is stopped and the taps
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

from edge.pos.agent import PosAgent, PosConfig
from sim import cards
from sim.bench.errors import BenchmarkError
from sim.bench.server import BenchServer, wait_until
from sim.bench.stats import summary_ms
from sim.reader import SimReader

if TYPE_CHECKING:
    from sim.bench import Options

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
        def wrapper(out: Any, *args: Any, **kw: Any) -> Any:
            self.cur["card_io"] = int(getattr(out, "timing", {}).get("card_io", 0))
            result = fn(out, *args, **kw)
            self.cur["shown"] = time.perf_counter_ns()
            return result

        return wrapper


def instrument(agent: PosAgent, probe: Probe) -> None:
    d, e = agent.decider, agent.engine
    d.client.authorize = probe.timed("authorize", d.client.authorize)  # type: ignore[method-assign]
    d._offline_checks = probe.timed("offline", d._offline_checks)  # type: ignore[method-assign]
    agent.journal.append = probe.timed("append", agent.journal.append)  # type: ignore[method-assign]
    e.on_card = probe.on_card(e.on_card)  # type: ignore[method-assign]
    e._show = probe.shown(e._show)  # type: ignore[method-assign]


def _tap(agent: PosAgent, reader: SimReader, probe: Probe, card: dict[str, Any]) -> dict[str, Any]:
    emu = cards.card_at(agent, card["card_no"], card["uid"])  # the card as issued, keys and all
    keyed = agent.engine.key_amount(AMOUNT_FEN)
    probe.cur = {}
    cpu0 = time.process_time_ns()
    t0 = time.perf_counter_ns()
    reader.present(emu)
    screen = agent.engine.wait(keyed["version"], 10.0)
    cur = dict(probe.cur)
    if "shown" not in cur:
        raise BenchmarkError(f"sale benchmark: no decision within 10 s (screen {screen['state']})")
    total = cur["shown"] - t0
    append, card_io = cur.get("append", 0), cur.get("card_io", 0)
    decision = cur["authorize"] if "authorize" in cur else cur.get("offline", 0)
    return {
        "approved": bool(screen["approved"]),
        "offline": bool(screen["offline"]),
        "reason": screen["reason"],
        "total": total,
        "decision": decision,
        "card_io": card_io,
        "append": append,
        "rest": total - decision - card_io - append,
        "thread_cpu": cur["thread_cpu"],
        # the simulated card runs in the same thread: its APDUs are CPU, not the agent's
        "agent_cpu": max(0, cur["thread_cpu"] - card_io),
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
        **{
            k: summary_ms(t[k] for t in taps)
            for k in ("total", "decision", "card_io", "append", "rest")
        },
        "cpu_thread": summary_ms(t["thread_cpu"] for t in taps),
        "cpu_agent": summary_ms(t["agent_cpu"] for t in taps),
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
            token = admin.call(  # a sim:// reader: a simulated terminal
                "POST",
                "/v1/admin/terminals/tokens",
                {"role": "pos", "name": "bench", "simulated": True},
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

    def settle() -> None:
        """Wait for the ack that follows a sale (its balance rides the feed's next answer: a
        plain sale is no news for the long-poll, sync.server.context.Notifier.news_for)."""
        with a.uplink.synced:
            a.uplink.synced.wait_for(lambda: a.journal.queued == 0, 10)

    online = _series(a, reader, probe, cards, n, settle)
    srv.stop()
    wait_until(lambda: not a.link.online, 30, "the agent noticing the server is gone")
    offline = _series(a, reader, probe, cards, n, None)
    return online, offline, a.journal.queued
