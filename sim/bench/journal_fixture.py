"""A journal with a large queue (1,000,000 unsynced records) for the append benchmark.

Built fast and honestly: the records are sealed by the journal's own code path
(:func:`sync.protocol.seal`: validated, canonical, chained by SHA-256, signed with the
terminal's Ed25519 key, the signatures made on every core) and inserted with the journal's own
row layout (:func:`edge.journal.row`) by ``executemany``, 20,000 rows per transaction, instead
of one durable commit each.  The file is cached (``--cache-dir``) under a name that carries the
record count and the key, spot-checked when reused (head, the last records' chain links and
the newest signature), and copied for each run so the cached file stays exactly as built.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from edge import journal as journal_mod
from edge.errors import JournalError
from edge.journal import Journal
from sim.bench.records import Chain, key_from_seed
from sync import protocol
from sync.clock import SystemClock
from sync.crypto import SigningKey, b64d
from sync.db import Database
from sync.errors import SyncError, YktError
from sync.records import JournalRecord

TERMINAL = "TBENCH1"
TZ = "Asia/Shanghai"
SEED = 20260101
FORMAT = 1  # bump when the way the fixture is built changes
CHUNK = 20_000


def fixture_key() -> SigningKey:
    return key_from_seed(SEED)


def _workers(n: int) -> int:
    """Signing processes: every core for a large fixture (spawning costs ~0.3 s)."""
    return (os.cpu_count() or 1) if n > 100_000 else 1


def build(path: Path, n: int) -> float:
    """Write a journal of ``n`` chained, signed, unsynced records to ``path``; seconds taken."""
    t0 = time.perf_counter()
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    db = Database(path, synchronous="FULL")
    Journal(db, TERMINAL, fixture_key(), SystemClock(), TZ)  # creates the schema
    chain = Chain(TERMINAL, SEED, list(range(1, 10_001)))
    workers = _workers(n)
    pool = None
    if workers > 1:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        for chunk in chain.stream(n, CHUNK, pool):
            with db.tx() as tx:
                tx.executemany(
                    journal_mod.INSERT,
                    [journal_mod.row(r.rec, r.body, r.sig, r.hash, TZ) for r in chunk],
                )
    finally:
        if pool is not None:
            pool.shutdown()
        db.close()
    return time.perf_counter() - t0


def spot_check(path: Path, n: int, last: int = 200) -> None:
    """Raise :class:`JournalError` unless ``path`` holds ``n`` unsynced records whose newest
    ``last`` chain and whose newest signature verify."""
    db = Database(path, synchronous="FULL")
    try:
        j = Journal(db, TERMINAL, fixture_key(), SystemClock(), TZ)
        if j.head_seq != n or j.acked != 0:
            raise JournalError(f"fixture {path} has head {j.head_seq}/acked {j.acked}, not {n}/0")
        rows = db.all(
            "SELECT seq, hash, body, sig FROM journal WHERE seq > ? ORDER BY seq", (n - last,)
        )
        prev = None
        for r in rows:
            body = r["body"].encode()
            rec = JournalRecord.parse(body)
            if protocol.record_hash(body) != r["hash"] or (prev and rec.prev != prev):
                raise JournalError(f"fixture {path}: chain broken at {r['seq']}")
            prev = r["hash"]
        newest = rows[-1]
        if not fixture_key().public.ok(b64d(newest["sig"]), newest["body"].encode()):
            raise JournalError(f"fixture {path}: newest signature does not verify")
    finally:
        db.close()


def obtain(dest: Path, n: int, cache_dir: Path | None) -> dict[str, Any]:
    """Put a journal of ``n`` queued records at ``dest``; say how it was made."""
    cores = _workers(n)
    how = (
        f"{n} records sealed by sync.protocol.seal (chained, Ed25519-signed"
        + (f", signatures made on {cores} cores" if cores > 1 else "")
        + f"), inserted with the journal's row layout by executemany, {CHUNK} rows per "
        "transaction; cached and spot-checked, copied for each run"
    )
    info: dict[str, Any] = {"records": n, "how": how}
    if cache_dir is None:
        info.update(cached=False, build_s=round(build(dest, n), 1))
        return info
    cache_dir.mkdir(parents=True, exist_ok=True)
    cached = cache_dir / f"journal-{n}-{TERMINAL}-{SEED}-f{FORMAT}.db"
    info["cache_file"] = str(cached)
    if cached.exists():
        try:
            spot_check(cached, n)
            info["cached"] = True
        except (YktError, SyncError) as exc:  # a damaged cache is rebuilt, never used
            info["cache_rejected"] = str(exc)
    if not info.get("cached"):
        tmp = cached.with_name(f"{cached.name}.{os.getpid()}.building")
        info.update(cached=False, build_s=round(build(tmp, n), 1))
        os.replace(tmp, cached)
    t0 = time.perf_counter()
    for suffix in ("-wal", "-shm"):
        Path(str(dest) + suffix).unlink(missing_ok=True)
    shutil.copyfile(cached, dest)
    info["copy_s"] = round(time.perf_counter() - t0, 1)
    return info
