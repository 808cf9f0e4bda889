"""Money conservation over random sequences of operations (docs/architecture.md; hypothesis).

Why in-process: hypothesis needs dozens of examples of dozens of steps each, every one on a
fresh database; through HTTP to a server process that is minutes, not seconds.  The test calls
the same service functions the API routes call (``sync.server.accounts``, ``authorize``,
``ingest``) on a temporary database (SQLite; and PostgreSQL below), with a hand-built terminal that seals real signed,
chained records.  The HTTP layer itself is covered by the loopback tests.

After every step: ``ledger.check`` holds (every balance equals its transfers, the sum is zero),
the card holders' money (wallets and transition balances) equals top-ups minus applied sales,
and each account's wallet, transition balance (R7) and status (R2, R10, R12) equal a model's.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from sync import paygate
from sync.clock import CampusDays, ManualClock
from sync.crypto import SigningKey
from sync.errors import StoreConflict
from sync.paygate import Notification
from sync.records import to_json
from sync.server import accounts, authorize, ledger, merchants, policy, topups
from sync.server.errors import Conflict
from tests.helpers import id_card
from tests.inproc import NOON_MS, InProcTerminal, make_context

TRANSITIONS = {  # R10, R12: action -> (allowed from, to)
    "report-loss": ({"normal"}, "lost"),
    "unlock": ({"lost"}, "normal"),
    "freeze": ({"normal", "lost"}, "frozen"),
    "unfreeze": ({"frozen"}, "normal"),
}


@dataclass
class Holder:
    id: int
    number: str
    password: str
    wallet: int = 0
    transition: int = 0
    status: str = "normal"
    overdrawn: bool = False
    lost_before_freeze: bool = False  # R10/R12: unfreezing a frozen lost card leaves it lost
    cards: list[str] = field(default_factory=list)


@dataclass
class Sealed:
    seq: int
    wire: dict[str, str]
    acct: int
    amt: int
    method: str
    online_at: int | None  # when the server approved it (its hold), None for offline sales
    kind: str = "sale"
    ts: int = 0
    sale_seq: int = 0  # a refund at the till: the sale it refunds


class Conservation(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="ykt-conservation-"))
        self.ctx = make_context(self.dir)
        clock = self.ctx.clock
        assert isinstance(clock, ManualClock)
        self.clock = clock
        self.term = InProcTerminal(self.ctx)
        # refunds at the till need a supervisor of the terminal's merchant (DEFAULT)
        merchants.add_operator(self.ctx, "DEFAULT", "SUP", "主管", "supervisor", "135790")
        self.till_refunded: set[int] = set()
        self.holders: list[Holder] = []
        self.sealed: list[Sealed] = []
        self.acked = 0
        self.topups = 0
        self.sales = 0
        self.bank_on = False
        self.gates: dict[str, SigningKey] = {}
        self.txns = 0

    def teardown(self) -> None:
        self.ctx.db.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def pick(self, i: int) -> Holder:
        return self.holders[i % len(self.holders)]

    # -- accounts -----------------------------------------------------------------------------
    @initialize(money=st.lists(st.integers(0, 20_000), min_size=1, max_size=3))
    def start(self, money: list[int]) -> None:
        """A few card holders with a card and some money, so sales happen from the start."""
        for fen in money:
            self.add_account("student")
            self.issue_card(len(self.holders) - 1)
            if fen:
                self.topup(len(self.holders) - 1, fen, "cash")

    @precondition(lambda self: len(self.holders) < 5)
    @rule(kind=st.sampled_from(["temporary", "student", "staff", "consumer"]))
    def add_account(self, kind: str) -> None:
        n = len(self.holders) + 1
        out = accounts.add_account(
            self.ctx, number=f"C{n}", name=f"持卡人{n}", type=kind, id_card=id_card(n)
        )
        pw = id_card(n)[-7:-1] if id_card(n).endswith("X") else id_card(n)[-6:]
        self.holders.append(Holder(out["id"], f"C{n}", pw))

    @precondition(lambda self: self.holders)
    @rule(i=st.integers(0, 9))
    def issue_card(self, i: int) -> None:
        h = self.pick(i)
        h.cards.append(accounts.issue_card(self.ctx, h.number)["card_no"])  # R11

    @precondition(lambda self: self.holders)
    @rule(
        i=st.integers(0, 9),
        amount=st.integers(1, 20_000),
        channel=st.sampled_from(["app", "wechat", "alipay", "bank", "cash"]),
    )
    def topup(self, i: int, amount: int, channel: str) -> None:
        """R7: cash at the desk; the other channels only as an order paid at the channel's
        provider, credited by its signed notification (delivered twice: credited once)."""
        h = self.pick(i)
        if channel == "bank" and not self.bank_on:  # R7: off by default
            try:
                self.provider_topup(h, amount, channel)
            except Conflict as exc:
                assert exc.code == "channel_off"
                return
            raise AssertionError("a top-up through a switched-off channel went through")
        if channel == "cash":
            assert accounts.topup(self.ctx, h.number, amount, channel)["applied"]
        else:
            self.provider_topup(h, amount, channel)
        if channel == "alipay":  # R7: lands in the transition balance
            h.transition += amount
        else:
            h.wallet += amount
        self.topups += amount

    def provider_topup(self, h: Holder, amount: int, channel: str) -> None:
        if channel not in self.gates:
            self.gates[channel] = SigningKey.generate()
            topups.register(
                self.ctx,
                channel,
                "http://127.0.0.1:9",
                self.gates[channel].public.to_b64(),
                "http://127.0.0.1:9/notify",
                "test",
            )
        acct = accounts.get_account(self.ctx, h.number)
        o = topups.create_order(self.ctx, acct, amount, channel, h.password, None)["pay"]["order"]
        self.txns += 1
        body = paygate.encode(
            Notification(
                id=f"N{self.txns:08d}",
                event="payment.succeeded",
                order_id=o["order_id"],
                txn_id=f"X{self.txns:08d}",
                channel=o["channel"],
                amount_fen=amount,
                currency=o["currency"],
                paid_ms=self.ctx.now_ms(),
                attach=o["attach"],
            )
        )
        for credited in (True, False):  # the provider redelivers: credited once
            headers = paygate.sign(self.gates[channel], body, self.ctx.now_ms())
            assert topups.notify(self.ctx, channel, body, headers)["credited"] is credited

    @rule(on=st.booleans())
    def switch_bank(self, on: bool) -> None:
        policy.set_policy(self.ctx, {"channels": {"bank": on}})
        self.bank_on = on

    @precondition(lambda self: self.holders)
    @rule(i=st.integers(0, 9), action=st.sampled_from(sorted(TRANSITIONS)))
    def change_status(self, i: int, action: str) -> None:
        h = self.pick(i)
        allowed, target = TRANSITIONS[action]
        if h.status not in allowed:
            try:
                accounts.change_status(self.ctx, h.number, action)
            except Conflict as exc:
                assert exc.code == "bad_status"
                return
            raise AssertionError(f"{action} went through from {h.status}")
        if action == "freeze":
            h.lost_before_freeze = h.status == "lost"
        elif action == "unfreeze" and h.lost_before_freeze:
            target, h.lost_before_freeze = "lost", False
        assert accounts.change_status(self.ctx, h.number, action)["status"] == target
        h.status = target

    @rule(minutes=st.sampled_from([1, 11, 60 * 13]))
    def time_passes(self, minutes: int) -> None:
        self.clock.advance(minutes * 60_000)

    # -- sales ---------------------------------------------------------------------------------
    def held(self, acct: int) -> int:
        """Holds last until the terminal's journal has synced past them, however long that
        takes (docs/security.md): no clock in here."""
        return sum(
            s.amt
            for s in self.sealed
            if s.seq > self.acked and s.acct == acct and s.online_at is not None
        )

    @precondition(lambda self: any(h.cards for h in self.holders))
    @rule(
        i=st.integers(0, 9),
        amount=st.integers(1, 6000),
        old_card=st.sampled_from([False, False, False, True]),
        pin=st.sampled_from(["right", "right", "wrong", "none"]),
    )
    def sell_online(self, i: int, amount: int, old_card: bool, pin: str) -> None:
        h = next(h for h in self.holders[i % len(self.holders) :] + self.holders if h.cards)
        card = h.cards[0] if old_card else h.cards[-1]
        seq = len(self.sealed) + 1
        req: dict[str, Any] = {"seq": seq, "card_no": card, "amount_fen": amount, "uid": None}
        req["method"], req["pin"] = "card", None
        out = to_json(authorize.authorize(self.ctx, self.term.row, req))
        if out["code"] == "needs_pin" and pin != "none":
            req["pin"] = h.password if pin == "right" else "000000"
            out = to_json(authorize.authorize(self.ctx, self.term.row, req))
        event(f"authorize: {out['code']}")
        available = h.wallet + h.transition - self.held(h.id)
        if card != h.cards[-1] or h.status != "normal":  # R11, R2
            assert not out["approved"] and out["code"] == "declined", out
            return
        if out["code"] == "insufficient":
            assert amount > available, (out, available)
            return
        if not out["approved"]:
            assert out["code"] in {"needs_pin", "wrong_pin", "pin_locked"}, out
            return
        assert amount <= available, (out, available)  # holds: never more than the balance
        assert out["balance_fen"] == available - amount
        wire = self.term.record(h.id, amount, off=False, pin=out["pin"], auth=out["auth_id"])
        now = self.clock.now_ms()
        self.sealed.append(Sealed(seq, wire, h.id, amount, "card", now, ts=now))

    @precondition(lambda self: self.holders)
    @rule(
        i=st.integers(0, 9),
        amount=st.integers(1, 6000),
        # qr-reverse records move no money (the phone paid online, docs/codes.md): they are
        # covered in tests/test_phone_codes_e2e.py
        method=st.sampled_from(["card", "card", "qr-forward"]),
    )
    def sell_offline(self, i: int, amount: int, method: str) -> None:
        """Offline sales are applied at sync even when they overdraw (docs/architecture.md)."""
        h = self.pick(i)
        wire = self.term.record(h.id, amount, method=method, off=True)
        self.sealed.append(
            Sealed(len(self.sealed) + 1, wire, h.id, amount, method, None, ts=self.clock.now_ms())
        )

    @precondition(lambda self: any(s.kind == "sale" for s in self.sealed))
    @rule(j=st.integers(0, 99), percent=st.integers(1, 120))
    def refund_at_till(self, j: int, percent: int) -> None:
        """A refund at the till of one of the terminal's sales (sync/server/posrefund.py): at
        most the sale, once, on the sale's campus day; otherwise refused at ingest."""
        sales = [s for s in self.sealed if s.kind == "sale"]
        sale = sales[j % len(sales)]
        amount = max(1, sale.amt * percent // 100)
        wire = self.term.record(
            sale.acct,
            amount,
            kind="refund",
            method=sale.method,
            x={"refund": {"seq": sale.seq, "sup": "SUP"}},
        )
        self.sealed.append(
            Sealed(
                len(self.sealed) + 1,
                wire,
                sale.acct,
                amount,
                sale.method,
                None,
                kind="refund",
                ts=self.clock.now_ms(),
                sale_seq=sale.seq,
            )
        )

    # -- sync ---------------------------------------------------------------------------------
    def pushed(self, out: dict[str, Any]) -> None:
        assert out["ack"] >= self.acked
        refused = sum(not self.apply(s) for s in self.sealed[self.acked : out["ack"]])
        assert [a["kind"] for a in out["alarms"]] == ["refund_refused"] * refused, out
        self.acked = out["ack"]

    def apply(self, s: Sealed) -> bool:
        """The model's effect of a record; False for a refund the server must refuse."""
        h = next(h for h in self.holders if h.id == s.acct)
        if s.kind == "refund":
            sale = self.sealed[s.sale_seq - 1]
            day = CampusDays(self.ctx.config.tz)
            if s.sale_seq in self.till_refunded or s.amt > sale.amt or day(s.ts) != day(sale.ts):
                event("a refund at the till refused")
                return False
            self.till_refunded.add(s.sale_seq)
            h.wallet += s.amt
            self.sales -= s.amt
            event("a refund at the till")
            return True
        if s.method == "card":  # R7: the transition balance moves in at a card transaction
            h.wallet += h.transition
            h.transition = 0
        h.wallet -= s.amt
        self.sales += s.amt
        if h.wallet < 0 and not h.overdrawn:  # R12: flagged once, frozen when it was normal
            event("an offline sale overdrew an account")
            h.overdrawn = True
            if h.status == "normal":
                h.status = "frozen"
        return True

    @precondition(lambda self: self.sealed)
    @rule(how=st.sampled_from(["all", "out of order", "duplicates"]), data=st.data())
    def push(self, how: str, data: st.DataObject) -> None:
        unsent = self.sealed[self.acked :]
        if how == "out of order" and len(unsent) > 1:
            # a later part first (held behind the gap), then the rest, itself reversed
            cut = data.draw(st.integers(1, len(unsent) - 1))
            out = self.term.push([s.wire for s in unsent[cut:]])
            assert out["ack"] == self.acked and out["pending"] == len(unsent) - cut
            self.pushed(self.term.push([s.wire for s in reversed(unsent[:cut])]))
            assert self.acked == len(self.sealed)
        elif how == "duplicates" and self.acked:
            out = self.term.push([s.wire for s in self.sealed[: self.acked]])
            assert out["duplicates"] == self.acked and out["applied"] == 0
            self.pushed(out)
        else:
            self.pushed(self.term.push([s.wire for s in unsent]))
            assert self.acked == len(self.sealed)

    # -- invariants -----------------------------------------------------------------------------
    @invariant()
    def money_is_conserved(self) -> None:
        check = ledger.check(self.ctx.db)
        assert check["ok"], check
        holders = self.ctx.db.scalar(
            "SELECT COALESCE(SUM(balance), 0) FROM ledger_accounts WHERE kind IN "
            "('wallet', 'transition')"
        )
        assert holders == self.topups - self.sales
        merchant = self.ctx.db.scalar(
            "SELECT COALESCE(SUM(balance), 0) FROM ledger_accounts WHERE kind = 'merchant'"
        )
        assert merchant == self.sales

    @invariant()
    def accounts_match_the_model(self) -> None:
        for h in self.holders:
            a = accounts.show_account(self.ctx, h.number, history=False)
            assert (a["balance_fen"], a["transition_fen"]) == (h.wallet, h.transition), h
            assert a["status"] == h.status, h
            assert ("overdrawn" in a["flags"]) == h.overdrawn


TestConservation = Conservation.TestCase
TestConservation.settings = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.postgres
def test_money_is_conserved_on_postgresql(db_kind: str) -> None:
    """The same machine on PostgreSQL (tests/dbs.py): fewer examples, each a new database."""
    assert db_kind == "postgres"
    run_state_machine_as_test(
        Conservation,
        settings=settings(
            max_examples=25,
            stateful_step_count=50,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


def test_a_transfer_naming_no_ledger_account_applies_nothing(tmp_path: Path, db_kind: str) -> None:
    """The ledger checks that every account a batch of transfers names exists (on PostgreSQL in
    place of the foreign keys, migration 0014): one unknown account fails the whole batch, a
    net move of zero included, and no balance or transfer is left behind."""
    ctx = make_context(tmp_path / "s")
    ids = [
        int(
            accounts.add_account(
                ctx, number=f"C{i}", name="甲", type="student", id_card=id_card(i)
            )["id"]
        )
        for i in (1, 2)
    ]
    src, w = ledger.wallet(ids[0]), ledger.wallet(ids[1])
    good = ledger.Transfer("t-good", NOON_MS, src, w, 500, "transfer", ids[1])
    with ctx.db.tx() as tx:
        ledger.apply_many(tx, [good])
    for bad in (
        [ledger.Transfer("t-1", NOON_MS, w, "w:999999", 100, "sale", ids[1])],
        [  # to and back: a net move of zero for both ends
            ledger.Transfer("t-2", NOON_MS, w, "nowhere", 100, "sale", None),
            ledger.Transfer("t-3", NOON_MS, "nowhere", w, 100, "sale", None),
        ],
    ):
        with pytest.raises(ledger.UnknownLedgerAccount), ctx.db.tx() as tx:
            ledger.apply_many(tx, bad)
        # the accounts a caller read are not taken on trust for one it did not read
        with pytest.raises(ledger.UnknownLedgerAccount), ctx.db.tx() as tx:
            ledger.apply_many(tx, bad, known={w})
    assert ledger.check(ctx.db)["ok"]
    assert ctx.db.scalar("SELECT COUNT(*) FROM transfers") == 1
    assert ledger.balances(ctx.db, ids[1]) == (500, 0)


def test_a_push_whose_writes_fail_with_its_commit_leaves_nothing(
    tmp_path: Path, db_kind: str
) -> None:
    """A POS's push of a sale sends its transfers, its record, its account's update and its
    head with the commit (PostgreSQL: ``ledger.apply_many`` with the ledger accounts read
    first): one of them refused there (a transfer id already taken) fails all of it, as it
    did a round trip earlier: no money moved, no record, the head and the hold where they
    were, the ledger whole."""
    ctx = make_context(tmp_path / "s")
    aid = int(
        accounts.add_account(ctx, number="C9", name="甲", type="student", id_card=id_card(9))["id"]
    )
    accounts.topup(ctx, "C9", 5000, "cash", None, "desk")
    pos = InProcTerminal(ctx, "commit-fails")
    card = accounts.issue_card(ctx, "C9", "04A1B2C3D4E5C9")
    req = {"seq": 1, "card_no": card["card_no"], "amount_fen": 300, "method": "card"}
    assert authorize.authorize(ctx, pos.row, req).approved
    merchant = ledger.merchant_of(ctx.db, pos.id)
    taken = ledger.Transfer(
        f"sale:{pos.id}:1", NOON_MS, ledger.wallet(aid), merchant, 1, "sale", aid
    )
    with ctx.db.tx() as tx:  # the id the sale at seq 1 takes
        ledger.apply_many(tx, [taken])
    version = ctx.db.scalar("SELECT version FROM accounts WHERE id = ?", (aid,))
    with pytest.raises(StoreConflict):
        pos.push([pos.record(aid, 300)])
    assert ledger.balances(ctx.db, aid) == (4999, 0)
    assert ctx.db.scalar("SELECT COUNT(*) FROM records") == 0
    assert ctx.db.scalar("SELECT head_seq FROM terminals WHERE id = ?", (pos.id,)) == 0
    assert ctx.db.scalar("SELECT COUNT(*) FROM holds WHERE terminal_id = ?", (pos.id,)) == 1
    assert ctx.db.scalar("SELECT version FROM accounts WHERE id = ?", (aid,)) == version
    assert ledger.check(ctx.db)["ok"]
    ctx.db.close()
