"""Online authorization of a POS sale (docs/architecture.md: the server is authoritative for balances).

The POS asks before it journals: the server checks the credential (a card: R11 generation;
a phone's payment code: :func:`sync.server.codes.check_payment_code` and the seen-set), R2
account status, R13 expiry, the daily limit (R6: over it the consumption password R5 for a
card, the query-password confirmation carried by a payment code), and the balance, and puts
a *hold* on the amount under the record's id (terminal, sequence).  No money moves here: the
charge is the journal record, applied when it syncs, and applying it releases the hold.  A
terminal that crashes before journaling reuses the sequence number, which replaces the hold;
an abandoned hold expires.

R6 with a card: the POS sends the card's own facts (``card``: generation, the tracked day
and amount from the card's counters, the wrong tries, whether the consumption password was
checked correct against the card's verifier).  The limit is then decided from those facts, so
it holds across offline terminals, and the password never reaches the server.  Without card
facts (legacy card requests) R6 is decided at account level, with the consumption password
checked here (R5).
"""

from __future__ import annotations

from typing import Any

from sync import rules
from sync.codes import Verified
from sync.errors import CodeError
from sync.money import format_fen
from sync.passwords import verify_password
from sync.records import UNSET, AuthorizeAnswer, decline
from sync.rules import AccountStatus
from sync.server import codes, ledger
from sync.server.accounts import event, set_status
from sync.server.context import Context, next_version
from sync.server.errors import Conflict, Invalid


def _decline(reason: str, code: str = "declined", **extra: Any) -> AuthorizeAnswer:
    return decline(code, reason, **extra)


def lookup_card(ctx: Context, card_no: str) -> dict[str, Any] | None:
    row = ctx.db.one(
        "SELECT c.card_no, c.uid, c.generation, c.status AS card_status, a.* "
        "FROM cards c JOIN accounts a ON a.id = c.account_id WHERE c.card_no = ?",
        (card_no,),
    )
    return None if row is None else dict(row)


def credential_refusal(ctx: Context, row: dict[str, Any], uid: str | None) -> str | None:
    """Why a card may not pay, or None (R2, R11, R13)."""
    if uid is not None and uid.upper() != row["uid"]:
        return "card UID does not match the issued card (clone?)"
    if row["card_status"] != "active":
        return "card replaced by a newer card (R11)"
    reason = rules.blocking_reason(row["status"])
    if reason:
        return reason
    if row["expires"] and ctx.today() > row["expires"]:
        return "card expired (R13): see the service desk"
    return None


