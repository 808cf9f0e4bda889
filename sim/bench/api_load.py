"""Benchmark: API requests per second of the central server on SQLite, with 1 and 2 server
processes sharing one database (docs/operations.md: several stateless server processes).

Real ``ykt server`` processes on loopback; client processes (so the client's own Python does
not cap the figure) send a mix of what the app and the terminals send most: the holder's
account (``GET /v1/app/me``), a page of bills (``GET /v1/app/bills``), a signed online
authorization (``POST /v1/pos/authorize``), and an app top-up with the query password
(``POST /v1/app/topups``, a write with a password check).  Bounded in time and count; prints
figures, never fails on them.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from sim.harness import procs

MIX = ("me", "bills", "authorize", "topup")
_W = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def _id_card(n: int) -> str:
    body = f"51010220040101{n % 1000:03d}"
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, _W, strict=True)) % 11]


def _initial(idc: str) -> str:
    return idc[-7:-1] if idc[-1] == "X" else idc[-6:]


def _start(data: Path, port: int, db_url: str | None = None) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge.cli",
            "server",
            "--data",
            str(data),
            "--port",
            str(port),
            "--password-cost",
            "10",
            *(["--db", db_url] if db_url else []),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).ok:
                return proc
        except requests.RequestException:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the server did not start")


def _setup(url: str, token: str, accounts: int) -> dict[str, Any]:
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {token}"
    people = []
    for i in range(accounts):
        number, idc = f"B{i:04d}", _id_card(100 + i)
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
    terminals = [_enroll(s, url, f"bench-{w}", timeout=10) for w in range(8)]
    return {"people": people, "terminals": terminals}


def _enroll(s: requests.Session, url: str, name: str, timeout: float) -> dict[str, str]:
    """A POS terminal with a fresh random key (``s`` speaks as the admin): its id and the key's
    seed, in hex."""
    from sync.client import ServerClient
    from sync.crypto import SigningKey

    tok = s.post(
        f"{url}/v1/admin/terminals/tokens",
        json={"role": "pos", "name": name},
        timeout=timeout,
    ).json()["token"]
    seed = os.urandom(32)
    enroller = ServerClient(url)
    tid = enroller.enroll(tok, SigningKey.from_seed(seed).public.to_b64())["terminal_id"]
    enroller.close()
    return {"id": tid, "seed": seed.hex()}


def _worker(args: tuple[int, list[str], dict[str, Any], float, int, Any]) -> None:
    """One client process: round-robin over the server URLs, the request mix and accounts."""
    wid, urls, world, seconds, max_requests, out = args
    from sync.client import ServerClient
    from sync.crypto import SigningKey
    from sync.records import AuthorizeRequest

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
            if kind == "me":
                r = sessions[i].get(
                    urls[i] + "/v1/app/me",
                    timeout=10,
                    headers={"Authorization": f"Bearer {who['session']}"},
                )
                ok = r.ok
            elif kind == "bills":
                r = sessions[i].get(
                    urls[i] + "/v1/app/bills?limit=20",
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
    servers: list[subprocess.Popen[bytes]] = []
    try:
        data = base / "server"
        ports: list[int] = [procs.free_port() for _ in range(processes)]
        servers.append(_start(data, ports[0], db_url))
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        token = (data / "admin.token").read_text().strip()
        world = _setup(urls[0], token, accounts)
        for port in ports[1:]:
            servers.append(_start(data, port, db_url))
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
        procs.stop(servers)
        shutil.rmtree(base, ignore_errors=True)


def run(seconds: float = 5.0, as_json: bool = False) -> list[dict[str, Any]]:
    figures = [measure(n, seconds) for n in (1, 2)]
    for f in figures:
        if as_json:
            print(json.dumps(f, ensure_ascii=False))
        else:
            lat = "  ".join(
                f"{k} p50 {v['p50']} / p99 {v['p99']} ms" for k, v in f["latency_ms"].items()
            )
            print(
                f"API on SQLite, {f['server_processes']} server process(es), "
                f"{f['client_processes']} clients: {f['requests_per_s']} requests/s "
                f"({f['requests']} in {f['seconds']} s, {f['errors']} errors)\n    {lat}"
            )
    return figures


if __name__ == "__main__":
    run(float(os.environ.get("YKT_BENCH_SECONDS", "5")))
