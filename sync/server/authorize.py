"""Online authorization of a POS sale (docs/architecture.md: the server is authoritative for balances).

The POS asks before it journals: the server checks the credential (a card: R11 generation;
a phone's payment code: :func:`sync.server.codes.check_payment_code` and the seen-set), R2
account status, R13 expiry, the daily limit (R6: over it the consumption password R5 for a
card; for a payment code, the server's grant for that code from the holder's confirmation with
the query password, never the code's own flag), and the balance, and puts
a *hold* on the amount under the record's id (terminal, sequence).  No money moves here: the
charge is the journal record, applied when it syncs.

A hold has no time limit: it lasts until the terminal's journal has synced past its sequence
number (whatever record sits there: ingest releases the holds of the numbers it applies), or
until the terminal asks for that number again (a terminal that crashed before journaling
reuses the number: its earlier approval was abandoned), or until the terminal is revoked (its
records can never arrive).  A wall-clock expiry would free money that an approved, journaled
sale still needs when the terminal is offline for a while (docs/security.md).  A phone code
claimed by an online authorization is released with the hold (:func:`release`).

R6 with a card: the POS sends the card's own facts (``card``: generation, the tracked day
and amount from the card's counters, the wrong tries, whether the consumption password was
checked correct against the card's verifier).  The limit is then decided from those facts, so
it holds across offline terminals, and the password never reaches the server.  R5 counts the
card's wrong tries or the account's, whichever is higher: a locked account refuses even a
password the card accepted (a card restored from an old image, or a new card, does not start
the count again).  A card whose facts show fewer sales than a synced record left on it went back
(:mod:`sync.server.cardrisk`): an alarm, and by policy the card is blocked.  Without card facts
(legacy card requests) R6 is decided at account level, with the consumption password checked
here (R5).
"""

from __future__ import annotations

from typing import Any

from sync import rules
from sync.codes import Verified
from sync.db import Params
from sync.errors import CodeError
from sync.money import format_fen
from sync.passwords import verify_password
from sync.records import UNSET, AuthorizeAnswer, decline
from sync.rules import AccountStatus
from sync.server import cardrisk, codes, holders, ledger, recovery, terminals
from sync.server.accounts import event, set_status
from sync.server.context import POLICY_READ, Context, next_version
from sync.server.errors import Conflict, Invalid

BLOCKED_REASON = (
    "card blocked: its counters went back (a copied or restored card); see the service desk"
)


def _decline(reason: str, code: str = "declined", **extra: Any) -> AuthorizeAnswer:
    return decline(code, reason, **extra)


#: a card with its account, by the card's number
CARD_READ = (
    "SELECT c.card_no, c.uid, c.generation, c.status AS card_status, c.taps_seen, a.* "
    "FROM cards c JOIN accounts a ON a.id = c.account_id WHERE c.card_no = ?"
)
#: an account by its id
ACCOUNT_READ = "SELECT * FROM accounts WHERE id = ?"
#: an account's holds, by the account's id …
HOLDS_READ = (
    "SELECT amount, pin_ok FROM holds WHERE account_id = ? ORDER BY created_ms, terminal_id, seq"
)
#: … and by its card's number
CARD_HOLDS_READ = (
    "SELECT amount, pin_ok FROM holds WHERE account_id = "
    "(SELECT account_id FROM cards WHERE card_no = ?) ORDER BY created_ms, terminal_id, seq"
)
#: the balances of the account of the card numbered ``?`` (given twice):
#: :func:`sync.server.ledger.balances_statement` by the card
CARD_BALANCES_READ = (
    "SELECT id, balance FROM ledger_accounts WHERE id IN "
    f"('{ledger.WALLET}' || CAST((SELECT account_id FROM cards WHERE card_no = ?) AS TEXT), "
    f"'{ledger.TRANSITION}' || CAST((SELECT account_id FROM cards WHERE card_no = ?) AS TEXT))"
)


def credential_refusal(ctx: Context, row: dict[str, Any], uid: str | None) -> str | None:
    """Why a card may not pay, or None (R2, R11, R13)."""
    if uid is not None and uid.upper() != row["uid"]:
        return "card UID does not match the issued card (clone?)"
    if row["card_status"] == cardrisk.BLOCKED:
        return BLOCKED_REASON
    if row["card_status"] != "active":
        return "card replaced by a newer card (R11)"
    return codes.account_refusal(ctx, row)  # R2, R13: the account's state


