"""``ykt bench --only peak``: a canteen's lunch peak on one server (issue 14).

A real ``ykt server`` (one process on SQLite; then, as ``peak_pg``, two processes on a
throwaway PostgreSQL cluster, deployed as docs/operations.md says for two: the first serves the
terminals' transactions and the admin API, the second, at CPU priority ``nice`` 10
(:data:`FEED_NICE`), the feed streams and the holders' app; the clients go to each directly, as
a proxy routing by path would send them) under everything at once:

- 1,000 enrolled terminals (``--quick``: 100), each with its own key and its own connection,
  each holding its signed feed stream (``GET /v1/feed?since=V&wait=20&stream=1``) as the POS
  uplink does: its pages arrive on it as they come, and the next is sent when it ends;
- 200 of them (``--quick``: 20) are POS selling 100 sales/s in all (``--quick``: 20/s): a
  signed online ``POST /v1/pos/authorize``, then the signed journal push of the sale's record
  (``POST /v1/journal``, chained and signed as the journal does, carrying the hold), on a
  second connection of the terminal's own (the uplink's request connection);
- card holders at 50 requests/s (``--quick``: 10/s) on ``GET /v1/app/bills``,
  ``/v1/app/flow`` and ``/v1/app/me`` (the balance), each with their own session;
- 5 loss reports (``--quick``: 2) through the admin API during the run, spread over it; for
  each, the clock runs from sending the report to the arrival, at each terminal, of a feed page
  showing the account ``lost``.

The load comes from client processes of their own (multiprocessing, ``spawn``), each an asyncio
loop on the HTTP/1.1 client of :mod:`sim.bench.http11`: two hold the 1,000 feed streams and read
their pages, two others sell on the POS's request connections and ask the holders' requests, and
only these time anything.  (Held in the same loop, a wake's 500 pages kept a seller's answers
waiting 20–36 ms at a time: the load generator measuring itself.)  The two holding the streams
run at CPU priority ``nice`` :data:`STREAM_NICE`: they stand for a thousand terminals with
processors of their own, and at normal priority their reading of a wake's 1,000 pages took the
server's cores from under its sales on this 2-core machine (5–115 sales over 25 ms a wake on
PostgreSQL ×2; docs/benchmarks.md); a loss's time to each terminal still counts until the
terminal has read the page.  Each process reports how late
its own loop ran (``client_lag``) and its CPU, next to the server's, as they share the machine's
cores.  Before the peak, one
client process sells alone at 5 sales/s (one POS, nothing else running) for the idle authorize
figure.  ``--seconds`` sets the peak's length (default 60; ``--quick`` 4).  Figures only:
nothing passes or fails on them; a refused or failed request is counted in ``errors``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import resource
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import msgspec
import requests

from sim.bench import api_load as bench_api
from sim.bench.errors import BenchmarkError
from sim.bench.http11 import Client, HttpError
from sim.bench.server import cpu_seconds, id_card
from sim.bench.stats import percentile
from sim.harness.pg import PgUnavailable, TempCluster
from sim.harness.ykt import ServerProcess
from sync import protocol
from sync.crypto import SigningKey
from sync.records import Entry, card_cred

if TYPE_CHECKING:
    from sim.bench import Options

WAIT_S = 20.0  # the POS uplink's long-poll wait (edge.uplink)
#: the CPU priority of the feed process (the second of two: docs/operations.md)
FEED_NICE = 10
STREAM_PROCS = 2  # client processes holding the feed streams …
STREAM_NICE = 10  # … at this CPU priority (see above)
SALE_PROCS = 2  # … and those selling and asking the holders' requests
#: each client process's own loop: how late it runs is looked at every LAG_TICK_S, and each
#: time later than LAG_OVER_MS is counted (``client_lag``)
LAG_TICK_S = 0.01
LAG_OVER_MS = 5.0
HOLDER_KINDS = ("/v1/app/bills?limit=20", "/v1/app/flow?limit=20", "/v1/app/me")


@dataclass(frozen=True)
class Shape:
    terminals: int
    pos: int
    sales_per_s: float
    holders_per_s: float
    reports: int
    seconds: float
    idle_sales: int


def shape(opts: Options) -> Shape:
    if opts.quick:
        seconds = opts.seconds if opts.seconds is not None else 4.0
        return Shape(100, 20, 20.0, 10.0, 2, seconds, 10)
    seconds = opts.seconds if opts.seconds is not None else 60.0
    return Shape(1000, 200, 100.0, 50.0, 5, seconds, 100)


# -- the client processes -----------------------------------------------------------------------
@dataclass
class Term:
    tid: str
    key: SigningKey
    url: str
    watch: set[int]
    version: int = 0
    parked: asyncio.Event = field(default_factory=asyncio.Event)
    seen: dict[int, int] = field(default_factory=dict)  # account id -> time.time_ns() of "lost"
    # as a POS: its journal chain
    seq: int = 0
    prev: str = ""
    busy: bool = False

    def signed(self, method: str, target: str, body: bytes) -> dict[str, str]:
        now_ms = int(time.time() * 1000)
        return protocol.sign_request(self.key, self.tid, method, target, body, now_ms)


@dataclass
class Tally:
    authorize: list[float] = field(default_factory=list)  # ms
    authorize_at: list[float] = field(default_factory=list)  # time.time() each was sent
    push_ack: list[float] = field(default_factory=list)
    holder: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    skipped_sales: int = 0
    skipped_holders: int = 0

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


async def _poll(client: Client, t: Term, tally: Tally, stop: asyncio.Event) -> None:
    """Hold ``t``'s feed stream, as a terminal's uplink does.  The stream counts as held
    (``parked``) once its first page came on it: the server has then checked the request
    and goes on waiting on it.  (Counted held once the request was sent, the peak began
    while the server was still checking the 1,000 streams' requests: its first second
    measured a server's start, not a lunch peak.)"""
    while not stop.is_set():
        target = "/v1/feed?" + urlencode({"since": t.version, "wait": WAIT_S, "stream": 1})
        try:
            async for line in client.lines(target, t.signed("GET", target, b""), WAIT_S + 15):
                _page(t, _SEEN.decode(line))
                t.parked.set()
        except (HttpError, ValueError):
            if stop.is_set():
                return
            tally.error("feed")
            t.parked.clear()
            await asyncio.sleep(0.5)  # the uplink backs off too
            continue


class _Account(msgspec.Struct):
    id: int
    status: str


class _Seen(msgspec.Struct):
    """What a simulated terminal reads of a feed page (the rest is skipped unread: a wake
    brings 500 pages of a hundred accounts each to one client process, and reading them
    whole stalled its sales, which then arrived in a burst: the load generator measuring
    itself)."""

    version: int
    accounts: list[_Account]


_SEEN = msgspec.json.Decoder(_Seen)


def _page(t: Term, page: _Seen) -> None:
    got = time.time_ns()
    for acct in page.accounts:
        if acct.id in t.watch and acct.status == "lost" and acct.id not in t.seen:
            t.seen[acct.id] = got
    t.version = page.version


async def _sale(client: Client, t: Term, who: dict[str, Any], tally: Tally) -> None:
    t.busy = True
    try:
        seq = t.seq + 1
        body = json.dumps(
            {
                "seq": seq,
                "card_no": who["card_no"],
                "uid": who["uid"],
                "amount_fen": 1 + seq % 9,
                "method": "card",
            }
        ).encode()
        target = "/v1/pos/authorize"
        headers = {"Content-Type": "application/json", **t.signed("POST", target, body)}
        sent, t0 = time.time(), time.perf_counter()
        try:
            resp = await client.request("POST", target, body, headers, timeout=10)
            got = resp.raise_for_status().json()
        except (HttpError, ValueError):
            tally.error("authorize")
            return
        tally.authorize.append((time.perf_counter() - t0) * 1000)
        tally.authorize_at.append(sent)
        if not got.get("approved"):
            tally.error("declined")
            return
        entry = Entry(
            ts=int(time.time() * 1000),
            acct=int(got["account_id"]) if "account_id" in got else int(who["id"]),
            cred=card_cred(who["card_no"], who["uid"]),
            amt=1 + seq % 9,
            method="card",
            pin=got["pin"],
            spent=int(got["spent_fen"]),
            lim=int(got["limit_fen"]),
            bal=int(got["balance_fen"]),
            auth=got["auth_id"],
        )
        rec_body, sig = protocol.seal(t.key, entry.chained(t.tid, seq, t.prev))
        t.seq, t.prev = seq, protocol.record_hash(rec_body)
        push = json.dumps({"records": [protocol.wire_record(rec_body, sig)]}).encode()
        target = "/v1/journal"
        headers = {"Content-Type": "application/json", **t.signed("POST", target, push)}
        t0 = time.perf_counter()
        try:
            ack = (await client.request("POST", target, push, headers, timeout=30)).json()
            if int(ack.get("ack", 0)) < seq:
                tally.error("push")
        except (HttpError, ValueError):
            tally.error("push")
            return
        tally.push_ack.append((time.perf_counter() - t0) * 1000)
    finally:
        t.busy = False


async def _holder(client: Client, target: str, session: str, tally: Tally) -> None:
    t0 = time.perf_counter()
    try:
        resp = await client.get(target, headers={"Authorization": f"Bearer {session}"}, timeout=10)
        resp.raise_for_status()
    except HttpError:
        tally.error("holder")
        return
    tally.holder.append((time.perf_counter() - t0) * 1000)


async def _lag_probe(stop: asyncio.Event, late: list[float]) -> None:
    """Until ``stop``: every :data:`LAG_TICK_S`, how much later than asked this process's loop
    woke; each delay over :data:`LAG_OVER_MS` goes into ``late`` (ms).  A seller's answer
    read that late was timed that much slower than the server answered it."""
    while not stop.is_set():
        t0 = time.perf_counter()
        await asyncio.sleep(LAG_TICK_S)
        ms = (time.perf_counter() - t0 - LAG_TICK_S) * 1000
        if ms > LAG_OVER_MS:
            late.append(ms)


async def _paced(rate: float, end: float, step: Any) -> None:
    """Call ``step(n)`` ``rate`` times a second until ``end`` (monotonic), on schedule."""
    if rate <= 0:
        return
    start, n = time.monotonic(), 0
    while True:
        due = start + n / rate
        if due >= end:
            return
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        step(n)
        n += 1


async def _client_main(job: dict[str, Any], ready: Any, go: Any) -> dict[str, Any]:
    tally = Tally()
    stop = asyncio.Event()
    watch = set(job["watch"])

    def term(t: dict[str, Any]) -> Term:
        key = SigningKey.from_seed(bytes.fromhex(t["seed"]))
        return Term(t["id"], key, t["url"], watch, prev=protocol.genesis_hash(t["id"]))

    terms = [term(t) for t in job["terminals"]]  # the feed streams this process holds
    pos = [term(t) for t in job["pos"]]  # the POS this process sells on
    people = job["people"]
    tasks: set[asyncio.Task[None]] = set()

    def spawn(coro: Any) -> None:
        task = asyncio.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async with contextlib.AsyncExitStack() as stack:
        feed = [await stack.enter_async_context(Client(t.url)) for t in terms]
        sales = [await stack.enter_async_context(Client(t.url)) for t in pos]
        holders = [
            await stack.enter_async_context(Client(job["holder_urls"][i % len(job["holder_urls"])]))
            for i in range(job["holder_conns"])
        ]
        pollers = [
            asyncio.create_task(_poll(c, t, tally, stop)) for c, t in zip(feed, terms, strict=True)
        ]
        async with asyncio.timeout(300):
            for t in terms:
                await t.parked.wait()
        ready.put(job["wid"])
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t_start = time.monotonic()
        end = t_start + job["seconds"]
        late: list[float] = []
        probe_stop = asyncio.Event()
        probe = asyncio.create_task(_lag_probe(probe_stop, late))

        def sell(n: int) -> None:
            t = pos[n % len(pos)]
            if t.busy:  # the last sale of this POS has not finished: a cashier waits
                tally.skipped_sales += 1
                return
            who = people[(n * 7 + job["wid"]) % len(people)]
            spawn(_sale(sales[n % len(pos)], t, who, tally))

        busy_holders: set[int] = set()

        def ask(n: int) -> None:
            i = n % len(holders)
            if i in busy_holders:  # this holder's last request has not been answered
                tally.skipped_holders += 1
                return
            busy_holders.add(i)
            who = people[(n * 3 + job["wid"]) % len(people)]
            coro = _holder(holders[i], HOLDER_KINDS[n % 3], who["session"], tally)
            task = asyncio.create_task(coro)
            tasks.add(task)

            def done(tk: asyncio.Task[None], i: int = i) -> None:
                tasks.discard(tk)
                busy_holders.discard(i)

            task.add_done_callback(done)

        await asyncio.gather(
            _paced(job["sales_per_s"], end, sell), _paced(job["holders_per_s"], end, ask)
        )
        await asyncio.sleep(max(0.0, end - time.monotonic()))  # a stream holder's peak
        probe_stop.set()
        await probe
        # the loss reports' pages may still be on their way: wait for them (bounded)
        settle_end = time.monotonic() + job["settle_s"]
        while time.monotonic() < settle_end and any(len(t.seen) < len(watch) for t in terms):
            await asyncio.sleep(0.1)
        if tasks:
            await asyncio.wait(list(tasks), timeout=30)
        elapsed = time.monotonic() - t_start
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        stop.set()
        for p in pollers:
            p.cancel()
        await asyncio.gather(*pollers, return_exceptions=True)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {
        "authorize": tally.authorize,
        "authorize_at": tally.authorize_at,
        "push_ack": tally.push_ack,
        "holder": tally.holder,
        "errors": tally.errors,
        "skipped_sales": tally.skipped_sales,
        "skipped_holders": tally.skipped_holders,
        "seen": [t.seen for t in terms],
        "cpu_s": cpu,
        "elapsed_s": elapsed,
        "sales": len(tally.push_ack),
        "late_ms": late,
        "role": job.get("role", "sales"),
        "nice": os.nice(0),  # the CPU priority it ran at
    }


def _client(job: dict[str, Any], ready: Any, go: Any, out: Any) -> None:
    """One client process (spawned): its terminals, POS and holders."""
    if job.get("role") == "streams":
        os.nice(STREAM_NICE)
    try:
        out.put(asyncio.run(_client_main(job, ready, go)))
    except BaseException as exc:  # the parent must hear of it, not wait for ever
        out.put({"failed": repr(exc)})
        ready.put(-1)
        raise


# -- the parent ---------------------------------------------------------------------------------
def _initial(idc: str) -> str:
    return idc[-7:-1] if idc[-1] == "X" else idc[-6:]


def _world(server: ServerProcess, n_people: int, n_lost: int, n_terms: int) -> dict[str, Any]:
    url, token = server.url, server.token_file.read_text().strip()
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {token}"
    people, lost = [], []
    for i in range(n_people + n_lost):
        number, idc = f"P{i:05d}", id_card(500 + i)
        body = {"number": number, "name": f"p{i}", "type": "student", "id_card": idc}
        s.post(f"{url}/v1/admin/accounts", json=body, timeout=30).raise_for_status()
        s.post(
            f"{url}/v1/admin/accounts/{number}/topups",
            json={"amount_fen": 5_000_000, "channel": "cash"},
            timeout=30,
        ).raise_for_status()
        card = s.post(f"{url}/v1/admin/accounts/{number}/cards", json={}, timeout=30).json()
        acct = s.get(f"{url}/v1/admin/accounts/{number}", timeout=30).json()
        if i >= n_people:
            lost.append({"id": int(acct["id"]), "number": number})
            continue
        login = requests.post(
            f"{url}/v1/app/login", json={"number": number, "password": _initial(idc)}, timeout=30
        )
        login.raise_for_status()
        people.append(
            {
                "id": int(acct["id"]),
                "card_no": card["card_no"],
                "uid": card["uid"],
                "session": login.json()["token"],
            }
        )
    s.close()
    terms = [bench_api.enroll(server, f"peak-{i + 1}") for i in range(n_terms)]
    return {"people": people, "lost": lost, "terminals": terms}


#: an authorization slower than this is counted by when it was sent (:func:`_slow`): the
#: budget of issue 14
SLOW_MS = 25.0
#: … within this long after a loss report it counts as the report's wake's
AFTER_REPORT_S = 1.5


def _slow(sales: list[tuple[float, float]], start: float, reports: list[float]) -> dict[str, Any]:
    """When the authorizations over :data:`SLOW_MS` were sent (``sales``: (time.time() sent,
    ms); ``start``: the peak's; ``reports``: the loss reports' times): within
    :data:`AFTER_REPORT_S` after a loss report (its wake: every terminal's page at once), in
    the peak's first second, or elsewhere; and the seconds of the peak with the most."""
    by_second: dict[int, list[float]] = {}
    out = {"n": 0, "after_report": 0, "first_second": 0, "other": 0}
    for at, ms in sales:
        by_second.setdefault(int(at - start), []).append(ms)
        if ms <= SLOW_MS:
            continue
        out["n"] += 1
        if any(0.0 <= at - r < AFTER_REPORT_S for r in reports):
            out["after_report"] += 1
        elif at - start < 1.0:
            out["first_second"] += 1
        else:
            out["other"] += 1
    seconds = [
        {"second": sec, "sales": len(v), "over": sum(x > SLOW_MS for x in v), "max_ms": max(v)}
        for sec, v in sorted(by_second.items())
    ]
    worst = sorted((x for x in seconds if x["over"]), key=lambda x: -x["over"])[:8]
    for x in worst:
        x["max_ms"] = round(x["max_ms"], 1)
    return {"over_ms": SLOW_MS, "after_report_s": AFTER_REPORT_S, **out, "worst_seconds": worst}


def _ms(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "p50_ms": None, "p99_ms": None}
    v = sorted(values)
    return {
        "n": len(v),
        "p50_ms": round(percentile(v, 50), 2),
        "p99_ms": round(percentile(v, 99), 2),
        "max_ms": round(v[-1], 2),
    }


def _late(late: list[float]) -> dict[str, Any]:
    """How late the client processes' own loops ran (:func:`_lag_probe`)."""
    return {
        "over_ms": LAG_OVER_MS,
        "n": len(late),
        "max_ms": round(max(late, default=0.0), 1),
        "total_s": round(sum(late) / 1000, 3),
    }


def _spawn(ctx: Any, jobs: list[dict[str, Any]], timeout: float) -> tuple[list[Any], Any, Any, Any]:
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_client, args=(j, ready, go, out)) for j in jobs]
    for p in procs:
        p.start()
    for _ in procs:
        if ready.get(timeout=timeout) == -1:
            raise BenchmarkError(f"a peak client failed: {out.get(timeout=10)}")
    return procs, go, out, ready


