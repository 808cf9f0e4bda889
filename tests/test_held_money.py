"""Held money, refunds and reversals (issue 10, items 2, 3, 5, 6, 10, 16; docs/security.md
"Money: held money, refunds, reversals"): the real server app on loopback with a manual
clock (tests/live.py), terminals built by hand and simulated phones.

- 2: cancellation and refunds never pay out or take back money held for sales approved online
  and not yet synced, nor money paid by phone for a reverse-scan sale not yet reconciled;
- 3: a sale reversed at sync (double-spent code) cannot be refunded again;
- 5: a hold lasts until the terminal's journal has synced past it, whatever the clock says;
- 6: a code claimed by an online approval that was never journaled is no double spend;
- 10: over the daily limit an online payment code needs the server's grant, not the phone's
  flag;
- 16: a double spend (a screenshot replayed at an offline till looks the same) never freezes
  the account.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sim import wallet, wallet_codes
from sim.errors import SimError
from sync import codes
from sync.clock import ManualClock
from sync.crypto import SigningKey
from sync.server import accounts, ledger
from tests.handterm import HandTerminal
from tests.inproc import NOON_MS
from tests.live import Live, open_live

MINUTE_MS = 60_000


@pytest.fixture
def live(tmp_path: Path, db_kind: str) -> Iterator[Live]:
    server = open_live(tmp_path / "server", clock=ManualClock(NOON_MS))
    yield server
    server.stop()


def clock(live: Live) -> ManualClock:
    c = live.ctx.clock
    assert isinstance(c, ManualClock)
    return c


class Holder:
    """A card holder with a card and a signed-in phone."""

    def __init__(self, live: Live, tmp: Path, n: int, topup: int) -> None:
        self.live = live
        self.number = f"H{n}"
        card = live.add_account(self.number, n, topup_fen=topup)
        self.card_no, self.uid, self.password = card["card_no"], card["uid"], card["password"]
        self.path = tmp / f"wallet{n}.json"
        w = wallet.login(live.url, self.number, self.password)
        w.save(self.path)
        self.id = int(w.account["id"])

    def code(self, **kw: Any) -> str:
        w = wallet.Wallet.load(self.path)
        return str(
            wallet_codes.make_code(w, self.path, codes.Kind.PAY, clock=clock(self.live), **kw)[
                "text"
            ]
        )

    def scan(self, text: str, **kw: Any) -> dict[str, Any]:
        return wallet_codes.scan(
            wallet.Wallet.load(self.path), text, path=self.path, clock=clock(self.live), **kw
        )

    def forged(self, counter: int, confirmed: bool = True) -> str:
        """A code signed with the phone's own key that the wallet app would never make: the
        phone sets the "confirmed" flag itself (a tampered app)."""
        st = wallet.Wallet.load(self.path).extra["codes"]
        raw = codes.make_code(
            SigningKey.from_seed(base64.b64decode(st["phone_key"])),
            codes.Kind.PAY,
            int(st["campus_tag"]),
            int(st["serial"]),
            clock(self.live).now_ms() // 1000,
            counter,
            confirmed=confirmed,
        )
        return codes.to_text(raw)

    def show(self) -> dict[str, Any]:
        return accounts.show_account(self.live.ctx, self.number)

    @property
    def balance(self) -> int:
        return int(self.show()["balance_fen"])


def terminal(live: Live, name: str) -> HandTerminal:
    return HandTerminal.enroll(live, name, clock=clock(live))


def refused(live: Live, method: str, path: str, body: Any = None) -> dict[str, Any]:
    """The error of a desk request that must be refused (409)."""
    r = live.call(method, path, body, live.token)
    assert r.status_code == 409, r.text
    return dict(r.json()["error"])


def code_ids(text: str) -> tuple[int, int]:
    c = codes.parse_code(codes.unpack_text(text), (codes.Kind.PAY,))
    return c.serial, c.counter


def code_sale(term: HandTerminal, h: Holder, amt: int, text: str, **kw: Any) -> dict[str, str]:
    """The terminal's next record: a forward-scan sale of ``text`` (offline unless told)."""
    serial, counter = code_ids(text)
    fields: dict[str, Any] = {
        "method": "qr-forward",
        "cred": f"qr:{serial}:{counter}",
        "x": {"code": text},
        "off": True,
    }
    fields.update(kw)
    return term.record(h.id, amt, **fields)


