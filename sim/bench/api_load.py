"""``ykt bench --only api``: API requests per second of the central server on SQLite, with 1 and
2 server processes sharing one database (docs/operations.md: several stateless server
processes); ``--seconds`` of load per measurement (default 5, 1 with ``--quick``).

Real ``ykt server`` processes on loopback; client processes (so the client's own Python does
not cap the figure) send a mix of what the app and the terminals send most: the holder's
account (``GET /v1/app/me``), a page of bills (``GET /v1/app/bills``), a signed online
authorization (``POST /v1/pos/authorize``), and an app top-up order with the query password
(``POST /v1/app/topups``, a write with a password check; a payment provider is registered for
the channel, nothing is paid, so nothing is credited).  Bounded in time and count; figures
only, nothing fails on them (a top-up order past the per-account rate limit counts as an
error).  :mod:`sim.bench.db_load` runs the same mix on PostgreSQL.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from sim.bench.server import id_card
from sim.harness import procs
from sim.harness.ykt import ServerProcess
from sync.client import ServerClient
from sync.crypto import SigningKey
from sync.records import AuthorizeRequest

if TYPE_CHECKING:
    from sim.bench import Options

MIX = ("me", "bills", "authorize", "topup")
#: the kinds of the mix that are a GET of the app API with the holder's session
GETS = {"me": "/v1/app/me", "bills": "/v1/app/bills?limit=20"}


def _initial(idc: str) -> str:
    return idc[-7:-1] if idc[-1] == "X" else idc[-6:]


def start_servers(
    data: Path, processes: int, db_url: str | None = None, nice: int = 0
) -> list[ServerProcess]:
    """``processes`` servers on one database (SQLite in ``data``, or ``db_url``), at CPU
    priority ``nice``; each logs to its own file next to ``data``.  The first has made the
    database and the admin token before the others start."""
    servers: list[ServerProcess] = []
    try:
        for _ in range(processes):
            port = procs.free_port()
            log = data.parent / f"server-{port}.log"
            server = ServerProcess(data, port=port, db_url=db_url, log_path=log, nice=nice)
            servers.append(server)
            server.start()
    except BaseException:
        stop_servers(servers)
        raise
    return servers


def stop_servers(servers: list[ServerProcess]) -> None:
    procs.stop([s.proc for s in servers if s.proc is not None])
    for s in servers:
        s.stop()


def _setup(server: ServerProcess, accounts: int) -> dict[str, Any]:
    url, token = server.url, server.token_file.read_text().strip()
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {token}"
    people = []
    for i in range(accounts):
        number, idc = f"B{i:04d}", id_card(100 + i)
        s.post(
            f"{url}/v1/admin/accounts",
            json={"number": number, "name": f"b{i}", "type": "student", "id_card": idc},
            timeout=10,
        ).raise_for_status()
        s.post(
            f"{url}/v1/admin/accounts/{number}/topups",
            json={"amount_fen": 5_000_000, "channel": "cash"},
            timeout=10,
        ).raise_for_status()
        card = s.post(f"{url}/v1/admin/accounts/{number}/cards", json={}, timeout=10).json()
        login = requests.post(
            f"{url}/v1/app/login", json={"number": number, "password": _initial(idc)}, timeout=10
        )
        login.raise_for_status()
        people.append(
            {
                "card_no": card["card_no"],
                "uid": card["uid"],
                "session": login.json()["token"],
                "password": _initial(idc),
            }
        )
    s.close()
    # R7: an app top-up is an order at a registered payment provider (never paid here)
    server.register_paygate("app", "http://127.0.0.1:9", SigningKey.generate().public.to_b64())
    terminals = [enroll(server, f"bench-{w}") for w in range(8)]
    return {"people": people, "terminals": terminals}


def enroll(server: ServerProcess, name: str) -> dict[str, str]:
    """A POS terminal with a fresh random key: its id and the key's seed, in hex (for the
    client processes)."""
    seed = os.urandom(32)
    return {"id": server.enroll(name, SigningKey.from_seed(seed)), "seed": seed.hex()}


def _worker(args: tuple[int, list[str], dict[str, Any], float, int, Any]) -> None:
    """One client process: round-robin over the server URLs, the request mix and accounts."""
    wid, urls, world, seconds, max_requests, out = args
    key = SigningKey.from_seed(bytes.fromhex(world["terminal"]["seed"]))
    clients = [ServerClient(u, terminal_id=world["terminal"]["id"], key=key) for u in urls]
    sessions = [requests.Session() for _ in urls]
    lat: dict[str, list[float]] = {k: [] for k in MIX}
    errors = 0
    seq = 0
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end and n < max_requests:
        kind = MIX[n % len(MIX)]
        who = world["people"][(n * 7 + wid) % len(world["people"])]
        i = n % len(urls)
        t0 = time.perf_counter()
        try:
            if kind in GETS:
                r = sessions[i].get(
                    urls[i] + GETS[kind],
                    timeout=10,
                    headers={"Authorization": f"Bearer {who['session']}"},
                )
                ok = r.ok
            elif kind == "authorize":
                seq += 1
                resp = clients[i].authorize(
                    AuthorizeRequest(
                        seq=seq,
                        card_no=who["card_no"],
                        uid=who["uid"],
                        amount_fen=1,
                        method="card",
                    )
                )
                ok = resp.approved
            else:
                r = sessions[i].post(
                    urls[i] + "/v1/app/topups",
                    timeout=10,
                    headers={"Authorization": f"Bearer {who['session']}"},
                    json={"amount_fen": 1, "channel": "app", "password": who["password"]},
                )
                ok = r.ok
        except Exception:
            ok = False
        lat[kind].append(time.perf_counter() - t0)
        errors += 0 if ok else 1
        n += 1
    out.put({"lat": lat, "errors": errors, "n": n})


def _pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    v = sorted(values)
    return v[min(len(v) - 1, int(p * len(v)))] * 1000


def measure(
    processes: int,
    seconds: float = 5.0,
    clients: int = 4,
    accounts: int = 50,
    max_requests: int = 200_000,
    db_url: str | None = None,
) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="ykt-bench-api-"))
    servers: list[ServerProcess] = []
    try:
        servers = start_servers(base / "server", 1, db_url)
        world = _setup(servers[0], accounts)
        servers += start_servers(base / "server", processes - 1, db_url)
        urls = [s.url for s in servers]
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        jobs = []
        for w in range(clients):
            term = world["terminals"][w]
            mine = {"people": world["people"], "terminal": {"id": term["id"], "seed": term["seed"]}}
            jobs.append(
                ctx.Process(target=_worker, args=((w, urls, mine, seconds, max_requests, out),))
            )
        t0 = time.perf_counter()
        for j in jobs:
            j.start()
        results = [out.get(timeout=seconds + 60) for _ in jobs]
        elapsed = time.perf_counter() - t0
        for j in jobs:
            j.join(10)
        total = sum(r["n"] for r in results)
        lat = {k: [x for r in results for x in r["lat"][k]] for k in MIX}
        return {
            "db": "postgresql" if db_url else "sqlite",
            "server_processes": processes,
            "client_processes": clients,
            "requests": total,
            "errors": sum(r["errors"] for r in results),
            "seconds": round(elapsed, 2),
            "requests_per_s": round(total / elapsed, 1),
            "latency_ms": {
                k: {"p50": round(_pct(v, 0.5), 2), "p99": round(_pct(v, 0.99), 2)}
                for k, v in lat.items()
            },
        }
    finally:
        stop_servers(servers)
        shutil.rmtree(base, ignore_errors=True)


def run(work: Path, opts: Options) -> dict[str, Any]:
    """``ykt bench --only api``: 1 and 2 server processes."""
    seconds = opts.seconds if opts.seconds is not None else (1.0 if opts.quick else 5.0)
    return {"runs": [measure(n, seconds) for n in (1, 2)]}
