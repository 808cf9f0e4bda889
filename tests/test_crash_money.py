"""A crash at any instant of a phone payment leaves either no charge or a journaled sale that
syncs (issue 10, items 4 and 6; docs/security.md): the terminal's real journal, cache, deciders
and engine in-process, on files, talking to the real server app (tests/live.py) through a
transport that can cut the network and lose an answer; a crash is a ``Crash`` raised at one
step (it unwinds like a killed process: nothing after it runs), then the terminal starts
again from its files, as ``ykt pos`` does, and syncs.

- Reverse scan (item 4): the money moves when the phone pays, before the terminal journals
  anything.  Killed at every step of a request's life, the payment ends linked to the sale
  record, or refunded.
- Forward scan online (item 6): the server claims the code when it approves it.  Killed at
  every step before and after journaling, the code charges the holder once, and only a code
  journaled twice is a double spend.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from edge.cache import Cache
from edge.journal import Journal
from edge.link import Link
from edge.pos.cardkeys import KeyProvider
from edge.pos.decide import Decider
from edge.pos.decide_qr import QrDecider
from edge.pos.engine import Engine, State
from edge.uplink import Backoff, Uplink
from sim import wallet, wallet_codes
from sync import codes
from sync.client import MockTransport, Request, Response, ServerClient
from sync.clock import DEFAULT_TZ, ManualClock
from sync.crypto import SigningKey
from sync.db import Database
from sync.records import JournalRecord
from sync.server import accounts, ledger, reconcile
from tests.handterm import HandTerminal
from tests.inproc import NOON_MS
from tests.live import Live, open_live


class Crash(BaseException):
    """The process dies here (BaseException: no ``except Exception`` of ours catches it)."""


@pytest.fixture
def live(tmp_path: Path, db_kind: str) -> Iterator[Live]:
    server = open_live(tmp_path / "server", clock=ManualClock(NOON_MS))
    yield server
    server.stop()


class Till:
    """One start of a POS on the files in ``data``: journal, cache, deciders and engine.

    ``cut``: the network is down.  ``lose``: the path of a request whose answer never comes
    back because the process dies right after the server did the work."""

    def __init__(self, live: Live, data: Path, key: SigningKey, terminal_id: str) -> None:
        clk = live.ctx.clock
        self.live, self.data, self.key, self.id = live, data, key, terminal_id
        self.cut = False
        self.lose: str | None = None
        self.journal = Journal(
            Database(data / "journal.db", synchronous="FULL"), terminal_id, key, clk, DEFAULT_TZ
        )
        self.cache = Cache(Database(data / "cache.db"))
        self.link = Link(clk)
        self.client = ServerClient(
            "http://till.invalid",
            terminal_id=terminal_id,
            key=key,
            clock=clk,
            transport=MockTransport(self._send),
        )
        self.decider = Decider(
            self.journal,
            self.cache,
            self.client,
            self.link,
            clk,
            DEFAULT_TZ,
            KeyProvider(data / "card-keys.json", self.client.keystore),
        )
        self.qr = QrDecider(self.decider, terminal_id, "ynart", key, random.Random(5))
        self.engine = Engine(self.decider, clk, self.qr)
        self.uplink = Uplink(
            self.journal,
            self.cache,
            lambda: self.client,
            self.link,
            random.Random(3),
            poll_wait_s=0,
        )

    @classmethod
    def enroll(cls, live: Live, data: Path, name: str) -> Till:
        key = SigningKey.generate()
        got = ServerClient(live.url).enroll(live.enroll_token(name), key.public.to_b64())
        data.mkdir(parents=True)
        return cls(live, data, key, got["terminal_id"])

    def restart(self) -> Till:
        """The process died: a new one starts on the same files and closes what the dead one
        left open (edge/pos/agent.py)."""
        self.journal.db.close()
        self.cache.db.close()
        again = Till(self.live, self.data, self.key, self.id)
        again.cut = self.cut
        again.qr.close_open("the terminal started again")
        return again

    def _send(self, req: Request) -> Response:
        if self.cut:
            raise ConnectionError("the network is cut")
        r = requests.request(
            req.method,
            self.live.url + req.target,
            data=req.content,
            headers=dict(req.headers),
            timeout=10,
        )
        if req.path == self.lose:
            raise Crash(f"died before the answer to {req.path} arrived")
        return Response(r.status_code, r.content)

    def offline(self) -> None:
        self.cut = True
        self.link.down("the network is cut")

    def sync(self) -> None:
        """The network is back: the feed, then the journal up to its head."""
        self.cut = False
        backoff = Backoff(random.Random(1))
        version = -1
        while version != self.cache.version:
            version = self.cache.version
            assert self.uplink.pull_page(self.client, backoff) is None
        while self.journal.queued:
            assert self.uplink.push_batch(self.client, backoff) is None

    def records(self) -> list[JournalRecord]:
        return [
            JournalRecord.parse(r["body"])
            for r in self.journal.db.all("SELECT body FROM journal ORDER BY seq")
        ]


def crash_in(obj: Any, name: str, when: str, calls: list[Any] | None = None) -> None:
    """Make ``obj.name`` crash ``before`` it runs or ``after`` it returned (its effects
    durable)."""
    real: Callable[..., Any] = getattr(obj, name)

    def dying(*args: Any, **kw: Any) -> Any:
        if when == "before":
            raise Crash(f"died before {name}")
        out = real(*args, **kw)
        if calls is not None:
            calls.append(out)
        raise Crash(f"died after {name}")

    setattr(obj, name, dying)


class Phone:
    def __init__(self, live: Live, tmp: Path, n: int, topup: int) -> None:
        self.live = live
        self.number = f"P{n}"
        card = live.add_account(self.number, n, topup_fen=topup)
        self.path = tmp / f"phone{n}.json"
        w = wallet.login(live.url, self.number, card["password"])
        w.save(self.path)
        self.id = int(w.account["id"])

    def code(self) -> str:
        w = wallet.Wallet.load(self.path)
        made = wallet_codes.make_code(w, self.path, codes.Kind.PAY, clock=self.live.ctx.clock)
        return str(made["text"])

    def pay(self, request_text: str) -> dict[str, Any]:
        return wallet_codes.scan(
            wallet.Wallet.load(self.path), request_text, path=self.path, clock=self.live.ctx.clock
        )

    def account(self) -> dict[str, Any]:
        return accounts.show_account(self.live.ctx, self.number)


def money_is_right(live: Live) -> None:
    assert ledger.check(live.ctx.db)["ok"]
    negative = "SELECT id FROM ledger_accounts WHERE balance < 0 AND kind IN ('wallet', 'merchant')"
    assert live.ctx.db.all(negative) == []
    unsettled = live.ctx.db.all(
        "SELECT terminal_id, order_no FROM reverse_payments "
        "WHERE journal_seq IS NULL AND refund_id IS NULL"
    )
    assert unsettled == [], "a phone payment neither met its record nor was refunded"
    assert live.ctx.db.scalar("SELECT COUNT(*) FROM holds") == 0


# -- item 4: reverse scan -----------------------------------------------------------------------
REVERSE_CRASHES = [
    "request made, not yet shown",
    "phone paid, proof not yet shown",
    "proof accepted, sale not yet journaled",
    "sale journaled, approval not yet shown",
    "cancelled, void not yet journaled",
    "void journaled, screen not yet idle",
]


@pytest.mark.parametrize("crash", REVERSE_CRASHES)
def test_a_reverse_scan_killed_at_any_step_charges_once_with_a_sale_or_not_at_all(
    live: Live, tmp_path: Path, crash: str
) -> None:
    phone = Phone(live, tmp_path, 1, topup=1000)
    till = Till.enroll(live, tmp_path / "pos", "rev")
    till.sync()  # the code keys and the proof key
    till.offline()  # reverse scan is for a terminal that cannot reach the server (R8)
    e = till.engine
    e.key_amount(300)
    made: list[Any] = []
    if crash == "request made, not yet shown":
        crash_in(till.journal, "open_order", "after", made)
        with pytest.raises(Crash):
            e.start_reverse()
        text = made[0][1]  # the request exists; suppose a phone read it anyway
    else:
        text = e.start_reverse()["request_text"]
    paid = phone.pay(text)
    assert phone.account()["balance_fen"] == 700
    if crash == "proof accepted, sale not yet journaled":
        crash_in(till.journal, "append", "before")
    elif crash == "sale journaled, approval not yet shown":
        crash_in(till.journal, "append", "after")
    elif crash.startswith("cancelled"):
        crash_in(till.journal, "append", "before")
    elif crash.startswith("void journaled"):
        crash_in(till.journal, "append", "after")
    if crash.startswith(("proof", "sale")):
        with pytest.raises(Crash):
            e.key_proof_code(paid["proof_code"])
    elif crash.startswith(("cancelled", "void")):
        with pytest.raises(Crash):
            e.cancel()
    till = till.restart()
    assert till.journal.open_orders() == []  # nothing is left open after a start
    assert till.engine.screen()["state"] == State.IDLE
    till.sync()

    sold = [r for r in till.records() if r.kind == "sale" and r.x_value("order") == 1]
    balance = phone.account()["balance_fen"]
    if sold:  # the sale was journaled: it synced and is the one charge
        assert crash == "sale journaled, approval not yet shown"
        assert balance == 700
    else:  # no sale: the payment came back
        assert balance == 1000
        assert [r.kind for r in till.records()] == ["void"]
    assert live.admin("GET", "/v1/admin/alarms")["alarms"] == []
    reconcile.settle(live.ctx)  # nothing for the automatic refund to do: all is settled
    assert phone.account()["balance_fen"] == balance
    money_is_right(live)


# -- item 6: forward scan online -----------------------------------------------------------------
FORWARD_CRASHES = [
    "approved, answer lost",
    "answer in, sale not yet journaled",
    "sale journaled, approval not yet shown",
]


@pytest.mark.parametrize("crash", FORWARD_CRASHES)
def test_a_code_approved_online_and_killed_at_any_step_charges_once(
    live: Live, tmp_path: Path, crash: str
) -> None:
    phone = Phone(live, tmp_path, 2, topup=5000)
    other = Phone(live, tmp_path, 3, topup=5000)
    till = Till.enroll(live, tmp_path / "pos", "fwd")
    till.sync()
    text = phone.code()
    e = till.engine
    e.key_amount(600)
    if crash == "approved, answer lost":
        till.lose = "/v1/pos/authorize"
    elif crash == "answer in, sale not yet journaled":
        crash_in(till.journal, "append", "before")
    else:
        crash_in(till.journal, "append", "after")
    with pytest.raises(Crash):
        e.on_code(text)
    till = till.restart()
    # the holder, told nothing, pays with the same code at another till that is offline
    elsewhere = HandTerminal.enroll(live, "elsewhere", clock=live.ctx.clock)
    serial, counter = _ids(text)
    rec = elsewhere.record(
        phone.id,
        600,
        method="qr-forward",
        cred=f"qr:{serial}:{counter}",
        x={"code": text},
        off=True,
    )
    # the restarted till sells on (another holder) under whatever number comes next
    till.engine.key_amount(250)
    till.engine.on_code(other.code())
    assert till.engine.screen()["state"] == State.APPROVED
    first = elsewhere.push([rec])
    till.sync()

    journaled = [r for r in till.records() if r.acct == phone.id]
    alarms = [a["kind"] for a in live.admin("GET", "/v1/admin/alarms")["alarms"]]
    shown = phone.account()
    assert shown["status"] == "normal"  # never frozen for it (R12, item 16)
    assert shown["balance_fen"] == 5000 - 600  # one charge, whoever journaled the code
    if journaled:  # the code was journaled twice: a real double spend, found at sync
        assert crash == "sale journaled, approval not yet shown"
        assert first["alarms"] == [] and alarms == ["double_spend"]
    else:
        assert alarms == [] and shown["flags"] == []
    assert other.account()["balance_fen"] == 5000 - 250
    money_is_right(live)


def _ids(text: str) -> tuple[int, int]:
    c = codes.parse_code(codes.unpack_text(text), (codes.Kind.PAY,))
    return c.serial, c.counter