def authorize(ctx: Context, terminal: dict[str, Any], req: dict[str, Any]) -> AuthorizeAnswer:
    tid = terminal["id"]
    seq, amount = req["seq"], req["amount_fen"]
    if seq < 1:
        raise Invalid("seq starts at 1", "bad_seq")
    qr: Verified | None = None
    if req.get("method") == "qr-forward":  # R8 forward scan: the phone's payment code
        try:
            qr, row = codes.check_payment_code(ctx, req.get("qr") or "")
        except CodeError as exc:
            return _decline(exc.message, exc.reason)
        base = {"account_id": row["id"], "number": row["number"], "name": row["name"]}
        refusal = codes.account_refusal(ctx, row)  # R2: the account blocks its codes too
    else:
        card = lookup_card(ctx, req["card_no"])
        if card is None:
            return _decline("unknown card")
        row = card
        base = {"account_id": row["id"], "number": row["number"], "name": row["name"]}
        refusal = credential_refusal(ctx, row, req.get("uid"))
    if refusal:
        return _decline(refusal, **base)
    facts = req.get("card")
    if facts is not None and facts["generation"] != row["generation"]:
        return _decline("card replaced by a newer card (R11: old generation)", **base)
    policy = ctx.policy()
    now, today = ctx.now_ms(), ctx.today()
    aid = row["id"]
    with ctx.db.tx() as tx:
        head = int(tx.scalar("SELECT head_seq FROM terminals WHERE id = ?", (tid,)))
        if seq <= head:  # a hold under it would never be released by an ingest
            raise Conflict(
                f"sequence number {seq} is already journaled here (head {head})", "seq_used"
            )
        held = tx.all(
            "SELECT amount, pin_ok FROM holds WHERE account_id = ? AND expires_ms > ? "
            "AND NOT (terminal_id = ? AND seq = ?) ORDER BY created_ms, terminal_id, seq",
            (aid, now, tid, seq),
        )
        holds = sum(int(h["amount"]) for h in held)
        acct = tx.one(
            "SELECT spent_day, spent_fen, pin_tries, consume_pw, status, limit_fen, pin_epoch "
            "FROM accounts WHERE id = ?",
            (aid,),
        )
        assert acct is not None
        # R2/R11 again inside the transaction: a loss report, a freeze or a new card committed
        # after the lookup above must not get a hold
        again = rules.blocking_reason(acct["status"])
        if (
            qr is None
            and tx.scalar("SELECT status FROM cards WHERE card_no = ?", (req["card_no"],))
            != "active"
        ):
            again = "card replaced by a newer card (R11)"
        if again:
            return _decline(again, **base)
        pin_ok = False
        # R6: today's tracked amount, then the sales authorized but not yet synced (holds)
        tracker = account_tracker = rules.LimitTracker(acct["spent_day"], acct["spent_fen"]).then(
            today, ((int(h["amount"]), bool(h["pin_ok"])) for h in held)
        )
        if facts is not None:  # R6 from the card's counters and the account's amount
            tries = int(facts.get("tries") or 0)
            if (
                facts.get("epoch") == acct["pin_epoch"] & 0xFF and tries > acct["pin_tries"]
            ):  # R5: the card's wrong tries, known here at once (the journal follows)
                tx.execute(
                    "UPDATE accounts SET pin_tries = ?, version = ? WHERE id = ?",
                    (tries, next_version(tx), aid),
                )
                ctx.notifier.notify()
            tracker = rules.LimitTracker(facts.get("day") or "", facts["spent_fen"])
            pin_ok = facts.get("pin") == "ok"
            if not pin_ok and rules.card_tap_needs_password(
                tracker, account_tracker, today, amount, acct["limit_fen"]
            ):
                return _decline(
                    f"over the daily limit {format_fen(acct['limit_fen'])}: "
                    "consumption password required (R6)",
                    "needs_pin",
                    limit_fen=acct["limit_fen"],
                    **base,
                )
        if qr is not None:
            used = tx.one(
                "SELECT terminal_id, seq FROM code_uses WHERE serial = ? AND counter = ?",
                (qr.code.serial, qr.code.counter),
            )
            if used is not None and (used["terminal_id"], used["seq"]) != (tid, seq):
                return _decline(
                    "this code was already used: refresh the code on the phone",
                    "replayed",
                    **base,
                )
        if qr is not None and tracker.needs_password(today, amount, acct["limit_fen"]):
            # R6: over the limit the phone must have confirmed with the query password
            if not qr.code.confirmed:
                return _decline(
                    f"over the daily limit {format_fen(acct['limit_fen'])}: confirm on the "
                    "phone with the query password and show the new code (R6)",
                    "needs_confirm",
                    **base,
                )
            pin_ok = True
        elif facts is None and tracker.needs_password(today, amount, acct["limit_fen"]):  # R6
            tries_left = policy["pin_max_tries"] - acct["pin_tries"]
            if tries_left <= 0:
                return _decline(
                    "consumption password locked (R5): see the service desk", "pin_locked", **base
                )
            pin = req.get("pin")
            if pin is None:
                return _decline(
                    f"over the daily limit {format_fen(acct['limit_fen'])}: "
                    "consumption password required (R6)",
                    "needs_pin",
                    tries_left=tries_left,
                    **base,
                )
            if not verify_password(pin, acct["consume_pw"]):
                tries = acct["pin_tries"] + 1
                tx.execute(
                    "UPDATE accounts SET pin_tries = ?, version = ? WHERE id = ?",
                    (tries, next_version(tx), aid),
                )
                event(tx, ctx, aid, "pin_fail", f"wrong consumption password at {tid}", tid)
                left = policy["pin_max_tries"] - tries
                if left <= 0 and policy["auto_freeze_pin_lockout"]:
                    set_status(
                        ctx,
                        tx,
                        aid,
                        AccountStatus.FROZEN,
                        "frozen after repeated wrong passwords (R12)",
                        "system",
                    )
                ctx.notifier.notify()
                return _decline(
                    "wrong consumption password (R5)"
                    + (f", {left} tries left" if left > 0 else "; now locked"),
                    "wrong_pin",
                    tries_left=max(left, 0),
                    **base,
                )
            pin_ok = True
        wallet, trans = ledger.balances(tx, aid)
        usable = wallet + (trans if rules.moves_transition(req.get("method", "card")) else 0)
        available = usable - holds
        if amount > available:
            return _decline(
                f"insufficient balance ({format_fen(max(available, 0))})",
                "insufficient",
                balance_fen=available,
                **base,
            )
        tx.execute(
            "INSERT INTO holds (terminal_id, seq, account_id, amount, expires_ms, pin_ok,"
            " created_ms) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (terminal_id, seq) DO UPDATE"
            " SET account_id = excluded.account_id, amount = excluded.amount, "
            "expires_ms = excluded.expires_ms, pin_ok = excluded.pin_ok, "
            "created_ms = excluded.created_ms",
            (tid, seq, aid, amount, now + policy["hold_ttl_s"] * 1000, int(pin_ok), now),
        )
        if qr is not None:  # the server's seen-set: this code is spent on (tid, seq)
            tx.execute(
                "INSERT INTO code_uses (serial, counter, kind, terminal_id, seq, ts_ms) "
                "VALUES (?, ?, 'pay', ?, ?, ?) ON CONFLICT (serial, counter) DO NOTHING",
                (qr.code.serial, qr.code.counter, tid, seq, now),
            )
    spent_before = 0 if pin_ok else tracker.spent_on(today)
    return AuthorizeAnswer(
        approved=True,
        code="ok",
        reason="approved",
        auth_id=f"{tid}:{seq}",
        balance_fen=available - amount,
        limit_fen=acct["limit_fen"],
        spent_fen=spent_before,
        pin="ok" if pin_ok else "none",
        pin_epoch=acct["pin_epoch"],
        cred=UNSET if qr is None else qr.code.cred,
        confirmed=UNSET if qr is None else qr.code.confirmed,
        account_id=row["id"],
        number=row["number"],
        name=row["name"],
    )
