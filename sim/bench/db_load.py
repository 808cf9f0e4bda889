"""``ykt bench --only db``: the central server's journal ingest (records/s) and API
(requests/s) on SQLite and on PostgreSQL, with 1 and 2 server processes sharing the database
(docs/operations.md: several stateless server processes behind a load balancer);
``--seconds`` of load per measurement (default 5).  ``--quick`` measures only a short SQLite
ingest with one server process (no PostgreSQL cluster to start).

Real ``ykt server`` processes on loopback.  PostgreSQL is a throwaway cluster of Debian's
postgresql started for the run (:mod:`sim.harness.pg`) with its durable defaults (fsync,
synchronous commit), as SQLite runs with synchronous=FULL.

- **ingest**: client processes, each a terminal with its own key, seal 500-record batches of
  signed, chained sales beforehand, then push them as fast as the server acks, spreading the
  batches over the server processes; figures: records/s applied, batch ack p50/p99.
- **api**: the request mix of :mod:`sim.bench.api_load` (holder account, bills, signed
  online authorization, app top-up), requests/s and latencies.

Figures only; nothing here passes or fails on them.
"""

from __future__ import annotations

import multiprocessing as mp
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from sim.bench import api_load as bench_api
from sim.bench.records import offline_sale
from sim.bench.server import id_card
from sim.harness.pg import PgUnavailable, TempCluster
from sim.harness.ykt import ServerProcess
from sync import protocol
from sync.client import ServerClient
from sync.crypto import SigningKey

if TYPE_CHECKING:
    from sim.bench import Options

BATCH = 500
CLIENTS = 4
#: records sealed per client before the clock starts: enough for this rate for the whole run
MAX_RATE = 30_000


def _world(server: ServerProcess, accounts: int, terminals: int) -> dict[str, Any]:
    url, token = server.url, server.token_file.read_text().strip()
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {token}"
    ids = []
    for i in range(accounts):
        number = f"I{i:04d}"
        body = {"number": number, "name": f"i{i}", "type": "student"}
        body["id_card"] = id_card(300 + i)
        s.post(f"{url}/v1/admin/accounts", json=body, timeout=30).raise_for_status()
        s.post(
            f"{url}/v1/admin/accounts/{number}/topups",
            json={"amount_fen": 9_000_000, "channel": "cash"},
            timeout=30,
        ).raise_for_status()
        ids.append(s.get(f"{url}/v1/admin/accounts/{number}", timeout=30).json()["id"])
    s.close()
    terms = [bench_api.enroll(server, f"ingest-{w}") for w in range(terminals)]
    return {"accounts": ids, "terminals": terms}


def _pusher(args: tuple[int, list[str], dict[str, Any], int, float, Any, Any, Any]) -> None:
    """One terminal: seal its batches, wait for the start, push them until the time is up."""
    wid, urls, world, n_records, seconds, ready, go, out = args
    term = world["terminals"][wid]
    key = SigningKey.from_seed(bytes.fromhex(term["seed"]))
    prev, now = protocol.genesis_hash(term["id"]), int(time.time() * 1000)
    batches: list[list[dict[str, str]]] = []
    for start in range(0, n_records, BATCH):
        batch = []
        for seq in range(start + 1, min(start + BATCH, n_records) + 1):
            rec = offline_sale(
                term=term["id"],
                seq=seq,
                prev=prev,
                ts=now,
                acct=world["accounts"][(seq * 7 + wid) % len(world["accounts"])],
                amt=1 + seq % 9,
                cred="card:bench",
                lim=5000,
            )
            body, sig = protocol.seal(key, rec)
            prev = protocol.record_hash(body)
            batch.append(protocol.wire_record(body, sig))
        batches.append(batch)
    clients = [ServerClient(u, terminal_id=term["id"], key=key) for u in urls]
    ready.put(wid)
    go.wait()
    lat, applied, errors = [], 0, 0
    end = time.monotonic() + seconds
    for i, batch in enumerate(batches):
        if time.monotonic() >= end:
            break
        t0 = time.perf_counter()
        try:
            got = clients[(i + wid) % len(clients)].push(batch)
            applied += got.applied
        except Exception:
            errors += 1
        lat.append(time.perf_counter() - t0)
    for c in clients:
        c.close()
    out.put({"applied": applied, "errors": errors, "lat": lat, "t_end": time.time()})


def measure_ingest(
    processes: int, seconds: float = 5.0, db_url: str | None = None, clients: int = CLIENTS
) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="ykt-bench-ingest-"))
    servers: list[ServerProcess] = []
    try:
        servers = bench_api.start_servers(base / "server", processes, db_url)
        urls = [s.url for s in servers]
        world = _world(servers[0], accounts=40, terminals=clients)
        n_records = int(MAX_RATE * seconds / clients) // BATCH * BATCH + BATCH
        ctx = mp.get_context("spawn")
        ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
        jobs = [
            ctx.Process(
                target=_pusher, args=((w, urls, world, n_records, seconds, ready, go, out),)
            )
            for w in range(clients)
        ]
        for j in jobs:
            j.start()
        for _ in jobs:
            ready.get(timeout=600)
        t0 = time.time()
        go.set()
        results = [out.get(timeout=seconds + 120) for _ in jobs]
        elapsed = max(r["t_end"] for r in results) - t0
        for j in jobs:
            j.join(10)
        lat = [x for r in results for x in r["lat"]]
        applied = sum(r["applied"] for r in results)
        return {
            "bench": "ingest",
            "db": "postgresql" if db_url else "sqlite",
            "server_processes": processes,
            "client_processes": clients,
            "batch": BATCH,
            "records": applied,
            "errors": sum(r["errors"] for r in results),
            "seconds": round(elapsed, 2),
            "records_per_s": round(applied / elapsed, 1),
            "batch_ack_ms": {
                "p50": round(bench_api._pct(lat, 0.5), 1),
                "p99": round(bench_api._pct(lat, 0.99), 1),
            },
        }
    finally:
        bench_api.stop_servers(servers)
        shutil.rmtree(base, ignore_errors=True)


def measure_all(
    seconds: float = 5.0, report: Callable[[dict[str, Any]], None] | None = None
) -> list[dict[str, Any]]:
    """Every figure: ingest and API, SQLite then PostgreSQL, 1 and 2 server processes; each
    figure goes to ``report`` as soon as it is measured.  Without Debian's postgresql the
    PostgreSQL figures are left out (a figure with ``skipped`` says why)."""
    figures: list[dict[str, Any]] = []

    def keep(f: dict[str, Any]) -> None:
        figures.append(f)
        if report is not None:
            report(f)

    def both(fresh: Callable[[], str] | None) -> None:
        for n in (1, 2):
            keep(measure_ingest(n, seconds, fresh() if fresh else None))
            g = bench_api.measure(n, seconds, db_url=fresh() if fresh else None)
            keep({"bench": "api", **g})

    both(None)
    try:
        cluster = TempCluster(durable=True).start()
    except PgUnavailable as exc:
        keep({"bench": "postgresql", "skipped": str(exc)})
        return figures
    try:
        both(cluster.create_database)
    finally:
        cluster.stop()
    return figures


def run(work: Path, opts: Options) -> dict[str, Any]:
    """``ykt bench --only db``."""
    if opts.quick and opts.seconds is None:
        return {"figures": [measure_ingest(1, 1.0, None)]}
    return {"figures": measure_all(opts.seconds or 5.0)}
