"""Server ingest (docs/benchmarks.md: ≥ 20,000 signed records/s in 500-record batches on 2 cores, each
batch acked p99 ≤ 250 ms).

``http``: a real ``ykt server`` (uvicorn on loopback, SQLite) and several enrolled terminals,
each pushing its own chain of signed 500-record batches one after another (a batch waits for
the previous ack, as a terminal's uplink does), all terminals at once.  Request bodies are
encoded and records signed before the clock starts, so the figures are the server's; every
request is still signed and fresh.  Afterwards the server's heads, alarms and ledger check
are read to confirm every record was applied once.

``in_process``: :func:`sync.server.ingest.ingest` alone on a fresh server database (no HTTP,
no JSON request parsing), batch after batch.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from sim.bench.errors import BenchmarkError
from sim.bench.records import Chain, key_from_seed, wire
from sim.bench.server import BenchServer, account_number, cpu_seconds, roster_csv
from sim.bench.stats import rate, summary_ms
from sync import protocol
from sync.crypto import SigningKey
from sync.server import accounts, ingest, ledger, terminals
from sync.server.context import Context, ServerConfig

if TYPE_CHECKING:
    from sim.bench import Options

BATCH = 500
TOPUP_FEN = 10_000_000  # ¥100,000 each: no sale in the run overdraws


def _sizes(quick: bool) -> tuple[int, int, int]:
    """(terminals, batches per terminal, accounts)"""
    return (2, 4, 50) if quick else (4, 50, 200)


def _chains(tids: list[str], seeds: list[int], account_ids: list[int]) -> list[Chain]:
    return [
        Chain(tid, seed, account_ids, rng_seed=seed) for tid, seed in zip(tids, seeds, strict=True)
    ]


def _batches(chain: Chain, n_batches: int, pool: ProcessPoolExecutor | None) -> list[list[Any]]:
    return [wire(b) for b in chain.stream(n_batches * BATCH, BATCH, pool)]


def _pool(records: int) -> ProcessPoolExecutor | None:
    cores = os.cpu_count() or 1
    if records < 50_000 or cores < 2:
        return None
    return ProcessPoolExecutor(cores, mp_context=multiprocessing.get_context("spawn"))


# -- over HTTP ----------------------------------------------------------------------------------
def _push_all(
    url: str,
    tid: str,
    key: SigningKey,
    bodies: list[bytes],
    start: threading.Barrier,
    lat: list[int],
    errors: list[str],
) -> None:
    session = requests.Session()
    try:
        start.wait()
        expect = 0
        for data in bodies:
            headers = {"Content-Type": "application/json"}
            headers.update(
                protocol.sign_request(
                    key, tid, "POST", "/v1/journal", data, int(time.time() * 1000)
                )
            )
            t0 = time.perf_counter_ns()
            resp = session.post(url + "/v1/journal", data=data, headers=headers, timeout=120)
            lat.append(time.perf_counter_ns() - t0)
            expect += BATCH
            if resp.status_code != 200:
                errors.append(f"{tid}: HTTP {resp.status_code} {resp.text[:200]}")
                return
            got = resp.json()
            if got["ack"] != expect or got["applied"] != BATCH or got["alarms"]:
                errors.append(f"{tid}: unexpected answer {got}")
                return
    except requests.RequestException as exc:
        errors.append(f"{tid}: {exc}")
    finally:
        session.close()


def over_http(work: Path, quick: bool) -> dict[str, Any]:
    n_terms, n_batches, n_accounts = _sizes(quick)
    with BenchServer(work / "server") as srv:
        t0 = time.perf_counter()
        accts = srv.populate(n_accounts, TOPUP_FEN)
        seeds = [7000 + i for i in range(n_terms)]
        tids = [srv.terminal(f"bench-{i}", seeds[i])[0] for i in range(n_terms)]
        setup_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        chains = _chains(tids, seeds, [a["id"] for a in accts])
        pool = _pool(n_terms * n_batches * BATCH)
        try:
            bodies = [
                [json.dumps({"records": b}).encode() for b in _batches(c, n_batches, pool)]
                for c in chains
            ]
        finally:
            if pool is not None:
                pool.shutdown()
        sign_s = time.perf_counter() - t0

        start = threading.Barrier(n_terms + 1)
        lats: list[list[int]] = [[] for _ in tids]
        errors: list[str] = []
        threads = [
            threading.Thread(
                target=_push_all,
                args=(srv.url, tid, chains[i].key, bodies[i], start, lats[i], errors),
                daemon=True,
            )
            for i, tid in enumerate(tids)
        ]
        for t in threads:
            t.start()
        cpu0, own0 = cpu_seconds(srv.pid), time.process_time()
        start.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        server_cpu = cpu_seconds(srv.pid) - cpu0
        client_cpu = time.process_time() - own0
        if errors:
            raise BenchmarkError("ingest benchmark: " + "; ".join(errors[:3]))
        check = _verify(srv, tids, n_batches * BATCH)
    total = n_terms * n_batches * BATCH
    return {
        "terminals": n_terms,
        "batches": n_terms * n_batches,
        "batch_size": BATCH,
        "records": total,
        "accounts": n_accounts,
        "wall_s": round(wall, 3),
        "records_per_s": rate(total, wall),
        "ack": summary_ms(x for lat in lats for x in lat),
        "server_cpu_s": round(server_cpu, 2),
        "server_cpu_us_per_record": round(server_cpu / total * 1e6, 1),
        "client_cpu_s": round(client_cpu, 2),
        "setup_s": round(setup_s, 1),
        "prepare_s": round(sign_s, 1),
        "verified": check,
    }


def _verify(srv: BenchServer, tids: list[str], per_terminal: int) -> dict[str, Any]:
    admin = srv.admin()
    try:
        heads = {
            t["id"]: t["head_seq"] for t in admin.call("GET", "/v1/admin/terminals")["terminals"]
        }
        alarms = admin.call("GET", "/v1/admin/alarms")["alarms"]
        check = admin.call("GET", "/v1/admin/ledger/check")
    finally:
        admin.close()
    bad = {t: heads.get(t) for t in tids if heads.get(t) != per_terminal}
    if bad or alarms or not check["ok"]:
        raise BenchmarkError(
            f"ingest benchmark: server state is wrong (heads {bad}, {len(alarms)} alarms, "
            f"ledger ok={check['ok']})"
        )
    return {"heads_ok": True, "alarms": 0, "ledger_ok": True, "transfers": check["transfers"]}


# -- in process ---------------------------------------------------------------------------------
def in_process(work: Path, quick: bool) -> dict[str, Any]:
    n_terms, n_batches, n_accounts = _sizes(quick)
    ctx = Context.open(ServerConfig(data_dir=work / "inproc", password_log2_n=10, seed=1))
    try:
        accounts.import_roster(ctx, roster_csv(n_accounts))
        ids = []
        for i in range(n_accounts):
            a = accounts.topup(ctx, account_number(i), TOPUP_FEN, "cash")
            ids.append(a["id"])
        seeds = [8000 + i for i in range(n_terms)]
        tids = []
        for i, seed in enumerate(seeds):
            token = terminals.create_enroll_token(ctx, "pos", f"bench-{i}")["token"]
            key = key_from_seed(seed)
            tids.append(terminals.enroll(ctx, token, key.public.to_b64())["terminal_id"])
        chains = _chains(tids, seeds, ids)
        pool = _pool(n_terms * n_batches * BATCH)
        try:
            batches = [_batches(c, n_batches, pool) for c in chains]
        finally:
            if pool is not None:
                pool.shutdown()
        rows = {
            tid: dict(ctx.db.one("SELECT * FROM terminals WHERE id = ?", (tid,)) or {})
            for tid in tids
        }
        lat = []
        t0 = time.perf_counter()
        for b in range(n_batches):
            for i, tid in enumerate(tids):
                s0 = time.perf_counter_ns()
                got = ingest.ingest(ctx, rows[tid], batches[i][b])
                lat.append(time.perf_counter_ns() - s0)
                if got.ack != (b + 1) * BATCH or got.alarms:
                    raise BenchmarkError(f"ingest benchmark: unexpected answer {got}")
        wall = time.perf_counter() - t0
        if not ledger.check(ctx.db)["ok"]:
            raise BenchmarkError("ingest benchmark: the ledger does not balance")
    finally:
        ctx.db.close()
    total = n_terms * n_batches * BATCH
    return {
        "records": total,
        "records_per_s": rate(total, wall),
        "batch": summary_ms(lat),
    }


def run(work: Path, opts: Options) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    return {"in_process": in_process(work, opts.quick), "http": over_http(work, opts.quick)}