def authorize_card(term: HandTerminal, h: Holder, seq: int, amount: int) -> dict[str, Any]:
    return term.authorize(seq, h.card_no, amount, uid=h.uid)


def journal_approved(
    term: HandTerminal, h: Holder, amt: int, answer: dict[str, Any]
) -> dict[str, str]:
    assert answer["approved"], answer
    return term.record(h.id, amt, off=False, auth=answer["auth_id"], pin=answer["pin"])


def request_text(term: HandTerminal, amount: int, order: int, live: Live) -> str:
    raw = codes.make_request(
        term.key,
        codes.campus_tag("ynart"),
        codes.terminal_number(term.terminal_id),
        order,
        amount,
        clock(live).now_ms() // 1000,
        b"\x07" * 8,
    )
    return codes.to_text(raw, numeric=True)


def reverse_record(
    term: HandTerminal, kind: str, order: int, amt: int, acct: int = 0
) -> dict[str, str]:
    """A reverse-scan record: the sale of ``order`` (the proof keyed as a code) or its void."""
    return term.record(
        acct, amt, kind=kind, method="qr-reverse", cred=f"qr-reverse:{order}", x={"order": order}
    )


def ledger_ok(live: Live) -> None:
    assert ledger.check(live.ctx.db)["ok"]
    negative = live.ctx.db.all(
        "SELECT id, balance FROM ledger_accounts WHERE kind = 'merchant' AND balance < 0"
    )
    assert negative == [], "a merchant paid out more than it took"


# -- 5: holds last until the journal has synced past them ---------------------------------------
def test_a_hold_outlives_a_long_outage_and_the_same_money_is_not_approved_twice(
    live: Live, tmp_path: Path
) -> None:
    h = Holder(live, tmp_path, 1, topup=1000)
    t1, t2 = terminal(live, "t1"), terminal(live, "t2")
    first = authorize_card(t1, h, 1, 800)
    wire = journal_approved(t1, h, 800, first)  # journaled, but t1 goes offline before syncing
    clock(live).advance(11 * MINUTE_MS)  # the old 600 s hold would have expired by now
    again = authorize_card(t2, h, 1, 800)
    assert (again["approved"], again["code"]) == (False, "insufficient"), again
    with pytest.raises(SimError, match="insufficient"):  # a phone payment sees the hold too
        h.scan(request_text(t2, 500, 1, live))
    assert t1.push([wire])["ack"] == 1  # t1 is back: the sale syncs, the hold goes
    shown = h.show()
    assert (shown["balance_fen"], shown["status"], shown["flags"]) == (200, "normal", [])
    assert live.ctx.db.scalar("SELECT COUNT(*) FROM holds") == 0
    assert authorize_card(t2, h, 1, 200)["approved"]
    ledger_ok(live)


def test_a_hold_goes_when_its_number_is_reused_or_synced_with_another_record(
    live: Live, tmp_path: Path
) -> None:
    h = Holder(live, tmp_path, 2, topup=1000)
    other = Holder(live, tmp_path, 3, topup=1000)
    t1, t2 = terminal(live, "t1"), terminal(live, "t2")
    assert authorize_card(t1, h, 1, 900)["approved"]  # t1 crashes before journaling
    assert authorize_card(t1, other, 1, 100)["approved"]  # and reuses number 1 after restart
    assert authorize_card(t2, h, 1, 900)["approved"]  # h's abandoned hold went with it
    assert authorize_card(t1, h, 2, 100)["approved"]  # 900 + 100 held of 1000
    wire = [t1.record(other.id, 100, off=False)]  # number 1 is other's sale
    wire.append(t1.record(other.id, 50))  # number 2 became an offline sale of other's
    assert t1.push(wire)["ack"] == 2
    holds = live.ctx.db.all("SELECT terminal_id, seq, amount FROM holds")
    assert [tuple(r) for r in holds] == [(t2.terminal_id, 1, 900)]
    ledger_ok(live)


def test_revoking_a_terminal_releases_its_holds(live: Live, tmp_path: Path) -> None:
    h = Holder(live, tmp_path, 4, topup=1000)
    t1, t2 = terminal(live, "t1"), terminal(live, "t2")
    assert authorize_card(t1, h, 1, 1000)["approved"]
    assert authorize_card(t2, h, 1, 100)["code"] == "insufficient"
    out = live.admin("POST", f"/v1/admin/terminals/{t1.terminal_id}/revoke")
    assert out["holds_released"] == 1  # its record can never arrive now
    assert authorize_card(t2, h, 1, 100)["approved"]


