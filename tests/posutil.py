"""Helpers for the POS-side tests: read an agent's caches and journal, read what the server
stored for a terminal, switch the server off and on, drive ``ykt`` as a subprocess."""

from __future__ import annotations

import itertools
import json
import signal
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeAlias

import pytest

from drivers.reader.base import PresentCard
from edge import identity
from edge.cache import Cache
from edge.journal import Journal
from edge.link import Link
from edge.pos.cardkeys import KeyProvider
from edge.pos.decide import Decider
from edge.pos.engine import Engine
from sim.cards import encoded_card
from sim.mifare import MifareClassic1K
from sim.reader import SimCard, SimReader
from sync import protocol
from sync.client import ServerClient
from sync.clock import ManualClock, SystemClock
from sync.crypto import VerifyKey, b64d
from sync.db import Database
from sync.records import to_json
from tests.helpers import PosProc, ServerProc, free_port, wait_until

#: a real ``ykt server`` and a ``ykt pos`` agent enrolled at it
Shop: TypeAlias = tuple[ServerProc, PosProc]


@contextmanager
def running_shop(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Shop]:
    """A server and an agent (terminal ``NAME-1``) for the tests of one module: the agent is
    stopped afterwards, the server killed (a graceful stop waits out the agent's long-polls)."""
    tmp = tmp_path_factory.mktemp(name)
    server = ServerProc(tmp / "server").start()
    try:
        pos = PosProc(tmp / "pos", server, token=server.enroll_token(f"{name}-1")).start()
        try:
            yield server, pos
        finally:
            pos.stop()
    finally:
        server.stop(signal.SIGKILL)


class NewCards:
    """New accounts with a card (``PREFIX<n>``, n counting from ``first``: each module its own
    range), topped up with ``topup_fen`` and known to the shop's agent before they are used."""

    def __init__(self, prefix: str, first: int, topup_fen: int) -> None:
        self.prefix, self.topup_fen = prefix, topup_fen
        self._n = itertools.count(first)

    def __call__(self, shop: Shop, **account: Any) -> dict[str, Any]:
        """``account``: more of :meth:`ServerProc.add_account`'s options (``expires``)."""
        server, pos = shop
        n = next(self._n)
        card = server.add_account(f"{self.prefix}{n}", n, topup_fen=self.topup_fen, **account)
        pos.wait_card_known(card["card_no"])
        return card


def admin_args(server: ServerProc) -> list[str]:
    return ["admin", "--server", server.url, "--token-file", str(server.token_file)]


def set_policy(server: ServerProc, **values: Any) -> dict[str, Any]:
    """``PUT /v1/admin/policy`` (what ``ykt admin policy set`` sends)."""
    return server.admin().call("PUT", "/v1/admin/policy", {"values": values})


def status_action(server: ServerProc, number: str, action: str) -> dict[str, Any]:
    """report-loss | unlock | freeze | unfreeze (R10, R12), as the desk does it."""
    return server.admin().call("POST", f"/v1/admin/accounts/{number}/status", {"action": action})


@contextmanager
def agent_cache(pos: PosProc) -> Iterator[Cache]:
    """The agent's cache database, opened read-side by the test (WAL: safe while it runs)."""
    cache = Cache(Database(pos.data / "cache.db", synchronous="NORMAL"))
    try:
        yield cache
    finally:
        cache.db.close()


def wait_cached(
    pos: PosProc, pred: Callable[[Cache], Any], timeout: float = 10.0, what: str = ""
) -> Any:
    """Wait until the delta feed has brought the agent's cache to a state ``pred`` accepts."""
    with agent_cache(pos) as cache:
        try:
            return wait_until(lambda: pred(cache), timeout, 0.05)
        except AssertionError as exc:
            raise AssertionError(f"agent cache never got {what or pred}: {exc}") from None


def wait_feed_current(server: ServerProc, pos: PosProc, timeout: float = 15.0) -> int:
    """Wait until the agent has pulled the delta feed up to the server's current version
    (every change made so far has reached its caches)."""
    import requests

    version = int(requests.get(server.url + "/v1/health", timeout=5).json()["version"])
    wait_until(lambda: pos.status()["feed_version"] >= version, timeout, 0.05)
    return version


def wait_account_cached(pos: PosProc, account_id: int, **expect: Any) -> dict[str, Any]:
    """Wait until the agent's snapshot of an account has the expected column values."""

    def ok(cache: Cache) -> dict[str, Any] | None:
        got = cache.account(account_id)
        a = None if got is None else to_json(got)
        return a if a and all(a[k] == v for k, v in expect.items()) else None

    got: dict[str, Any] = wait_cached(pos, ok, what=f"account {account_id} with {expect}")
    return got


def wait_policy_cached(pos: PosProc, **expect: Any) -> None:
    def ok(cache: Cache) -> bool:
        raw = cache.db.scalar("SELECT value FROM meta WHERE key = 'policy'")
        pol = json.loads(raw) if raw else {}
        return all(pol.get(k) == v for k, v in expect.items())

    wait_cached(pos, ok, what=f"policy {expect}")


def open_journal(data: Path) -> Journal:
    """The agent's journal, opened with its own identity (for ``verify`` and queries)."""
    found = identity.load(data)
    assert found is not None, f"{data} holds no terminal identity"
    ident, key = found
    return Journal(
        Database(data / "journal.db", synchronous="FULL"),
        ident.terminal_id,
        key,
        SystemClock(),
        ident.tz,
    )


