"""Journal ingest: batches of signed, hash-chained records from one terminal (docs/architecture.md).

For each batch:

1. every body is decoded and validated, and must name the sending terminal;
2. records at or below the terminal's head are duplicates: harmless when identical to the
   stored record, a tamper alarm when not;
3. records above the head are merged with any held back earlier, and the contiguous run from
   ``head + 1`` is checked link by link (``prev`` = SHA-256 of the previous body);
4. the signature of the newest record of the run is verified: it authenticates every record
   behind it (a bad one makes us walk back to the newest record whose signature holds);
5. the run is applied exactly once, in one transaction (records, transfers, the holds and
   provisional code claims of those sequence numbers released, R6 tracking, R5 wrong tries,
   R12 flags, the card counters each record left (:mod:`sync.server.cardrisk`: a card that
   went back is an alarm); phone-code sales through :mod:`sync.server.codeuse`: a code used twice is
   reversed; reverse-scan records through :mod:`sync.server.reconcile`: a sale is linked to
   the phone's payment and charges nothing, a ``void`` refunds it), and the head moves;
6. records after a gap are held in ``pending_records`` until the gap is filled.

The answer acks the highest contiguous sequence number.  Nothing that fails a check is ever
applied; every failure is an alarm.

A record whose place in the chain can be read (``v``, ``term``, ``seq``, ``prev``: the
*envelope*) but whose content is not valid — an amount, id or counter outside the bounds of
:mod:`sync.bounds`, an unknown kind — is **refused**: it takes its place in the chain like any
record (its body is stored, its hash is the next record's ``prev``, the newest signature
authenticates it), moves no money, and raises a ``record_refused`` alarm.  So one absurd
record cannot block a terminal's later records, and the chain stays verifiable end to end.  A
body whose envelope cannot be read cannot be placed: the whole batch is refused (422), as
before (docs/protocol.md).
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec

from sync import protocol, rules
from sync.bounds import PosId
from sync.clock import CampusDays
from sync.crypto import VerifyKey
from sync.db import Params, Row, Tx, placeholders, value_rows
from sync.errors import ProtocolError
from sync.records import Alarm, JournalRecord, PushAck
from sync.rules import AccountStatus
from sync.server import (
    authorize,
    cardrisk,
    codeuse,
    holders,
    ledger,
    posrefund,
    reconcile,
    recovery,
    roles,
    terminals,
)
from sync.server.accounts import event, set_status
from sync.server.context import NEXT_VERSION, POLICY_READ, Context, took_version
from sync.server.errors import Forbidden, Invalid

log = logging.getLogger(__name__)

MAX_BATCH = 2000
MAX_PENDING = 20000
#: the columns of a stored journal record
RECORD_COLUMNS = ("terminal_id", "seq", "hash", "body", "sig", "received_ms")


@dataclass
class Incoming:
    seq: int
    body: bytes
    sig: str
    #: None: a refused record (``refused`` says why): chained, stored, never applied
    rec: JournalRecord | None
    hash: str = ""
    refused: str = ""
    #: the signature checked already (before the transaction): its answer
    sig_valid: bool | None = None
    #: ``body`` as text, as it came (what the records table stores)
    text: str = ""


class _Envelope(msgspec.Struct, frozen=True):
    """What places a record in its terminal's chain (the other fields are ignored here)."""

    v: Literal[1]
    term: str
    seq: PosId
    prev: Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]


_ENVELOPE = msgspec.json.Decoder(_Envelope)


def _read(body_text: str) -> tuple[int, str, JournalRecord | None, str]:
    """``(seq, term, record, why refused)`` of a body; ``record`` is None when the content is
    not valid but the envelope is (a refused record).  ProtocolError: the body cannot be
    placed in a chain (not JSON, not canonical, no valid envelope)."""
    body = body_text.encode()
    try:
        rec = JournalRecord.parse(body_text)  # str: the faster input
        if rec.body() != body:
            raise ProtocolError("body is not in canonical form")
        return rec.seq, rec.term, rec, ""
    except ProtocolError as exc:
        why = str(exc)
    try:
        env = _ENVELOPE.decode(body)
        canonical = protocol.canonical(json.loads(body))
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError, RecursionError):
        raise ProtocolError(why) from None
    if canonical != body:
        raise ProtocolError("body is not in canonical form")
    return env.seq, env.term, None, why