# -- 2: cancellation and refunds leave money in flight alone ------------------------------------
def test_cancellation_waits_for_held_money(live: Live, tmp_path: Path) -> None:
    h = Holder(live, tmp_path, 5, topup=1000)
    t1 = terminal(live, "t1")
    wire = journal_approved(t1, h, 800, authorize_card(t1, h, 1, 800))
    err = refused(live, "POST", f"/v1/admin/accounts/{h.number}/cancel")
    assert err["code"] == "held" and t1.terminal_id in err["message"], err
    assert (h.balance, h.show()["status"]) == (1000, "normal")  # nothing paid out
    assert t1.push([wire])["ack"] == 1
    out = live.admin("POST", f"/v1/admin/accounts/{h.number}/cancel")
    assert (out["paid_out_fen"], out["balance_fen"], out["status"]) == (200, 0, "cancelled")
    ledger_ok(live)


def test_a_topup_refund_never_takes_held_money(live: Live, tmp_path: Path) -> None:
    h = Holder(live, tmp_path, 6, topup=1000)
    t1 = terminal(live, "t1")
    wire = journal_approved(t1, h, 800, authorize_card(t1, h, 1, 800))
    topup = next(b for b in h.show()["bills"] if b["kind"] == "topup")
    body = {"transfer_id": topup["id"], "reason": "paid by mistake"}
    err = refused(live, "POST", "/v1/admin/refunds", body)
    assert err["code"] == "insufficient", err
    part = live.admin("POST", "/v1/admin/refunds", {**body, "amount_fen": 200})
    assert part["balance_fen"] == 800  # the 200 that was not held
    assert t1.push([wire])["ack"] == 1
    shown = h.show()
    assert (shown["balance_fen"], shown["status"], shown["flags"]) == (0, "normal", [])
    ledger_ok(live)


def test_cancellation_waits_for_a_reverse_scan_payment_in_flight(
    live: Live, tmp_path: Path
) -> None:
    h = Holder(live, tmp_path, 7, topup=1000)
    t1 = terminal(live, "t1")
    h.scan(request_text(t1, 300, 1, live))  # paid by phone; the terminal has not reported yet
    assert refused(live, "POST", f"/v1/admin/accounts/{h.number}/cancel")["code"] == "held"
    assert t1.push([reverse_record(t1, "void", 1, 300)])["ack"] == 1  # cancelled: refunded
    assert h.balance == 1000
    assert live.admin("POST", f"/v1/admin/accounts/{h.number}/cancel")["paid_out_fen"] == 1000
    ledger_ok(live)


# -- 3: a reversed sale is not refunded again ---------------------------------------------------
def test_a_refund_after_a_double_spend_reversal_pays_nothing_twice(
    live: Live, tmp_path: Path
) -> None:
    h = Holder(live, tmp_path, 8, topup=5000)
    t1, t2 = terminal(live, "t1"), terminal(live, "t2")
    text = h.code()
    assert t1.push([code_sale(t1, h, 700, text)])["ack"] == 1
    out = t2.push([code_sale(t2, h, 700, text)])
    assert [a["kind"] for a in out["alarms"]] == ["double_spend"]
    assert h.balance == 4300
    reversed_sale = f"sale:{t2.terminal_id}:1"
    err = refused(live, "POST", "/v1/admin/refunds", {"transfer_id": reversed_sale, "reason": "x"})
    assert err["code"] == "over_refund", err
    kept = live.admin(
        "POST", "/v1/admin/refunds", {"transfer_id": f"sale:{t1.terminal_id}:1", "reason": "cold"}
    )
    assert kept["balance_fen"] == 5000
    ledger_ok(live)


# -- 16: a double spend never freezes the account -----------------------------------------------
def test_a_screenshot_replayed_at_an_offline_till_does_not_freeze_the_victim(
    live: Live, tmp_path: Path
) -> None:
    victim = Holder(live, tmp_path, 9, topup=5000)
    mine, thief = terminal(live, "canteen"), terminal(live, "kiosk-shop")
    text = victim.code()  # shown at an offline till, photographed over the shoulder
    assert mine.push([code_sale(mine, victim, 800, text)])["ack"] == 1
    out = thief.push([code_sale(thief, victim, 2000, text)])  # the screenshot, replayed
    assert [a["kind"] for a in out["alarms"]] == ["double_spend"]  # the desk hears of it
    shown = victim.show()
    assert shown["balance_fen"] == 4200  # the second charge is reversed
    assert shown["status"] == "normal" and shown["flags"] == ["double_spend"]
    assert authorize_card(mine, victim, 2, 100)["approved"]  # the victim pays on
    ledger_ok(live)


