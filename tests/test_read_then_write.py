"""Issue 10 item 18: no read-then-write outside a transaction in the server's services: what a
change is decided from is read in the write transaction that makes it (or checked again
there), so a change committed in between is neither lost nor overruled.  Each test forces
the interleaving that lost a change before (in-process, on both databases)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sync.passwords import verify_password
from sync.server import accounts, authorize, holder_ops, holders, ingest, policy, terminals
from sync.server import codes as server_codes
from sync.server.context import Context
from sync.server.errors import Conflict, Forbidden
from tests.helpers import id_card
from tests.inproc import InProcTerminal, make_context


@pytest.fixture
def ctx(tmp_path: Path, db_kind: str) -> Iterator[Context]:
    c = make_context(tmp_path / "srv")
    yield c
    c.db.close()


def _account(ctx: Context, number: str, n: int) -> dict[str, Any]:
    accounts.add_account(ctx, number=number, name=f"测试{n}", type="student", id_card=id_card(n))
    row = ctx.db.one("SELECT * FROM accounts WHERE number = ?", (number,))
    assert row is not None
    return dict(row)


def test_two_policy_changes_at_once_both_stay(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both changes read the stored policy before either writes (the barrier): each must
    still see the other's."""
    barrier = threading.Barrier(2, timeout=5)
    real = ctx.setting

    def setting(key: str, default: Any = None) -> Any:
        out = real(key, default)
        if key == "policy":
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                pass
        return out

    monkeypatch.setattr(ctx, "setting", setting)
    errors: list[BaseException] = []

    def change(values: dict[str, Any]) -> None:
        try:
            policy.set_policy(ctx, values)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=change, args=({"reverse_refund_s": 700},)),
        threading.Thread(target=change, args=({"code_valid_s": 200, "channels": {"app": False}},)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert errors == []
    monkeypatch.setattr(ctx, "setting", real)
    now = ctx.policy()
    assert (now["reverse_refund_s"], now["code_valid_s"], now["channels"]["app"]) == (
        700,
        200,
        False,
    )


def test_a_password_changed_meanwhile_is_not_overwritten_with_the_old_one(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change authorized by the old query password (checked, then slow) must not overwrite
    a change committed after that check: the holder's new password stays."""
    acct = _account(ctx, "S2032001", 21)
    old = id_card(21)[-6:]
    checked, other_done = threading.Event(), threading.Event()
    real = holders.verify_password

    def slow_check(password: str, stored: str) -> bool:
        ok = real(password, stored)
        if threading.current_thread().name == "stale":
            checked.set()
            other_done.wait(10)
        return ok

    monkeypatch.setattr(holders, "verify_password", slow_check)
    got: list[Any] = []

    def stale() -> None:
        try:
            got.append(holder_ops.change_query_password(ctx, acct, old, "111111"))
        except Conflict as exc:
            got.append(exc)

    t = threading.Thread(target=stale, name="stale")
    t.start()
    assert checked.wait(10)
    holder_ops.change_query_password(ctx, acct, old, "222222")  # the holder, meanwhile
    other_done.set()
    t.join(20)
    assert isinstance(got[0], Conflict) and got[0].code == "password_changed", got
    stored = ctx.db.scalar("SELECT query_pw FROM accounts WHERE id = ?", (acct["id"],))
    assert verify_password("222222", stored) and not verify_password("111111", stored)


def _first_tx_after(ctx: Context, monkeypatch: pytest.MonkeyPatch, change: Any) -> None:
    """Commit ``change()`` just before the next write transaction of ``ctx`` begins (once)."""
    real = ctx.db.tx
    done: list[bool] = []

    def tx(**kw: Any) -> Any:
        if not done:
            done.append(True)
            change()
        return real(**kw)

    monkeypatch.setattr(ctx.db, "tx", tx)


def test_a_loss_report_committed_during_an_authorization_declines_it(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R2: the sale's request was checked (its terminal, its signature), then the card was
    reported lost before the sale's transaction: no hold (the card is read in it)."""
    _account(ctx, "S2032002", 22)
    accounts.topup(ctx, "S2032002", 5000, "cash", None, "desk")
    card = accounts.issue_card(ctx, "S2032002", "04A1B2C3D4E5F6")
    pos = InProcTerminal(ctx, "race-pos")
    _first_tx_after(
        ctx, monkeypatch, lambda: accounts.change_status(ctx, "S2032002", "report-loss")
    )
    out = authorize.authorize(
        ctx, pos.row, {"seq": 1, "card_no": card["card_no"], "amount_fen": 100, "method": "card"}
    )
    assert not out.approved and "lost" in out.reason, out
    assert ctx.db.scalar("SELECT COUNT(*) FROM holds") == 0


def test_a_revocation_committed_during_an_authorization_or_a_push_refuses_it(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The terminal's row was checked active, then the terminal was revoked (which released
    its holds) before the sale's transaction: no hold that nothing would ever release, and a
    push checked before the revocation applies nothing."""
    acct = _account(ctx, "S2032003", 23)
    accounts.topup(ctx, "S2032003", 5000, "cash", None, "desk")
    card = accounts.issue_card(ctx, "S2032003", "04A1B2C3D4E5F7")
    pos = InProcTerminal(ctx, "revoked-pos")
    checked = pos.row  # as the request's signature check read it: active
    _first_tx_after(ctx, monkeypatch, lambda: terminals.revoke(ctx, pos.id))
    with pytest.raises(Forbidden) as err:
        authorize.authorize(
            ctx,
            checked,
            {"seq": 1, "card_no": card["card_no"], "amount_fen": 100, "method": "card"},
        )
    assert err.value.code == "terminal_revoked"
    assert ctx.db.scalar("SELECT COUNT(*) FROM holds") == 0
    with pytest.raises(Forbidden) as err:
        ingest.ingest(ctx, checked, [pos.record(int(acct["id"]), 100)])
    assert err.value.code == "terminal_revoked"
    assert ctx.db.scalar("SELECT COUNT(*) FROM records") == 0


def test_a_roster_line_added_meanwhile_is_a_line_error(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The numbers that exist are read before the slow hashing; one added meanwhile is that
    line's error, and the other lines are still added."""
    real = accounts.hash_password
    added = threading.Event()

    def hash_and_race(pw: str, **kw: Any) -> str:
        if not added.is_set():
            added.set()
            _account(ctx, "R0002", 32)
        return real(pw, **kw)

    monkeypatch.setattr(accounts, "hash_password", hash_and_race)
    csv = "number,name,type,id_card\n" + "".join(
        f"R{i:04d},名{i},student,{id_card(30 + i)}\n" for i in (1, 2, 3)
    )
    out = accounts.import_roster(ctx, csv)
    assert out["added"] == 2, out
    assert [e["line"] for e in out["errors"]] == [3], out


def test_a_loss_report_committed_while_a_code_is_checked_refuses_it(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R18 (issue 10 items 13, 18): a gate asks about an authentication code while the holder
    reports the loss.  The account's state is read in the transaction that uses the code up, so
    the report either comes first and refuses the code, or waits for it: never a code admitted
    on an account already reported lost."""
    acct = _account(ctx, "S2032005", 25)
    now_s = ctx.now_ms() // 1000
    seen = SimpleNamespace(
        account_id=acct["id"], code=SimpleNamespace(serial=1, counter=1, time=now_s)
    )
    monkeypatch.setattr(server_codes, "verifier", lambda c: SimpleNamespace(verify=lambda *a: seen))
    real = server_codes.account_refusal
    loss_done = threading.Event()
    threads: list[threading.Thread] = []
    before: list[bool] = []

    def refusal_then_loss(c: Context, a: dict[str, Any]) -> str | None:
        out = real(c, a)

        def report() -> None:
            accounts.change_status(ctx, "S2032005", "report-loss")
            loss_done.set()

        t = threading.Thread(target=report)
        t.start()
        threads.append(t)
        t.join(1.0)  # the loss report commits now, unless it waits for the code's transaction
        before.append(loss_done.is_set())
        return out

    monkeypatch.setattr(server_codes, "account_refusal", refusal_then_loss)
    out = server_codes.verify_auth_code(ctx, "code")
    for t in threads:
        t.join()
    assert loss_done.is_set() and before == [False], (before, out)
    assert out["allowed"], out  # the code came first; the loss report after it