def _decode(terminal_id: str, role: str, wire: Sequence[Mapping[str, Any]]) -> list[Incoming]:
    if len(wire) > MAX_BATCH:
        raise Invalid(f"a batch holds at most {MAX_BATCH} records", "batch_too_large")
    out = []
    for i, w in enumerate(wire):
        body_text, sig = w.get("body"), w.get("sig")
        if not isinstance(body_text, str) or not isinstance(sig, str):
            raise Invalid(f"record {i}: body and sig must be strings", "bad_record")
        try:
            seq, term, rec, why = _read(body_text)
        except (ProtocolError, UnicodeEncodeError) as exc:
            raise Invalid(f"record {i}: {exc}", "bad_record") from exc
        if term != terminal_id:
            raise Invalid(f"record {i} belongs to terminal {term}", "foreign_record")
        if rec is not None and not roles.may_write(role, rec.kind, rec.method):
            raise Forbidden(
                f"record {i}: a {role} terminal does not write {rec.kind} records by "
                f"{rec.method} (docs/security.md)",
                "record_not_allowed",
            )
        out.append(Incoming(seq, body_text.encode(), sig, rec, refused=why, text=body_text))
    return out


def _sig_ok(key: VerifyKey, item: Incoming) -> bool:
    if item.sig_valid is None:
        try:
            sig = base64.b64decode(item.sig, validate=True)
        except ValueError:
            item.sig_valid = False
        else:
            item.sig_valid = len(sig) == 64 and key.ok(sig, item.body)
    return item.sig_valid


def _alarm(tx: Tx, ctx: Context, res: PushAck | None, tid: str, kind: str, detail: str) -> None:
    log.warning("alarm %s from %s: %s", kind, tid, detail)
    tx.execute(
        "INSERT INTO alarms (ts_ms, terminal_id, kind, detail) VALUES (?, ?, ?, ?)",
        (ctx.now_ms(), tid, kind, detail),
    )
    if res is not None:
        res.alarms.append(Alarm(kind, detail))


def _gap_alarm(
    tx: Tx,
    ctx: Context,
    res: PushAck,
    tid: str,
    items: Sequence[Incoming],
    *,
    had_pending: bool,
    keep: Sequence[Incoming],
) -> None:
    """A gap is normal for a moment (batches crossing on the wire), but a terminal pushes from
    the server's ack, so when records were already held behind the gap and the terminal pushes
    again without the missing one, it no longer has it: the journal lost records and only the
    operator can settle that.  Raised once per missing sequence number."""
    if not (had_pending and keep and items) or min(i.seq for i in items) <= res.ack + 1:
        return
    missing = f"record {res.ack + 1} is missing"
    if tx.scalar(
        "SELECT 1 FROM alarms WHERE terminal_id = ? AND kind = 'journal_gap' "
        "AND LOWER(detail) LIKE ?",
        (tid, missing.lower() + ",%"),
    ):
        return
    _alarm(
        tx,
        ctx,
        res,
        tid,
        "journal_gap",
        f"{missing}, pushed again without it; records {keep[0].seq}–{keep[-1].seq} are held "
        "behind the gap, not applied",
    )


def push(
    ctx: Context, terminal: Mapping[str, Any], wire: Sequence[Mapping[str, Any]], acked: int | None
) -> PushAck:
    """``POST /v1/journal`` of ``terminal`` (its row as its request was checked against:
    :meth:`sync.server.terminals.TerminalAuth.check`; its ``head_seq`` may be an earlier
    request's, :meth:`~sync.server.terminals.TerminalAuth.signed`)."""
    return ingest(ctx, dict(terminal), wire, acked)