def test_an_overdraft_on_an_account_whose_code_was_replayed_does_not_freeze_it(
    live: Live, tmp_path: Path
) -> None:
    victim = Holder(live, tmp_path, 10, topup=1000)
    a, b, c = terminal(live, "a"), terminal(live, "b"), terminal(live, "c")
    text = victim.code()
    assert a.push([code_sale(a, victim, 300, text)])["ack"] == 1
    assert b.push([code_sale(b, victim, 900, text)])["alarms"][0]["kind"] == "double_spend"
    assert c.push([c.record(victim.id, 900)])["ack"] == 1  # an offline card sale overdraws
    shown = victim.show()
    assert shown["balance_fen"] == -200 and shown["status"] == "normal"
    assert shown["flags"] == ["double_spend", "overdrawn"]
    ledger_ok(live)


# -- 6: a code claimed by a sale that was never journaled ---------------------------------------
def test_a_code_approved_online_but_never_journaled_is_no_double_spend(
    live: Live, tmp_path: Path
) -> None:
    h = Holder(live, tmp_path, 11, topup=5000)
    other = Holder(live, tmp_path, 12, topup=5000)
    t1, t2 = terminal(live, "t1"), terminal(live, "t2")
    text = h.code()
    ok = t1.authorize_body({"seq": 1, "amount_fen": 600, "method": "qr-forward", "qr": text})
    assert ok["approved"]  # ... and t1 crashed before journaling: number 1 is reused offline
    reused = t1.record(other.id, 100)
    out = t2.push([code_sale(t2, h, 600, text)])  # the holder paid again at another till
    assert out["alarms"] == [] and h.balance == 4400
    assert t1.push([reused])["alarms"] == []
    shown = h.show()
    assert (shown["balance_fen"], shown["status"], shown["flags"]) == (4400, "normal", [])
    ledger_ok(live)


def test_a_code_approved_online_and_journaled_late_is_still_one_charge(
    live: Live, tmp_path: Path
) -> None:
    h = Holder(live, tmp_path, 13, topup=5000)
    t1, t2 = terminal(live, "t1"), terminal(live, "t2")
    text = h.code()
    ok = t1.authorize_body({"seq": 1, "amount_fen": 600, "method": "qr-forward", "qr": text})
    late = code_sale(t1, h, 600, text, off=False, auth=ok["auth_id"])  # journaled, not synced
    assert t2.push([code_sale(t2, h, 600, text)])["alarms"] == []  # t2's record came first
    out = t1.push([late])
    assert [a["kind"] for a in out["alarms"]] == ["double_spend"]  # a real double spend
    shown = h.show()
    assert (shown["balance_fen"], shown["status"]) == (4400, "normal")
    ledger_ok(live)


def test_reusing_a_number_releases_the_code_it_claimed(live: Live, tmp_path: Path) -> None:
    h = Holder(live, tmp_path, 14, topup=5000)
    t1, t2 = terminal(live, "t1"), terminal(live, "t2")
    text = h.code()
    assert t1.authorize_body({"seq": 1, "amount_fen": 600, "method": "qr-forward", "qr": text})[
        "approved"
    ]
    assert authorize_card(t1, h, 1, 50)["approved"]  # number 1 asked again: the code is free
    again = t2.authorize_body({"seq": 1, "amount_fen": 600, "method": "qr-forward", "qr": text})
    assert again["approved"], again


# -- 10: the server's own grant over the daily limit --------------------------------------------
def test_over_the_limit_a_phone_code_needs_the_servers_grant(live: Live, tmp_path: Path) -> None:
    h = Holder(live, tmp_path, 15, topup=20000)
    t1 = terminal(live, "t1")
    body = {"seq": 1, "amount_fen": 6000, "method": "qr-forward", "qr": h.forged(900)}
    out = t1.authorize_body(body)  # the phone says it confirmed; the server never saw it
    assert (out["approved"], out["code"]) == (False, "needs_confirm"), out
    good = h.code(confirm_password=h.password)  # the server checked the password for this code
    out = t1.authorize_body({**body, "qr": good})
    assert out["approved"] and out["pin"] == "ok", out
    assert live.ctx.db.scalar("SELECT COUNT(*) FROM confirmations WHERE used = 0") == 0