def journal_rows(data: Path) -> list[dict[str, Any]]:
    """Every record of the agent's journal (parsed body + signature), oldest first."""
    j = open_journal(data)
    try:
        return [
            {**protocol.parse_body(r["body"]), "_body": r["body"], "_sig": r["sig"]}
            for r in j.db.all("SELECT body, sig FROM journal ORDER BY seq")
        ]
    finally:
        j.db.close()


def server_records(server: ServerProc, terminal_id: str) -> list[dict[str, Any]]:
    """The journal records the server stored for a terminal, as stored (body, sig, hash)."""
    conn = sqlite3.connect(f"file:{server.data / 'ykt.db'}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute(
            "SELECT seq, hash, body, sig FROM records WHERE terminal_id = ? ORDER BY seq",
            (terminal_id,),
        ).fetchall()
        pub = conn.execute("SELECT pubkey FROM terminals WHERE id = ?", (terminal_id,)).fetchone()
    finally:
        conn.close()
    assert pub is not None, f"server knows no terminal {terminal_id}"
    return [{**dict(r), "pubkey": pub["pubkey"]} for r in rows]


def verify_server_chain(server: ServerProc, terminal_id: str) -> int:
    """Walk the chain the server stored for a terminal: gapless from 1, each record linked to
    the one before by hash, each signed by the terminal's key.  Returns the record count."""
    rows = server_records(server, terminal_id)
    if not rows:
        return 0
    key = VerifyKey.from_b64(rows[0]["pubkey"])
    prev = protocol.genesis_hash(terminal_id)
    for n, r in enumerate(rows, start=1):
        body = r["body"].encode()
        rec = protocol.parse_body(body)
        assert r["seq"] == n == rec["seq"], f"server chain has a gap at {n}"
        assert rec["prev"] == prev, f"server chain broken at {n}"
        assert protocol.record_hash(body) == r["hash"], f"server hash wrong at {n}"
        assert key.ok(b64d(r["sig"]), body), f"server record {n} has a bad signature"
        prev = r["hash"]
    return len(rows)


def sale_amounts(account: dict[str, Any]) -> list[int]:
    """The sales on an account's bills (R9), as positive fen, oldest first."""
    return [-b["amount_fen"] for b in account["bills"] if b["kind"] == "sale"]


def restart_server(server: ServerProc) -> ServerProc:
    """Start a stopped server again on the same port and data directory."""
    server.proc = None
    return server.start()


@contextmanager
def server_away(server: ServerProc, pos: PosProc, *, settled: bool = False) -> Iterator[None]:
    """The server is away for the block (killed: a graceful stop waits out the agent's
    long-poll); afterwards it runs again and the agent has pushed its journal.  ``settled``:
    first every change so far has reached the agent (its feed is current)."""
    if settled:
        wait_feed_current(server, pos)
    server.stop(signal.SIGKILL)
    try:
        yield
    finally:
        restart_server(server)
        pos.wait_synced(20)


def dead_url() -> str:
    """A loopback URL nothing listens on."""
    return f"http://127.0.0.1:{free_port()}"


class Rig:
    """A POS engine built in-process on the real decider, journal and cache, enrolled at a
    real server, with a clock the test moves and no background sync (the test pulls the feed
    with :meth:`pull`; nothing is pushed)."""

    def __init__(self, server: ServerProc, data: Path) -> None:
        self.clock = ManualClock(SystemClock().now_ms())  # the server checks request times
        ident, key = identity.enroll(data, server.url, server.enroll_token(data.name), "pos")
        self.journal = Journal(
            Database(data / "journal.db"), ident.terminal_id, key, self.clock, ident.tz
        )
        self.cache = Cache(Database(data / "cache.db", synchronous="NORMAL"))
        self.client = ServerClient(
            server.url, terminal_id=ident.terminal_id, key=key, clock=self.clock
        )
        self.keys = KeyProvider(data / "card-keys.json", self.client.keystore, ident.role)
        self.keys.get()  # now, while the server answers
        self.decider = Decider(
            self.journal,
            self.cache,
            self.client,
            Link(self.clock),
            self.clock,
            ident.tz,
            self.keys,
        )
        self.engine = Engine(self.decider, self.clock)
        self.reader = SimReader(data.name)
        self._cards: dict[str, MifareClassic1K] = {}
        self._on: dict[str, SimCard] = {}

    def tap(self, card: dict[str, Any]) -> PresentCard:
        """Put the (simulated) card the server issued on the rig's reader: a tap.  The same
        card keeps its counters from tap to tap."""
        on = self._on.get(card["card_no"])
        if on is not None and not on.gone:
            return on  # still lying on the reader: the same card again
        emu = self._cards.get(card["card_no"])
        if emu is None:
            emu = encoded_card(bytes.fromhex(card["uid"]), card["identity"], self.keys.get())
            self._cards[card["card_no"]] = emu
        self._on[card["card_no"]] = self.reader.present(emu)
        return self._on[card["card_no"]]

    def pull(self) -> None:
        self.cache.apply(self.client.feed(self.cache.version))

    def close(self) -> None:
        self.client.close()
        self.journal.db.close()
        self.cache.db.close()