def _collect(procs: list[Any], out: Any, timeout: float) -> list[dict[str, Any]]:
    results = [out.get(timeout=timeout) for _ in procs]
    for p in procs:
        p.join(10)
    failed = [r["failed"] for r in results if "failed" in r]
    if failed:
        raise BenchmarkError(f"a peak client failed: {failed[0]}")
    return results


def _idle(
    ctx: Any, world: dict[str, Any], till: str, feeds: list[str], sp: Shape
) -> dict[str, Any]:
    """One POS selling alone at 5 sales/s: the authorize figure of an idle server."""
    term = world["terminals"][-1]  # not one of the peak's POS: its chain is its own
    job = {
        "wid": 99,
        "terminals": [{**term, "url": feeds[0]}],
        "pos": [{**term, "url": till}],
        "people": world["people"],
        "holder_urls": feeds,
        "holder_conns": 0,
        "watch": [],
        "seconds": sp.idle_sales / 5.0,
        "sales_per_s": 5.0,
        "holders_per_s": 0.0,
        "settle_s": 0.0,
    }
    procs, go, out, _ = _spawn(ctx, [job], 120)
    go.set()
    (r,) = _collect(procs, out, job["seconds"] + 60)
    errors = sum(r["errors"].values())
    return {**_ms(r["authorize"]), "errors": errors}