def test_an_offline_sale_with_an_unconfirmed_flag_raises_an_alarm(
    live: Live, tmp_path: Path
) -> None:
    h = Holder(live, tmp_path, 16, topup=20000)
    t1 = terminal(live, "t1")
    good = h.code(confirm_password=h.password)
    assert t1.push([t1.record(h.id, 700)])["alarms"] == []
    ok = t1.push([code_sale(t1, h, 6000, good, pin="ok")])
    assert ok["alarms"] == [] and h.show()["spent_today_fen"] == 6000  # R6: from zero again
    out = t1.push([code_sale(t1, h, 100, h.forged(900), pin="ok")])
    assert [a["kind"] for a in out["alarms"]] == ["unconfirmed_code"]
    assert h.show()["spent_today_fen"] == 6100  # no reset on the phone's word alone


def test_a_confirmed_code_stays_confirmed_when_its_online_approval_was_abandoned(
    live: Live, tmp_path: Path
) -> None:
    h = Holder(live, tmp_path, 17, topup=20000)
    other = Holder(live, tmp_path, 18, topup=5000)
    t1, t2 = terminal(live, "t1"), terminal(live, "t2")
    good = h.code(confirm_password=h.password)
    body = {"seq": 1, "amount_fen": 6000, "method": "qr-forward", "qr": good}
    out = t1.authorize_body(body)  # the approval spends the server's grant for this code ...
    assert out["approved"] and out["pin"] == "ok", out
    reused = t1.record(other.id, 100)  # ... and t1 crashed before journaling: 1 is reused
    out = t2.push([code_sale(t2, h, 6000, good, pin="ok")])  # the holder paid at an offline till
    assert out["alarms"] == [], out  # the holder did confirm this very code (R6)
    assert h.show()["spent_today_fen"] == 6000  # the confirmation reset the tracked amount
    assert t1.push([reused])["alarms"] == []
    shown = h.show()
    assert (shown["balance_fen"], shown["status"], shown["flags"]) == (14000, "normal", [])
    ledger_ok(live)


# -- 4: every reverse-scan payment meets its record or is refunded ------------------------------
def test_a_payment_for_a_request_the_terminal_voided_is_refunded(
    live: Live, tmp_path: Path
) -> None:
    h = Holder(live, tmp_path, 17, topup=1000)
    t1 = terminal(live, "t1")
    text = request_text(t1, 300, 1, live)
    h.scan(text)  # the phone paid; the cashier cancelled (or the terminal restarted)
    assert h.balance == 700
    out = t1.push([reverse_record(t1, "void", 1, 300)])
    assert (out["ack"], out["alarms"]) == (1, [])
    assert h.balance == 1000
    assert sorted(b["kind"] for b in h.show()["bills"]) == ["refund", "sale", "topup"]
    with pytest.raises(SimError, match="request_closed"):  # paying it again
        h.scan(text)
    assert t1.push([reverse_record(t1, "void", 2, 400)])["ack"] == 2  # voided before any payment
    with pytest.raises(SimError, match="request_closed"):
        h.scan(request_text(t1, 400, 2, live))
    assert h.balance == 1000
    ledger_ok(live)


def test_a_payment_whose_record_never_comes_is_refunded_after_the_stated_time(
    live: Live, tmp_path: Path
) -> None:
    from sync.server import reconcile

    h = Holder(live, tmp_path, 18, topup=1000)
    t1 = terminal(live, "t1")
    paid = h.scan(request_text(t1, 300, 1, live))
    reconcile.settle(live.ctx)
    assert h.balance == 700  # not yet: the terminal may be offline with the record
    rsale = f"rsale:{t1.terminal_id}:1"
    err = refused(live, "POST", "/v1/admin/refunds", {"transfer_id": rsale, "reason": "x"})
    assert err["code"] == "in_flight", err
    clock(live).advance(live.ctx.policy()["reverse_refund_s"] * 1000)
    reconcile.settle(live.ctx)
    assert h.balance == 1000
    assert reconcile.settle(live.ctx) == 0  # once
    # the record comes after all (a terminal offline for more than a day): the sale stands
    sale = t1.record(h.id, 300, method="qr-reverse", cred="qr-reverse:1",
                     x={"order": 1, "payment": paid["payment_id"]})  # fmt: skip
    out = t1.push([sale])
    assert [a["kind"] for a in out["alarms"]] == ["reverse_late"]
    assert h.balance == 700
    assert sorted(b["amount_fen"] for b in h.show()["bills"]) == [-300, -300, 300, 1000]
    ledger_ok(live)