def ingest(
    ctx: Context,
    terminal: dict[str, Any],
    wire: Sequence[Mapping[str, Any]],
    acked: int | None = None,
) -> PushAck:
    """Apply ``terminal``'s pushed records.  ``acked``, the head the server had acked to the
    terminal, above the head it holds proves the server lost records (restored from a
    backup): it enters the recovering state before applying anything
    (:func:`sync.server.recovery.saw_ack`), even when no feed request came first: in the
    transaction that applies them, under the writer lock, with the head read there."""
    tid = terminal["id"]
    try:
        items = _decode(tid, str(terminal["role"]), wire)
    except (Invalid, Forbidden) as exc:
        # another terminal's records (a cloned or forged sender), or records this role never
        # writes (a compromised kiosk or gate): nothing is applied, the operator is told
        if exc.code in ("foreign_record", "record_not_allowed"):
            with ctx.db.tx() as tx:
                _alarm(tx, ctx, None, tid, exc.code, exc.message)
        raise
    key = VerifyKey.from_b64(terminal["pubkey"])
    # what needs no database is done before the writer's turn, which every server process
    # waits for: each record's hash, and the signature of the newest record, which
    # authenticates the run when the run reaches it (step 4 checks it there)
    for i in items:
        i.hash = protocol.record_hash(i.body)
    if items:
        _sig_ok(key, max(items, key=lambda i: i.seq))
    with ctx.db.tx() as tx:
        # with the policy and the recovering state: read here, they cost no round trip of
        # their own (the state cannot change before this transaction ends: it is changed
        # under the writer lock this transaction holds)
        # and the accounts of the records pushed with their balances, and the ledger account of
        # the terminal's merchant (step 5 reads them)
        accounts: dict[int, dict[str, Any]] = {}
        bal: dict[str, int] = {}
        loads = _load_statements(sorted({i.rec.acct for i in items if i.rec is not None}))
        head_rows, held_before, policy_rows, recovering, merchant_rows, *loaded = tx.batch(
            [
                (
                    "SELECT head_seq, head_hash, merchant, status FROM terminals WHERE id = ?",
                    (tid,),
                ),
                (
                    "SELECT seq, body, sig FROM pending_records WHERE terminal_id = ? ORDER BY seq",
                    (tid,),
                ),
                POLICY_READ,
                recovery.STATE_READ,
                (ledger.TERMINAL_MERCHANT_READ, (tid,)),
                *loads,
            ]
        )
        known = {str(r["id"]) for r in merchant_rows}  # ledger accounts that exist
        if loaded:
            _loaded(loaded[0], loaded[1], accounts, bal)
        terminals.admit(tid, head_rows[0] if head_rows else None)  # revoked meanwhile?
        head, head_hash = int(head_rows[0]["head_seq"]), str(head_rows[0]["head_hash"])
        if acked is not None and acked > head:  # restored from a backup: recovering now
            recovery.saw_ack(ctx, tx, tid, acked)
            recovering = tx.all(*recovery.STATE_READ)
        merchant_code = str(head_rows[0]["merchant"] or "DEFAULT")
        res = PushAck(ack=head)
        urgent = False

        # 2. duplicates
        dups = [i for i in items if i.seq <= head]
        if dups:
            lo, hi = min(d.seq for d in dups), max(d.seq for d in dups)
            stored = {
                r["seq"]: r["hash"]
                for r in tx.all(
                    "SELECT seq, hash FROM records WHERE terminal_id = ? AND seq BETWEEN ? AND ?",
                    (tid, lo, hi),
                )
            }
            for d in dups:
                if stored.get(d.seq) != d.hash:
                    _alarm(
                        tx,
                        ctx,
                        res,
                        tid,
                        "tamper",
                        f"record {d.seq} differs from the one stored under the same id",
                    )
                else:
                    res.duplicates += 1

        # 3. merge with held-back records; find the contiguous run
        fresh: dict[int, Incoming] = {}
        for r in held_before:
            _seq, _term, rec, why = _read(r["body"])  # read when it came: readable now
            body = r["body"].encode()
            fresh[r["seq"]] = Incoming(
                r["seq"],
                body,
                r["sig"],
                rec,
                protocol.record_hash(body),
                refused=why,
                text=r["body"],
            )
        for i in items:
            if i.seq <= head:
                continue
            held = fresh.get(i.seq)
            if held is not None and held.body != i.body:
                _alarm(tx, ctx, res, tid, "tamper", f"two different records with sequence {i.seq}")
                continue
            fresh[i.seq] = i
        run: list[Incoming] = []
        rejected: set[int] = set()
        prev, seq = head_hash, head + 1
        while seq in fresh:
            item = fresh[seq]
            if _prev_of(item) != prev:
                _alarm(
                    tx,
                    ctx,
                    res,
                    tid,
                    "broken_chain",
                    f"record {seq} does not chain to record {seq - 1}",
                )
                rejected.add(seq)
                break
            run.append(item)
            prev, seq = item.hash, seq + 1

        # 4. the newest signature authenticates the run
        if run and not _sig_ok(key, run[-1]):
            _alarm(
                tx,
                ctx,
                res,
                tid,
                "bad_signature",
                f"record {run[-1].seq} is not signed by terminal {tid}",
            )
            while run and not _sig_ok(key, run[-1]):
                rejected.add(run.pop().seq)

        # 5. apply (its last writes, ``tail``, go with the ones below in one round trip)
        tail: list[tuple[str, Params]] = []
        if run:
            policy = ctx.policy_of(policy_rows)
            urgent = (
                _apply(ctx, tx, tid, merchant_code, run, res, tail, policy, accounts, bal, known)
                or urgent
            )
            res.ack = run[-1].seq
            tail.append(
                (
                    "UPDATE terminals SET head_seq = ?, head_hash = ?, last_seen_ms = ? "
                    "WHERE id = ?",
                    (run[-1].seq, run[-1].hash, ctx.now_ms(), tid),
                )
            )

        # 6. hold back what lies beyond a gap (never what failed a check)
        keep = [i for s, i in sorted(fresh.items()) if s > res.ack and s not in rejected]
        _gap_alarm(tx, ctx, res, tid, items, had_pending=bool(held_before), keep=keep)
        if held_before:
            tail.append(("DELETE FROM pending_records WHERE terminal_id = ?", (tid,)))
        for sql, params in tail:  # with the next statement or the commit (PostgreSQL)
            tx.later(sql, params)
        tx.insert_rows(
            "pending_records",
            ("terminal_id", "seq", "body", "sig"),
            [(tid, i.seq, i.text or i.body.decode(), i.sig) for i in keep[:MAX_PENDING]],
        )
        res.pending = min(len(keep), MAX_PENDING)
    if res.applied and recovery.state_of(recovering) is not None:
        recovery.check(ctx)  # restored from a backup: this push may be the last one waited for
    if res.applied:
        # plain sales move balances only: they wake no parked long-poll (Notifier.notify), so
        # a lunch peak's 100 sales/s do not answer every parked long-poll again and again
        ctx.notifier.notify(lazy=not urgent, versions=tx.versions)
    return res