def measure(sp: Shape, processes: int, db_url: str | None) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="ykt-bench-peak-"))
    servers: list[ServerProcess] = []
    t_setup = time.perf_counter()
    try:
        servers = bench_api.start_servers(base / "server", 1, db_url)
        world = _world(servers[0], n_people=100, n_lost=sp.reports, n_terms=sp.terminals + 1)
        servers += bench_api.start_servers(base / "server", processes - 1, db_url, nice=FEED_NICE)
        # the first process: the terminals' transactions and the admin API; the others (at
        # FEED_NICE) the feed streams and the holders' app: one process does all on SQLite
        till = servers[0].url
        feeds = [s.url for s in servers[1:]] or [till]
        ctx = mp.get_context("spawn")
        idle = _idle(ctx, world, till, feeds, sp)
        terms = [
            {**t, "url": feeds[i % len(feeds)]}
            for i, t in enumerate(world["terminals"][: sp.terminals])
        ]
        job = {
            "people": world["people"],
            "holder_urls": feeds,  # the holders' app goes where the streams go
            "watch": [a["id"] for a in world["lost"]],
            "seconds": sp.seconds,
            "settle_s": 10.0,
        }
        per = -(-sp.terminals // STREAM_PROCS)
        jobs = [
            {
                **job,
                "wid": w,
                "role": "streams",
                "terminals": terms[w * per : (w + 1) * per],
                "pos": [],
                "holder_conns": 0,
                "sales_per_s": 0.0,
                "holders_per_s": 0.0,
            }
            for w in range(STREAM_PROCS)
        ]
        # the first sp.pos terminals are the POS (their streams are held above)
        jobs += [
            {
                **job,
                "wid": STREAM_PROCS + w,
                "role": "sales",
                "terminals": [],
                "pos": [{**t, "url": till} for t in terms[w : sp.pos : SALE_PROCS]],
                "holder_conns": 10,
                "sales_per_s": sp.sales_per_s / SALE_PROCS,
                "holders_per_s": sp.holders_per_s / SALE_PROCS,
            }
            for w in range(SALE_PROCS)
        ]
        procs, go, out, _ = _spawn(ctx, jobs, 600)
        setup_s = round(time.perf_counter() - t_setup, 1)
        token = servers[0].token_file.read_text().strip()
        # a connection of its own for each report: one kept between reports (seconds apart)
        # can meet the server's keep-alive timeout closing it as it is reused
        admin = {"Authorization": f"Bearer {token}", "Connection": "close"}
        load0 = os.getloadavg()
        cpu0 = [cpu_seconds(s.pid) for s in servers]
        t0 = time.perf_counter()
        started = time.time()
        go.set()
        reported: list[tuple[int, int]] = []  # (account id, time.time_ns() of the report)
        for i, acct in enumerate(world["lost"]):
            due = t0 + sp.seconds * (i + 0.5) / len(world["lost"])
            time.sleep(max(0.0, due - time.perf_counter()))
            at = time.time_ns()
            answer = requests.post(
                f"{till}/v1/admin/accounts/{acct['number']}/status",
                json={"action": "report-loss"},
                headers=admin,
                timeout=30,
            )
            if answer.status_code != 200 or answer.json().get("status") != "lost":
                raise BenchmarkError(
                    f"report-loss answered {answer.status_code} {answer.text[:200]}"
                )
            reported.append((acct["id"], at))
        time.sleep(max(0.0, t0 + sp.seconds - time.perf_counter()))
        peak_s = time.perf_counter() - t0
        server_cpu = sum(cpu_seconds(s.pid) - c for s, c in zip(servers, cpu0, strict=True))
        load1 = os.getloadavg()
        results = _collect(procs, out, 120)
    finally:
        bench_api.stop_servers(servers)
        shutil.rmtree(base, ignore_errors=True)
    hot: list[float] = []
    missed = 0
    for aid, at in reported:
        for r in results:
            for seen in r["seen"]:
                if aid in seen:
                    hot.append((seen[aid] - at) / 1e6)
                else:
                    missed += 1
    errors: dict[str, int] = {}
    for r in results:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    sales = sum(r["sales"] for r in results)
    client_cpu = sum(r["cpu_s"] for r in results)
    elapsed = max(r["elapsed_s"] for r in results)
    return {
        "db": "postgresql" if db_url else "sqlite",
        "server_processes": processes,
        "terminals": sp.terminals,
        "pos": sp.pos,
        "client_processes": STREAM_PROCS + SALE_PROCS,
        # where the load went: every request to the one process, or the transactions and the
        # admin API to the first and the streams and the holders to the others, at feed_nice
        "routing": "one process" if processes == 1 else "by path",
        "feed_nice": FEED_NICE if processes > 1 else 0,
        "stream_clients_nice": min(r["nice"] for r in results if r["role"] == "streams"),
        "peak_s": round(peak_s, 1),
        "setup_s": setup_s,
        "sales_per_s_target": sp.sales_per_s,
        "sales_per_s": round(sales / sp.seconds, 1),
        "skipped_sales": sum(r["skipped_sales"] for r in results),
        "holders_per_s_target": sp.holders_per_s,
        "holders_per_s": round(sum(len(r["holder"]) for r in results) / sp.seconds, 1),
        "skipped_holders": sum(r["skipped_holders"] for r in results),
        "authorize": _ms([x for r in results for x in r["authorize"]]),
        "authorize_idle": idle,
        "authorize_slow": _slow(
            [x for r in results for x in zip(r["authorize_at"], r["authorize"], strict=True)],
            started,
            [at / 1e9 for _, at in reported],
        ),
        "push_ack": _ms([x for r in results for x in r["push_ack"]]),
        "holder": _ms([x for r in results for x in r["holder"]]),
        "hotlist": {**_ms(hot), "missed": missed, "reports": len(reported)},
        "errors": sum(errors.values()) + idle["errors"],
        "errors_by_kind": errors,
        "server_cpu_per_s": round(server_cpu / peak_s, 3),
        "client_cpu_per_s": round(client_cpu / elapsed, 3),
        "client_lag": {
            role: _late([x for r in results if r["role"] == role for x in r["late_ms"]])
            for role in ("sales", "streams")
        },
        "loadavg": {"before": [round(x, 2) for x in load0], "after": [round(x, 2) for x in load1]},
    }


def run(work: Path, opts: Options) -> dict[str, Any]:
    """``ykt bench --only peak``: SQLite, one server process."""
    return measure(shape(opts), 1, None)


def run_pg(work: Path, opts: Options) -> dict[str, Any]:
    """``peak_pg``: PostgreSQL, two server processes (skipped without Debian's postgresql)."""
    import psycopg  # (only here: PostgreSQL is optional)

    if not 0 <= opts.pg_flush_delay_ms <= 100:
        raise BenchmarkError("--pg-flush-delay-ms is 0 to 100 (PostgreSQL's commit_delay)")
    delay_us = round(opts.pg_flush_delay_ms * 1000)
    # commit_delay: PostgreSQL waits this long before each WAL flush, holding the WAL's write
    # lock (commit_siblings 0: always), as a disk whose flush takes that much longer would
    slow = {"commit_delay": str(delay_us), "commit_siblings": "0"} if delay_us else {}
    try:
        cluster = TempCluster(durable=True, max_connections=300, settings=slow).start()
    except PgUnavailable as exc:
        return {"skipped": str(exc)}
    try:
        url = cluster.create_database()
        figures = measure(shape(opts), 2, url)
        # what the server ran with, read back from it
        with psycopg.connect(url) as conn:
            row = conn.execute("SHOW commit_delay").fetchone()  # (microseconds)
        figures["pg_commit_delay_us"] = int(row[0]) if row else None
        return figures
    finally:
        cluster.stop()