def test_a_linked_payment_is_never_refunded_and_revocation_refunds_the_rest(
    live: Live, tmp_path: Path
) -> None:
    from sync.server import reconcile

    h = Holder(live, tmp_path, 19, topup=1000)
    t1, t2 = terminal(live, "t1"), terminal(live, "t2")
    h.scan(request_text(t1, 300, 1, live))
    assert t1.push([reverse_record(t1, "sale", 1, 300)])["alarms"] == []  # proof keyed: acct 0
    h.scan(request_text(t2, 200, 1, live))  # t2 is stolen before it syncs
    out = live.admin("POST", f"/v1/admin/terminals/{t2.terminal_id}/revoke")
    assert out["reverse_refunded"] == 1
    clock(live).advance(2 * live.ctx.policy()["reverse_refund_s"] * 1000)
    assert reconcile.settle(live.ctx) == 0
    assert h.balance == 700
    ledger_ok(live)


# -- finding 1 (docs/fleet.md): a reverse-scan payment a restore took away -----------------------
def test_a_payment_lost_by_a_restore_is_charged_once_from_the_proof_in_the_sale_record(
    live: Live, tmp_path: Path
) -> None:
    """After a restore from a backup older than the phone's payment the server has no payment
    for the terminal's sale.  The record carries the server-signed proof the till verified: it
    names the payer, so ingest charges them, once (``rsale:T:ORDER``), and says so
    (``reverse_restored``).  A short code keyed on the PIN pad names nobody: ``reverse_unpaid``,
    the desk charges it.  A proof of another payer, order or campus charges nobody."""
    h, other = Holder(live, tmp_path, 21, topup=1000), Holder(live, tmp_path, 22, topup=1000)
    t1 = terminal(live, "t1")
    iss = live.ctx.code_issuer

    def proof_of(order: int, amount: int, payer: int, key: Any = iss.key) -> str:
        req = codes.parse_request(codes.unpack_text(request_text(t1, amount, order, live)))
        return base64.b64encode(codes.make_proof(key, iss.kid, req, payer, 99)).decode()

    def shown(order: int, amount: int, acct: int, proof: str) -> dict[str, str]:
        x = {"order": order, "payment": 99, "proof": proof}
        return t1.record(acct, amount, method="qr-reverse", cred=f"qr-reverse:{order}", x=x)

    # the payment for order 1 was made after the backup: the restored server has none
    out = t1.push([shown(1, 300, h.id, proof_of(1, 300, h.id))])
    assert [a["kind"] for a in out["alarms"]] == ["reverse_restored"], out
    assert h.balance == 700
    assert (
        live.ctx.db.scalar(
            "SELECT journal_seq FROM reverse_payments WHERE terminal_id = ? AND order_no = 1",
            (t1.terminal_id,),
        )
        == 1
    )  # linked to its record: never refunded, never charged again
    # the same order again charges nothing
    out = t1.push([shown(1, 300, h.id, proof_of(1, 300, h.id))])
    assert [a["kind"] for a in out["alarms"]] == ["reverse_unpaid"], out
    assert "already journaled as record 1" in out["alarms"][0]["detail"]
    # proofs that do not name this payment: another payer than the record's, a forged key
    out = t1.push([shown(2, 300, h.id, proof_of(2, 300, other.id))])
    assert "another payer" in out["alarms"][0]["detail"], out
    forged = SigningKey.generate()
    out = t1.push([shown(3, 300, h.id, proof_of(3, 300, h.id, key=forged))])
    assert "not signed by this campus" in out["alarms"][0]["detail"], out
    # the short code keyed: nobody is named
    out = t1.push([reverse_record(t1, "sale", 4, 300)])
    assert [a["kind"] for a in out["alarms"]] == ["reverse_unpaid"], out
    assert "short code" in out["alarms"][0]["detail"]
    assert (h.balance, other.balance) == (700, 1000)
    ledger_ok(live)