def _prev_of(item: Incoming) -> str:
    if item.rec is not None:
        return item.rec.prev
    return str(_ENVELOPE.decode(item.body).prev)


def _operator_check(
    tx: Tx,
    ctx: Context,
    res: PushAck,
    tid: str,
    merchant_code: str,
    seq: int,
    rec: JournalRecord,
    run: posrefund.RunState,
) -> None:
    """A sale made by an operator the server knows as disabled before the sale's time (a
    terminal offline since): the sale stands (the card was charged), the alarm tells."""
    op = posrefund.operator_row(tx, run, rec.op)
    if op is None or op["merchant"] != merchant_code:
        return  # a name given with --operator (terminals without operators): nothing to check
    if op["status"] != "active" and int(op["disabled_ms"]) <= rec.ts:
        _alarm(
            tx,
            ctx,
            res,
            tid,
            "operator_disabled",
            f"record {seq}: sale by operator {rec.op}, disabled before it (the terminal was "
            "offline); the sale stands",
        )


def _apply(
    ctx: Context,
    tx: Tx,
    tid: str,
    merchant_code: str,
    run: list[Incoming],
    res: PushAck,
    tail: list[tuple[str, Params]],
    policy: dict[str, Any],
    accounts: dict[int, dict[str, Any]],
    bal: dict[str, int],
    known: set[str],
) -> bool:
    """Apply ``run`` under ``policy``; True when it changed more than balances and spending
    (a status, a password count, anything but a plain sale): the terminals must hear of it at
    once.  The accounts' last update is appended to ``tail``, for the caller to run (in this
    transaction, before anything reads those accounts again).  ``accounts`` and ``bal``: the
    accounts and balances read already in this transaction (:func:`_load`); ``known``: the
    ledger accounts read so (the merchant's too)."""
    now = ctx.now_ms()
    urgent = any(i.rec is not None and i.rec.kind != "sale" for i in run)
    # the records at these sequence numbers are what counts now: whatever online authorization
    # gave the numbers (holds, provisional claims on phone codes) goes, sale or not; sent in
    # one round trip with the reads of the run's accounts not read yet (or with the next
    # statement)
    _load(
        tx,
        sorted({i.rec.acct for i in run if i.rec is not None}),
        accounts,
        bal,
        first=authorize.release_statements(tid, run[0].seq, run[-1].seq),
    )
    known.update(bal)  # the run's holders' ledger accounts, as read (before any move below)
    transfers: list[ledger.Transfer] = []
    merchant = ledger.merchant_account(merchant_code)
    day_of = CampusDays(ctx.config.tz)
    touched: set[int] = set()
    refused = 0
    refunds = posrefund.RunState()

    def flag(acct: dict[str, Any], name: str) -> bool:
        """Add flag ``name``; True when it is new."""
        if name in acct["flags"].split(","):
            return False
        acct["flags"] = ",".join(f for f in [*acct["flags"].split(","), name] if f)
        return True

    def charged(acct: dict[str, Any], seq: int, freeze: bool) -> None:
        """After a charge: R12, a balance gone negative is flagged (and, by policy, frozen)."""
        aid = acct["id"]
        if bal[ledger.wallet(aid)] < 0 and flag(acct, "overdrawn"):
            event(
                tx,
                ctx,
                aid,
                "flag",
                f"balance negative after offline sale {tid}:{seq} (R12)",
                "system",
            )
            # not when a code of the account was found double-spent: the overdraft may be the
            # replay's doing, not the holder's (R12, docs/security.md)
            if (
                freeze
                and policy["auto_freeze_negative_balance"]
                and acct["status"] == AccountStatus.NORMAL
                and "double_spend" not in acct["flags"].split(",")
            ):
                acct["status"] = AccountStatus.FROZEN.value
                acct["frozen_now"] = True

    for item in run:
        rec = item.rec
        if rec is None:  # outside the bounds or not valid: in the chain, never applied
            refused += 1
            _alarm(
                tx,
                ctx,
                res,
                tid,
                "record_refused",
                f"record {item.seq} refused, nothing of it applied: {item.refused[:300]}",
            )
            continue
        refunds.records[item.seq] = rec
        if rec.op and rec.kind == "sale":
            _operator_check(tx, ctx, res, tid, merchant_code, item.seq, rec, refunds)
        if rec.kind == "refund":
            try:
                rt = posrefund.check(tx, tid, merchant_code, item.seq, rec, refunds, day_of)
            except posrefund.Refused as exc:
                _alarm(tx, ctx, res, tid, "refund_refused", f"record {item.seq}: {exc}")
                continue
            transfers.append(rt)
            refunds.transfers[rt.id] = rt
            refunded = rt.account_id or 0
            _load(tx, [refunded], accounts, bal)
            if refunded in accounts:
                bal[rt.credit] = bal.get(rt.credit, 0) + rt.amount
                touched.add(refunded)
            continue
        if rec.kind == "void":  # a reverse-scan request closed without a sale
            problem = reconcile.void(ctx, tx, tid, item.seq, rec)
            if problem:
                _alarm(tx, ctx, res, tid, "reverse_void", f"record {item.seq}: {problem}")
            continue
        if rec.kind == "sale" and rec.method == "qr-reverse":
            # the phone's online payment moved the money already: link, never charge twice
            problem, late = reconcile.link(ctx, tx, tid, item.seq, rec)
            if problem:
                kind = late.kind if late else "reverse_unpaid"
                _alarm(tx, ctx, res, tid, kind, f"record {item.seq}: {problem}")
            if late is not None:
                _load(tx, [late.account_id], accounts, bal)
                acct = accounts.get(late.account_id)
                if acct is not None:
                    transfers.append(late.transfer)
                    bal[late.transfer.debit] = (
                        bal.get(late.transfer.debit, 0) - late.transfer.amount
                    )
                    charged(acct, item.seq, freeze=False)  # the refund was ours, not an overspend
                    touched.add(late.account_id)
            continue
        acct = accounts.get(rec.acct)
        if acct is None:
            _alarm(
                tx,
                ctx,
                res,
                tid,
                "unknown_account",
                f"record {item.seq} names account {rec.acct}, which does not exist",
            )
            continue
        aid = acct["id"]
        day = day_of(rec.ts)
        if rec.kind == "sale":
            w, t = ledger.wallet(aid), ledger.transition(aid)
            if bal.get(t, 0) > 0 and rules.moves_transition(rec.method):  # R7
                transfers.append(
                    ledger.Transfer(
                        f"trans:{tid}:{item.seq}",
                        rec.ts,
                        t,
                        w,
                        bal[t],
                        "transition",
                        aid,
                        "transition balance moved in at a card transaction (R7)",
                    )
                )
                bal[w] = bal.get(w, 0) + bal[t]
                bal[t] = 0
            transfers.append(
                ledger.Transfer(
                    f"sale:{tid}:{item.seq}",
                    rec.ts,
                    w,
                    merchant,
                    rec.amt,
                    "sale",
                    aid,
                    f"{rec.method} sale at {tid}" + (" (offline)" if rec.off else ""),
                )
            )
            bal[w] = bal.get(w, 0) - rec.amt
            refunds.transfers[transfers[-1].id] = transfers[-1]
            problem = None
            if rec.method == "qr-forward":
                problem = codeuse.forward_problem(tx, tid, item.seq, rec, now, run[-1].seq)
            if problem:  # a code used twice (or not genuine): a new correcting transfer
                transfers.append(
                    ledger.Transfer(
                        f"reversal:{tid}:{item.seq}",
                        now,
                        merchant,
                        w,
                        rec.amt,
                        "reversal",
                        aid,
                        f"charge of {tid}:{item.seq} reversed: {problem}",
                    )
                )
                bal[w] += rec.amt
                refunds.transfers[transfers[-1].id] = transfers[-1]
                kind = problem.split(":", 1)[0]
                _alarm(tx, ctx, res, tid, kind, f"record {item.seq}: {problem}")
                event(tx, ctx, aid, "reversal", f"{problem}; charge reversed", "system")
                if kind == "double_spend":
                    # R12: flagged for the desk, never frozen for it: a screenshot of the code
                    # replayed at an offline till looks just the same (docs/security.md)
                    flag(acct, kind)
                touched.add(aid)
                continue
            pin_ok = rec.pin == "ok"
            if pin_ok and rec.method == "qr-forward" and rec.off:
                pin_ok = _offline_confirmation(ctx, tx, res, tid, item.seq, rec)
            # R6 tracking at account level: records of a past day do not move today's amount
            if day >= acct["spent_day"]:
                tracker = rules.LimitTracker(acct["spent_day"], acct["spent_fen"])
                after = tracker.after_purchase(day, rec.amt, pin_ok)
                acct["spent_day"], acct["spent_fen"] = after.day, after.spent_fen
            if rec.pin == "ok" and rec.method == "card":  # R5 tries are the card's
                acct["pin_tries"] = 0
            charged(acct, item.seq, freeze=True)
        elif rec.kind == "pin_fail" and (rec.off or rec.x_has("card")):
            # R5: wrong passwords keyed offline count toward the lockout once they sync (online
            # passwords checked by the server itself were counted when it checked them).  A
            # password checked against the card carries the card's own count: the server
            # mirrors it, unless the desk has reset the tries since (another epoch).
            card = rec.x_value("card")
            if isinstance(card, dict) and isinstance(card.get("tries"), int):
                if card.get("ep", acct["pin_epoch"] & 0xFF) == acct["pin_epoch"] & 0xFF:
                    acct["pin_tries"] = max(acct["pin_tries"], card["tries"])
            else:
                acct["pin_tries"] += 1
            if (
                policy["auto_freeze_pin_lockout"]
                and acct["pin_tries"] >= policy["pin_max_tries"]
                and acct["status"] == AccountStatus.NORMAL
            ):
                acct["status"] = AccountStatus.FROZEN.value
                acct["frozen_now"] = True
        touched.add(aid)
    # the transfers, the records and the feed version (when accounts changed) go in one round
    # trip where they are few (a POS's push of a sale or two), with the commit where their
    # ledger accounts were read (ledger.apply_many): on PostgreSQL this transaction holds the
    # writer lock of every server process
    records = [(tid, i.seq, i.hash, i.text or i.body.decode(), i.sig, now) for i in run]
    insert = tx.insert_statement("records", RECORD_COLUMNS, records)
    also = ([insert] if insert is not None else []) + ([NEXT_VERSION] if touched else [])
    got = ledger.apply_many(tx, transfers, also, known)
    posrefund.write_rows(tx, refunds)
    # the card counters the records left: a card that went back is an alarm (and blocked)
    cardrisk.note_records(
        ctx,
        tx,
        tid,
        [(i.seq, i.rec) for i in run if i.rec is not None],
        lambda kind, detail: _alarm(tx, ctx, res, tid, kind, detail),
    )
    if insert is None:
        tx.insert_rows("records", RECORD_COLUMNS, records)
    if touched:
        if got is not None:  # (sent with the commit: its version is read below, in SQL; the
            # versions a transaction took matter only to SQLite's watcher, Notifier.notify)
            took_version(tx, got[-1])
        for aid in touched:
            a = accounts[aid]
            if a["pin_tries"] != a.pop("pin_tries_before", a["pin_tries"]):
                urgent = True  # R5: the terminals go by the count offline
            if a.pop("frozen_now", False):
                urgent = True
                set_status(
                    ctx,
                    tx,
                    aid,
                    AccountStatus.FROZEN,
                    "frozen automatically by a rule (R12)",
                    "system",
                )
        changed = [
            (
                accounts[a]["spent_day"],
                accounts[a]["spent_fen"],
                accounts[a]["pin_tries"],
                accounts[a]["flags"],
                a,
            )
            for a in sorted(touched)
        ]
        for start in range(0, len(changed), ledger.SET_ROWS):
            part = changed[start : start + ledger.SET_ROWS]
            tail.append(
                (
                    "UPDATE accounts SET spent_day = v.column1, "
                    "spent_fen = CAST(v.column2 AS BIGINT), "
                    "pin_tries = CAST(v.column3 AS BIGINT), flags = v.column4, "
                    "version = (SELECT value FROM versions WHERE name = 'feed') "
                    f"FROM (VALUES {value_rows(len(part), 5)}) AS v "
                    "WHERE accounts.id = CAST(v.column5 AS BIGINT)",
                    [x for row in part for x in row],
                )
            )
    res.applied = len(run) - refused
    res.refused = refused
    return urgent


