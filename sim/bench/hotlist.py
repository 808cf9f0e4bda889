"""Loss report → every online terminal has the card on its hotlist (docs/benchmarks.md: p99 ≤ 3 s
with 500 simulated terminals).

A real ``ykt server`` (uvicorn on loopback, SQLite) with 500 enrolled terminals.  Each simulated
terminal speaks the terminal protocol as the POS agent's uplink does (``edge.uplink``): a signed
``GET /v1/feed?since=V&wait=20&stream=1`` held open, its pages arriving on it as they come (a
page with ``more`` followed at once), the next one sent when it ends.  For each round the
benchmark reports one card holder's card lost through the admin API and times, for every
terminal, the moment a feed page showing the account ``lost`` arrived (the status a terminal
declines on, R2/R10).  The clock starts when the report is sent.  All terminals run on asyncio
in the benchmark's process, on the same two cores as the server, so the figures include that
contention; a real terminal only adds writing the page to its cache file.  (An online POS also
declines at once through the online authorize, which checks the status on the server; the feed
is what makes the decline hold when it goes offline.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from sim.bench.errors import BenchmarkError
from sim.bench.http11 import Client, HttpError
from sim.bench.server import BenchServer, cpu_seconds
from sim.bench.stats import summary_ms
from sync import protocol
from sync.crypto import SigningKey

if TYPE_CHECKING:
    from sim.bench import Options

WAIT_S = 20.0  # the POS agent's long-poll wait (edge.uplink)
ROUND_TIMEOUT_S = 30.0
IDLE_S = 3.0  # seconds of parked terminals over which the server's idle CPU is measured


@dataclass
class Terminal:
    terminal_id: str
    key: SigningKey
    version: int = 0
    parked: asyncio.Event = field(default_factory=asyncio.Event)  # holding a stream at the head
    seen: dict[int, int] = field(default_factory=dict)  # account id -> perf_counter_ns of "lost"
    errors: int = 0

    def headers(self, target: str) -> dict[str, str]:
        now_ms = int(time.time() * 1000)
        return protocol.sign_request(self.key, self.terminal_id, "GET", target, b"", now_ms)


@dataclass
class Round:
    account_id: int
    number: str
    arrived: asyncio.Event
    waiting_for: int


async def _poll(client: Client, term: Terminal, rounds: dict[int, Round]) -> None:
    """One terminal: hold the feed's stream for ever (cancelled at the end)."""
    while True:
        wait = WAIT_S if term.version else 0.0
        target = "/v1/feed?" + urlencode({"since": term.version, "wait": wait, "stream": 1})
        if wait:
            term.parked.set()
        try:
            async for line in client.lines(target, term.headers(target), wait + 15):
                _page(term, rounds, json.loads(line))
        except (HttpError, ValueError):
            term.errors += 1
            term.parked.clear()
            await asyncio.sleep(0.5)  # the uplink backs off too
            continue


def _page(term: Terminal, rounds: dict[int, Round], page: dict[str, Any]) -> None:
    got = time.perf_counter_ns()
    for acct in page["accounts"]:
        r = rounds.get(int(acct["id"]))
        if r is not None and acct["status"] == "lost" and r.account_id not in term.seen:
            term.seen[r.account_id] = got
            r.waiting_for -= 1
            if r.waiting_for == 0:
                r.arrived.set()
    term.version = int(page["version"])  # with "more" set, the next page follows at once


async def _measure(
    server: BenchServer, terms: list[Terminal], accounts: list[dict[str, Any]], settle_s: float
) -> dict[str, Any]:
    rounds: dict[int, Round] = {}
    samples: list[int] = []
    per_round: list[dict[str, Any]] = []
    token = (server.data / "admin.token").read_text().strip()
    # one client (one connection) per terminal, as real terminals have
    clients = [Client(server.url) for _ in terms]
    async with contextlib.AsyncExitStack() as stack:
        for c in clients:
            await stack.enter_async_context(c)
        admin = await stack.enter_async_context(
            Client(server.url, headers={"Authorization": f"Bearer {token}"})
        )
        tasks = [
            asyncio.create_task(_poll(c, t, rounds)) for c, t in zip(clients, terms, strict=True)
        ]
        try:
            await _all_parked(terms)
            await asyncio.sleep(settle_s)
            cpu0, t_idle = cpu_seconds(server.pid), time.perf_counter()
            await asyncio.sleep(IDLE_S)  # what the parked long-polls cost the server
            idle_cpu = (cpu_seconds(server.pid) - cpu0) / (time.perf_counter() - t_idle)
            for acct in accounts:
                await _all_parked(terms)
                await asyncio.sleep(settle_s)  # let the parked requests reach the server
                r = Round(int(acct["id"]), acct["number"], asyncio.Event(), len(terms))
                rounds[r.account_id] = r
                cpu0 = cpu_seconds(server.pid)
                t0 = time.perf_counter_ns()
                resp = await admin.post(
                    f"/v1/admin/accounts/{r.number}/status", {"action": "report-loss"}
                )
                acked = time.perf_counter_ns()
                if resp.status != 200 or resp.json().get("status") != "lost":
                    raise BenchmarkError(f"report-loss answered {resp.status} {resp.body!r}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(r.arrived.wait(), ROUND_TIMEOUT_S)
                lat = [t.seen[r.account_id] - t0 for t in terms if r.account_id in t.seen]
                samples += lat
                per_round.append(
                    {
                        "terminals_reached": len(lat),
                        "report_ack_ms": round((acked - t0) / 1e6, 1),
                        "first_ms": round(min(lat) / 1e6, 1) if lat else None,
                        "median_ms": round(sorted(lat)[len(lat) // 2] / 1e6, 1) if lat else None,
                        "last_ms": round(max(lat) / 1e6, 1) if lat else None,
                        "server_cpu_s": round(cpu_seconds(server.pid) - cpu0, 2),
                    }
                )
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    missed = sum(len(terms) - r["terminals_reached"] for r in per_round)
    return {
        "idle_server_cpu": round(idle_cpu, 3),
        "delivered": summary_ms(samples),
        "missed": missed,
        "rounds": per_round,
        "poll_errors": sum(t.errors for t in terms),
    }


async def _all_parked(terms: list[Terminal]) -> None:
    async with asyncio.timeout(60):
        for t in terms:
            await t.parked.wait()


def run(work: Path, opts: Options) -> dict[str, Any]:
    n_terms = 100 if opts.quick else 500
    n_rounds = 2 if opts.quick else 5
    t0 = time.perf_counter()
    with BenchServer(work / "server") as server:
        accounts = server.populate(n_rounds + 20, topup_fen=10_000, cards=True)
        terms = [
            Terminal(*server.terminal(f"hotlist-{i + 1}", seed=9000 + i)) for i in range(n_terms)
        ]
        setup_s = round(time.perf_counter() - t0, 1)
        figures = asyncio.run(_measure(server, terms, accounts[:n_rounds], settle_s=0.5))
    return {
        "terminals": n_terms,
        "wait_s": WAIT_S,
        "reports": n_rounds,
        "setup_s": setup_s,
        **figures,
        "budget": "p99 ≤ 3 s with 500 terminals",
        "note": "simulated terminals share the server's cores; an online POS also declines "
        "at once through the online authorize",
    }