def release_statements(
    terminal_id: str, seq: int, last: int | None = None
) -> list[tuple[str, Params]]:
    """Release what online authorization gave the terminal's sequence numbers ``seq`` ..
    ``last`` (just ``seq`` by default): the holds and the provisional claims on phone codes.
    Sent when those numbers are synced (ingest: the records there are what counts now) and
    when the terminal asks for a number again (its earlier approval there was abandoned),
    with the other statements of that moment (``Tx.batch``)."""
    hi = seq if last is None else last
    return [
        (
            "DELETE FROM holds WHERE terminal_id = ? AND seq BETWEEN ? AND ?",
            (terminal_id, seq, hi),
        ),
        (
            "DELETE FROM code_uses WHERE terminal_id = ? AND seq BETWEEN ? AND ?",
            (terminal_id, seq, hi),
        ),
    ]


def authorize(ctx: Context, terminal: dict[str, Any], req: dict[str, Any]) -> AuthorizeAnswer:
    tid = terminal["id"]
    seq, amount = req["seq"], req["amount_fen"]
    if seq < 1:
        raise Invalid("seq starts at 1", "bad_seq")
    qr: Verified | None = None
    bad_code: CodeError | None = None
    if req.get("method") == "qr-forward":  # R8 forward scan: the phone's payment code
        # verified before the transaction (its keys and certificates); its account is read
        # again inside
        try:
            qr, found = codes.check_payment_code(ctx, req.get("qr") or "")
        except CodeError as exc:
            bad_code = exc  # declined in the transaction, after the recovering state
        aid = found["id"] if qr is not None else 0
        account: tuple[str, Params] = (ACCOUNT_READ, (aid,))
        holds_read: tuple[str, Params] = (HOLDS_READ, (aid,))
        balances = ledger.balances_statement(aid)
    else:
        card_no = req.get("card_no") or ""
        account, holds_read = (CARD_READ, (card_no,)), (CARD_HOLDS_READ, (card_no,))
        balances = (CARD_BALANCES_READ, (card_no, card_no))
    now, today = ctx.now_ms(), ctx.today()
    with ctx.db.tx() as tx:
        # Everything this sale reads goes to the database together, in this order, in one
        # round trip (on PostgreSQL, where this transaction holds the writer lock of every
        # server process meanwhile): the recovering state, the policy, the terminal's head and
        # status, the release of an abandoned approval (see below), the card with its account
        # (or the code's account), the account's holds (after the release) and its balances.
        # Read under the writer lock, a loss report, a freeze or a new card committed before
        # is seen here and none after can come before the hold.  The release stands whatever
        # the outcome, as it always did (a decline commits it); only a sequence number already
        # journaled (the Conflict below) undoes it.
        state, policy_rows, head_rows, _, _, acct_rows, held, balance_rows = tx.batch(
            [
                recovery.STATE_READ,
                POLICY_READ,
                ("SELECT head_seq, status FROM terminals WHERE id = ?", (tid,)),
                *release_statements(tid, seq),
                account,
                holds_read,
                balances,
            ]
        )
        # restored from a backup: balances may not yet show sales synced since the backup, so
        # no online approval; 503, the terminal decides offline within the offline bound
        recovery.refuse(tx, "online approval", online=True, read=state)
        terminals.admit(tid, head_rows[0] if head_rows else None)  # revoked meanwhile?
        head = int(head_rows[0]["head_seq"])
        if seq <= head:  # a hold under it would never be released by an ingest
            raise Conflict(
                f"sequence number {seq} is already journaled here (head {head})", "seq_used"
            )
        # The terminal asks for a sequence number above its synced head: whatever it was
        # approved under this number before was never journaled (a terminal journals an
        # approval under the number it asked with, and asks again only after a crash).  That
        # approval is abandoned: its hold and its claim on a phone code went above
        # (release_statements), whatever this request's outcome.
        if bad_code is not None:
            return _decline(bad_code.message, bad_code.reason)
        if not acct_rows:
            if qr is not None:
                return _decline("the code's account does not exist", "unknown_account")
            return _decline("unknown card")
        acct = dict(acct_rows[0])  # with its card's columns (a card sale)
        base = {"account_id": acct["id"], "number": acct["number"], "name": acct["name"]}
        if qr is not None:  # R2/R13: the account blocks its codes too
            refusal = codes.account_refusal(ctx, acct)
        else:  # R2, R11, R13
            refusal = credential_refusal(ctx, acct, req.get("uid"))
        if refusal:
            return _decline(refusal, **base)
        facts = req.get("card") if qr is None else None
        if facts is not None and facts["generation"] != acct["generation"]:
            return _decline("card replaced by a newer card (R11: old generation)", **base)
        policy = ctx.policy_of(policy_rows)
        aid = acct["id"]
        holds = sum(int(h["amount"]) for h in held)
        pin_ok = False
        # R6: today's tracked amount, then the sales authorized but not yet synced (holds)
        tracker = account_tracker = rules.LimitTracker(acct["spent_day"], acct["spent_fen"]).then(
            today, ((int(h["amount"]), bool(h["pin_ok"])) for h in held)
        )
        if facts is not None:  # R5, R6 from the card's counters and the account's
            if cardrisk.check_facts(  # a card showing fewer sales than it made went back
                ctx,
                tx,
                acct["card_no"],
                aid,
                int(facts["taps"]),
                int(acct["taps_seen"] or 0),
                tid,
                cardrisk.store_alarm(ctx, tx, tid),
            ) and policy.get("auto_block_card_rollback", True):
                return _decline(BLOCKED_REASON, **base)
            same_epoch = facts.get("epoch") == acct["pin_epoch"] & 0xFF
            card_tries = int(facts.get("tries") or 0) if same_epoch else 0
            if card_tries > acct["pin_tries"]:
                # R5: the card's wrong tries, known here at once (the journal follows)
                tx.execute(
                    "UPDATE accounts SET pin_tries = ?, version = ? WHERE id = ?",
                    (card_tries, next_version(tx), aid),
                )
                ctx.notifier.notify()
            # R5: the card's tries or the account's, the higher (a card restored from an old
            # image, or a new card, does not start the count again)
            tries = max(card_tries, int(acct["pin_tries"]))
            tracker = rules.LimitTracker(facts.get("day") or "", facts["spent_fen"])
            pin_ok = facts.get("pin") == "ok"
            needs = rules.card_tap_needs_password(
                tracker, account_tracker, today, amount, acct["limit_fen"]
            )
            if (pin_ok or needs) and tries >= policy["pin_max_tries"]:
                return _decline(
                    "consumption password locked (R5): see the service desk",
                    "pin_locked",
                    tries_left=0,
                    **base,
                )
            if not pin_ok and needs:
                return _decline(
                    f"over the daily limit {format_fen(acct['limit_fen'])}: "
                    "consumption password required (R6)",
                    "needs_pin",
                    limit_fen=acct["limit_fen"],
                    tries_left=policy["pin_max_tries"] - tries,
                    **base,
                )
        grant = False
        if qr is not None:
            used = tx.one(
                "SELECT terminal_id, seq FROM code_uses WHERE serial = ? AND counter = ?",
                (qr.code.serial, qr.code.counter),
            )
            if used is not None:  # (this terminal's claim under this seq was released above)
                return _decline(
                    "this code was already used: refresh the code on the phone",
                    "replayed",
                    **base,
                )
        if qr is not None and tracker.needs_password(today, amount, acct["limit_fen"]):
            # R6: over the limit the holder must have confirmed with the query password.  The
            # code's flag is the phone's own claim; what counts is the server's grant for this
            # very code (POST /v1/app/codes/confirm with its serial and counter).
            if not qr.code.confirmed or not holders.code_grant(
                tx, aid, qr.code.serial, qr.code.counter, now
            ):
                return _decline(
                    f"over the daily limit {format_fen(acct['limit_fen'])}: confirm on the "
                    "phone with the query password and show the new code (R6)",
                    "needs_confirm",
                    **base,
                )
            pin_ok = grant = True
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
        wallet, trans = ledger.balances_of(aid, balance_rows)
        usable = wallet + (trans if rules.moves_transition(req.get("method", "card")) else 0)
        available = usable - holds
        if amount > available:
            return _decline(
                f"insufficient balance ({format_fen(max(available, 0))})",
                "insufficient",
                balance_fen=available,
                **base,
            )
        # The approval is answered only once its hold is on disk; a queue of sales waiting
        # for the writer lock lets it go before the fsync and shares one flush
        # (sync.server.workers.GroupCommit; a version taken above keeps it durable).
        tx.defer_commit()
        tx.later(  # with the commit, in its round trip (PostgreSQL)
            "INSERT INTO holds (terminal_id, seq, account_id, amount, expires_ms, pin_ok,"
            " created_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (tid, seq, aid, amount, ledger.HOLD_UNTIL_SYNCED, int(pin_ok), now),
        )
        if qr is not None and grant:  # R6: the server's confirmation of this code is spent
            holders.use_code_grant(tx, aid, qr.code.serial, qr.code.counter)
        if qr is not None:  # the server's seen-set: this code is claimed by (tid, seq)
            tx.execute(
                "INSERT INTO code_uses (serial, counter, kind, terminal_id, seq, ts_ms) "
                "VALUES (?, ?, 'pay', ?, ?, ?)",
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
        account_id=acct["id"],
        number=acct["number"],
        name=acct["name"],
    )