def _load(
    tx: Tx,
    acct_ids: list[int],
    accounts: dict[int, dict[str, Any]],
    bal: dict[str, int],
    first: Sequence[tuple[str, Params]] = (),
) -> None:
    """Read the accounts ``acct_ids`` (those not read yet) and their balances, in one round
    trip, after the statements ``first`` (sent with them; with the next statement when every
    account was read already)."""
    ids = [a for a in acct_ids if a not in accounts]
    if not ids:
        for sql, params in first:
            tx.later(sql, params)
        return
    *_, rows, balances = tx.batch([*first, *_load_statements(ids)])
    _loaded(rows, balances, accounts, bal)


def _load_statements(ids: list[int]) -> list[tuple[str, Params]]:
    """The reads of the accounts ``ids`` and of their balances (none for no id)."""
    if not ids:
        return []
    # the ledger accounts of every id asked for: an unknown account has none
    ledger_ids = [ledger.transition(a) for a in ids] + [ledger.wallet(a) for a in ids]
    return [
        (
            "SELECT id, status, spent_day, spent_fen, pin_tries, pin_epoch, flags "
            f"FROM accounts WHERE id IN ({placeholders(len(ids))})",
            ids,
        ),
        (
            f"SELECT id, balance FROM ledger_accounts WHERE id IN ({placeholders(len(ledger_ids))})",
            ledger_ids,
        ),
    ]


def _loaded(
    rows: list[Row], balances: list[Row], accounts: dict[int, dict[str, Any]], bal: dict[str, int]
) -> None:
    """Keep the rows of :func:`_load_statements`."""
    for r in rows:
        accounts[r["id"]] = {**dict(r), "pin_tries_before": r["pin_tries"]}
    for r in balances:
        bal[r["id"]] = int(r["balance"])


def _offline_confirmation(
    ctx: Context, tx: Tx, res: PushAck, tid: str, seq: int, rec: JournalRecord
) -> bool:
    """R6: an offline terminal took the phone's word (the code's "confirmed" flag) that the
    holder confirmed with the query password.  The server's grant for that code is what counts:
    spent here when it exists; without it the sale stands (the terminal approved it) but does
    not reset the tracked amount, and the desk hears of a phone that claims what it was not
    given."""
    ids = codeuse.code_ids(rec.cred)
    if ids is not None and holders.code_confirmed(tx, rec.acct, *ids):
        return True
    _alarm(
        tx,
        ctx,
        res,
        tid,
        "unconfirmed_code",
        f"record {seq}: the code claims a confirmation with the query password (R6) that the "
        "server never gave",
    )
    return False
