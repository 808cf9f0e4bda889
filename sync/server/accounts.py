"""Card holders' accounts, their cards, top-ups and status changes (R1-R3, R6, R7, R9-R12)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sync import rules
from sync.card import layout
from sync.clock import iso
from sync.crypto import b64e
from sync.db import Row, Tx, placeholders
from sync.errors import MoneyError, RuleError, StoreConflict
from sync.money import check_fen, parse_amount
from sync.passwords import hash_password
from sync.rules import AccountStatus, CardType
from sync.server import cardproof, ledger
from sync.server.context import Context, next_version
from sync.server.errors import Conflict, Invalid, NotFound

_NUMBER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
_UID = re.compile(r"^(?:[0-9A-F]{8}|[0-9A-F]{14}|[0-9A-F]{20})$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _check_number(number: str) -> str:
    if not _NUMBER.match(number or ""):
        raise Invalid(
            "number must be 1-32 letters, digits, '-' or '_' (student/staff or card number)",
            "bad_number",
        )
    return number


def _check_name(name: str) -> str:
    name = (name or "").strip()
    if not 1 <= len(name) <= 64:
        raise Invalid("name must be 1-64 characters", "bad_name")
    return name


def _check_type(kind: str) -> CardType:
    try:
        return CardType(kind)
    except ValueError:
        raise Invalid(
            f"card type must be one of {', '.join(t.value for t in CardType)} (R1)", "bad_type"
        ) from None


def _check_limit(limit_fen: int | None) -> int:
    if limit_fen is None:
        return rules.DEFAULT_DAILY_LIMIT_FEN
    try:
        return check_fen(limit_fen)
    except MoneyError as exc:
        raise Invalid(str(exc), "bad_amount") from exc


def _check_date(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    try:
        if not _DATE.match(value):
            raise ValueError(value)
        dt.date.fromisoformat(value)
    except ValueError:
        raise Invalid(f"dates are YYYY-MM-DD, got {value!r}", "bad_date") from None
    return value


def event(tx: Tx, ctx: Context, account_id: int, kind: str, detail: str, actor: str) -> None:
    """Record an account operation for the transaction flow (R9)."""
    tx.execute(
        "INSERT INTO account_events (account_id, ts_ms, kind, detail, actor) VALUES (?, ?, ?, ?, ?)",
        (account_id, ctx.now_ms(), kind, detail, actor),
    )


def get_account(ctx: Context, number: str) -> dict[str, Any]:
    row = ctx.db.one("SELECT * FROM accounts WHERE number = ?", (number,))
    if row is None:
        raise NotFound(f"no account with number {number!r}", "no_account")
    return dict(row)


def account_row(tx: Tx, number: str, *, cancelled: str = "") -> Row:
    """The account ``number`` (``id``, ``status``, ``flags``, ``expires``), read in ``tx``:
    NotFound ``no_account`` when there is none; with ``cancelled``, a cancelled account is
    refused with that message (Conflict ``bad_status``, R14)."""
    a = tx.one("SELECT id, status, flags, expires FROM accounts WHERE number = ?", (number,))
    if a is None:
        raise NotFound(f"no account with number {number!r}", "no_account")
    if cancelled and a["status"] == AccountStatus.CANCELLED:
        raise Conflict(cancelled, "bad_status")
    return a


def _validated(
    number: str, name: str, kind: str, id_card: str, limit_fen: int | None, expires: str | None
) -> dict[str, Any]:
    try:
        idc = rules.validate_id_card(id_card)
        initial = rules.initial_password(idc)  # R3
    except RuleError as exc:
        raise Invalid(str(exc), "bad_id_card") from exc
    return {
        "number": _check_number(number),
        "name": _check_name(name),
        "type": _check_type(kind).value,
        "id_card": idc,
        "limit_fen": _check_limit(limit_fen),
        "expires": _check_date(expires),
        "initial": initial,
    }


def _insert(ctx: Context, tx: Tx, v: dict[str, Any], pw_hash: str, actor: str) -> int:
    version = next_version(tx)
    try:
        acct_id = tx.insert(
            "INSERT INTO accounts (number, name, type, id_card, limit_fen, query_pw, consume_pw,"
            " expires, created_ms, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (
                v["number"],
                v["name"],
                v["type"],
                v["id_card"],
                v["limit_fen"],
                pw_hash,
                pw_hash,  # R3: both passwords start equal; each gets its own hash when changed
                v["expires"],
                ctx.now_ms(),
                version,
            ),
        )
    except StoreConflict:
        raise Conflict(f"an account with number {v['number']!r} exists", "duplicate") from None
    ledger.ensure(tx, ledger.wallet(acct_id), "wallet", acct_id)
    ledger.ensure(tx, ledger.transition(acct_id), "transition", acct_id)
    event(tx, ctx, acct_id, "open", f"{v['type']} account opened", actor)
    return acct_id


def add_account(
    ctx: Context,
    *,
    number: str,
    name: str,
    type: str,  # noqa: A002 - the field is called "type" in the API
    id_card: str,
    limit_fen: int | None = None,
    expires: str | None = None,
    actor: str = "admin",
) -> dict[str, Any]:
    v = _validated(number, name, type, id_card, limit_fen, expires)
    if ctx.db.one("SELECT 1 FROM accounts WHERE number = ?", (v["number"],)):
        raise Conflict(f"an account with number {v['number']!r} exists", "duplicate")
    pw_hash = hash_password(v["initial"], log2_n=ctx.config.password_log2_n)
    with ctx.db.tx() as tx:
        _insert(ctx, tx, v, pw_hash, actor)
    ctx.notifier.notify()
    return show_account(ctx, v["number"], history=False)


ROSTER_COLUMNS = ("number", "name", "type", "id_card")


def import_roster(ctx: Context, text: str, actor: str = "admin") -> dict[str, Any]:
    """Import a roster CSV (header: number,name,type,id_card[,limit][,expires]).

    Every good line is added; every bad line is reported with its line number and nothing of
    it is written."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    try:
        fields = [f.strip() for f in (reader.fieldnames or [])]
        rows = [(reader.line_num, row) for row in reader]  # physical line numbers
    except csv.Error as exc:  # e.g. a field over the csv module's size limit
        raise Invalid(
            f"roster CSV cannot be read near line {reader.line_num}: {exc}", "bad_roster"
        ) from exc
    missing = [c for c in ROSTER_COLUMNS if c not in fields]
    if missing:
        raise Invalid(f"roster CSV lacks columns: {', '.join(missing)}", "bad_roster")
    errors: list[dict[str, Any]] = []
    good: list[tuple[int, dict[str, Any]]] = []
    seen: set[str] = set()
    for lineno, raw in rows:
        row = {(k or "").strip(): (val or "").strip() for k, val in raw.items() if k}
        try:
            limit = row.get("limit") or None
            limit_fen = None
            if limit:
                limit_fen = parse_amount(limit)
            v = _validated(
                row["number"],
                row["name"],
                row["type"],
                row["id_card"],
                limit_fen,
                row.get("expires") or None,
            )
            if v["number"] in seen:
                raise Conflict(f"number {v['number']!r} appears twice in the roster", "duplicate")
            seen.add(v["number"])
            good.append((lineno, v))
        except (Invalid, Conflict, MoneyError) as exc:
            errors.append({"line": lineno, "error": str(exc)})
    existing = {r["number"] for r in ctx.db.all("SELECT number FROM accounts")} if good else set()
    fresh = []
    for lineno, v in good:
        if v["number"] in existing:
            errors.append(
                {"line": lineno, "error": f"an account with number {v['number']!r} exists"}
            )
        else:
            fresh.append((lineno, v))
    with ThreadPoolExecutor(max_workers=4) as pool:  # scrypt releases the GIL
        hashes = list(
            pool.map(
                lambda item: hash_password(item[1]["initial"], log2_n=ctx.config.password_log2_n),
                fresh,
            )
        )
    added = 0
    with ctx.db.tx() as tx:  # an account added meanwhile (read above, outside) is a line error
        now_existing = {r["number"] for r in tx.all("SELECT number FROM accounts")}
        for (lineno, v), h in zip(fresh, hashes, strict=True):
            if v["number"] in now_existing:
                errors.append(
                    {"line": lineno, "error": f"an account with number {v['number']!r} exists"}
                )
                continue
            _insert(ctx, tx, v, h, actor)
            added += 1
    ctx.notifier.notify()
    return {"added": added, "errors": sorted(errors, key=lambda e: int(e["line"]))}


def _card_rows(ctx: Context, account_id: int) -> list[dict[str, Any]]:
    return [
        dict(r)
        for r in ctx.db.all(
            "SELECT card_no, uid, generation, status, issued_ms FROM cards "
            "WHERE account_id = ? ORDER BY generation",
            (account_id,),
        )
    ]


def show_account(ctx: Context, number: str, *, history: bool = True) -> dict[str, Any]:
    """An account as the desk sees it: balances, limit, status, cards, and with ``history`` the
    bills and the transaction flow (R9)."""
    a = get_account(ctx, number)
    bal, trans = ledger.balances(ctx.db, a["id"])
    tracker = rules.LimitTracker(a["spent_day"], a["spent_fen"])
    policy = ctx.policy()
    out: dict[str, Any] = {
        "id": a["id"],
        "number": a["number"],
        "name": a["name"],
        "type": a["type"],
        "status": a["status"],
        "balance_fen": bal,
        "transition_fen": trans,
        "limit_fen": a["limit_fen"],
        "spent_today_fen": tracker.spent_on(ctx.today()),
        "pin_tries": a["pin_tries"],
        "pin_locked": a["pin_tries"] >= policy["pin_max_tries"],
        "expires": a["expires"],
        "flags": [f for f in a["flags"].split(",") if f],
        "cards": _card_rows(ctx, a["id"]),
    }
    if history:
        out["bills"] = bills(ctx, a["id"])
        out["flow"] = flow(ctx, a["id"])
    return out


def _transfer_rows(ctx: Context, account_id: int, kinds: tuple[str, ...]) -> list[dict[str, Any]]:
    rows = ctx.db.all(
        "SELECT id, ts_ms, debit, credit, amount, kind, memo FROM transfers "
        f"WHERE account_id = ? AND kind IN ({placeholders(len(kinds))}) ORDER BY ts_ms, id",
        (account_id, *kinds),
    )
    out = []
    own = {ledger.wallet(account_id), ledger.transition(account_id)}
    for r in rows:
        sign = 1 if r["credit"] in own and r["debit"] not in own else -1
        if r["credit"] in own and r["debit"] in own:
            sign = 0
        out.append(
            {
                "id": r["id"],
                "time": iso(r["ts_ms"], ctx.config.tz),
                "ts_ms": r["ts_ms"],
                "kind": r["kind"],
                "amount_fen": sign * r["amount"] if sign else r["amount"],
                "from": r["debit"],
                "to": r["credit"],
                "memo": r["memo"],
            }
        )
    return out


def bills(ctx: Context, account_id: int) -> list[dict[str, Any]]:
    """R9 bills (账单): top-ups and purchases."""
    return _transfer_rows(ctx, account_id, rules.BILL_KINDS)


def flow(ctx: Context, account_id: int) -> list[dict[str, Any]]:
    """R9 transaction flow (交易流水): account operations, top-ups and purchases."""
    items = _transfer_rows(ctx, account_id, rules.FLOW_MONEY_KINDS)
    for r in ctx.db.all(
        "SELECT id, ts_ms, kind, detail, actor FROM account_events WHERE account_id = ?",
        (account_id,),
    ):
        items.append(
            {
                "id": f"e{r['id']}",
                "time": iso(r["ts_ms"], ctx.config.tz),
                "ts_ms": r["ts_ms"],
                "kind": r["kind"],
                "detail": r["detail"],
                "actor": r["actor"],
            }
        )
    items.sort(key=lambda i: (i["ts_ms"], i["id"]))
    return items


# --- status changes (R10 loss/unlock, R12 freeze/unfreeze) ------------------------------------
#: flag kept while a lost account is frozen, so unfreezing does not unblock the lost card
LOST_BEFORE_FREEZE = "lost_before_freeze"

_TRANSITIONS = {
    # action: (allowed from, to, event detail)
    "report-loss": ({AccountStatus.NORMAL}, AccountStatus.LOST, "card reported lost (R10)"),
    "unlock": ({AccountStatus.LOST}, AccountStatus.NORMAL, "loss unlocked (R10)"),
    "freeze": (
        {AccountStatus.NORMAL, AccountStatus.LOST},
        AccountStatus.FROZEN,
        "account frozen (R12)",
    ),
    "unfreeze": ({AccountStatus.FROZEN}, AccountStatus.NORMAL, "account unfrozen (R12)"),
}


def change_status(ctx: Context, number: str, action: str, actor: str = "admin") -> dict[str, Any]:
    if action not in _TRANSITIONS:
        raise Invalid(f"unknown status action {action!r}", "bad_action")
    allowed, target, detail = _TRANSITIONS[action]
    with ctx.db.tx() as tx:
        a = account_row(tx, number)
        if AccountStatus(a["status"]) not in allowed:
            raise Conflict(f"cannot {action} an account that is {a['status']}", "bad_status")
        # R10/R12: a card reported lost stays lost through a freeze and its unfreeze
        flags = [f for f in a["flags"].split(",") if f]
        if action == "freeze" and a["status"] == AccountStatus.LOST:
            flags.append(LOST_BEFORE_FREEZE)
        elif action == "unfreeze" and LOST_BEFORE_FREEZE in flags:
            flags.remove(LOST_BEFORE_FREEZE)
            target, detail = AccountStatus.LOST, "account unfrozen; the card is still reported lost"
        tx.execute("UPDATE accounts SET flags = ? WHERE id = ?", (",".join(flags), a["id"]))
        set_status(ctx, tx, a["id"], target, detail, actor)
    ctx.notifier.notify()
    return show_account(ctx, number, history=False)


def set_status(
    ctx: Context, tx: Tx, account_id: int, status: AccountStatus, detail: str, actor: str
) -> None:
    tx.execute(
        "UPDATE accounts SET status = ?, version = ? WHERE id = ?",
        (status.value, next_version(tx), account_id),
    )
    event(
        tx,
        ctx,
        account_id,
        status.value if status != AccountStatus.NORMAL else "restore",
        detail,
        actor,
    )


def reset_pin_tries(ctx: Context, number: str, actor: str = "admin") -> dict[str, Any]:
    """R5: only the desk clears a consumption-password lockout."""
    with ctx.db.tx() as tx:
        a = account_row(tx, number)
        # pin_epoch tells terminals to clear the wrong tries kept on the card at its next tap
        tx.execute(
            "UPDATE accounts SET pin_tries = 0, pin_epoch = pin_epoch + 1, version = ? "
            "WHERE id = ?",
            (next_version(tx), a["id"]),
        )
        event(tx, ctx, a["id"], "pin_reset", "consumption password tries cleared (R5)", actor)
    ctx.notifier.notify()
    return show_account(ctx, number, history=False)


# --- cards ---------------------------------------------------------------------------------
def check_uid(uid: str | None, ctx: Context) -> str:
    """A card UID as stored: upper-case hex of 4, 7 or 10 bytes (a generated one when None)."""
    if uid is None:
        return f"{ctx.rng.getrandbits(32):08X}"
    uid = uid.strip().upper().replace(":", "")
    if not _UID.match(uid):
        raise Invalid("a card UID is 4, 7 or 10 bytes of hex", "bad_uid")
    return uid


def issue_card(
    ctx: Context, number: str, uid: str | None = None, actor: str = "admin"
) -> dict[str, Any]:
    """Issue a card to an account.  A new card replaces every earlier card of the account at
    once (R11: the old card stops working the moment the new one exists).

    The server is the card issuer: the answer carries ``identity``, the signed data the encoder
    writes on the card (:func:`sync.card.layout.issue_blob`), and ``tag``, the card proof
    (:mod:`sync.server.cardproof`).  Issuing again to the card that is already the account's
    active card (same UID) returns that card unchanged, so a desk whose write was interrupted
    can simply run the same command again."""
    uid = check_uid(uid, ctx)
    with ctx.db.tx() as tx:
        a = account_row(tx, number, cancelled="the account is cancelled (R14)")
        same = tx.one(
            "SELECT card_no, uid, generation, account_id, identity FROM cards "
            "WHERE uid = ? AND status = 'active' AND account_id = ? AND identity != ''",
            (uid, a["id"]),
        )
        if same is not None:
            card = _card_answer(ctx, tx, dict(same), again=True)
        else:
            card = issue_card_tx(ctx, tx, a["id"], uid, actor)
    if same is None:
        ctx.notifier.notify()
    return {**card, "number": number}


def issue_card_tx(ctx: Context, tx: Tx, account_id: int, uid: str, actor: str) -> dict[str, Any]:
    """Inside a transaction: a new card for the account; its earlier cards become 'replaced'.
    Returns the card with its signed identity and its proof tag (what the encoder writes onto
    it: docs/card-format.md, sync.server.cardproof)."""
    if tx.one("SELECT 1 FROM cards WHERE uid = ? AND status = 'active'", (uid,)):
        raise Conflict(f"a card with UID {uid} is already in use", "duplicate_uid")
    gen = (
        int(
            tx.scalar(
                "SELECT COALESCE(MAX(generation), 0) FROM cards WHERE account_id = ?",
                (account_id,),
            )
        )
        + 1
    )
    seq = int(tx.scalar("SELECT COUNT(*) FROM cards")) + 1
    card_no = f"{10_000_000 + seq}"
    identity = card_identity(ctx, tx, account_id, card_no, uid, gen)
    version = next_version(tx)
    tx.execute(
        "UPDATE cards SET status = 'replaced', version = ? "
        "WHERE account_id = ? AND status = 'active'",
        (version, account_id),
    )
    tx.execute(
        "INSERT INTO cards (card_no, account_id, uid, generation, issued_ms, version, identity) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (card_no, account_id, uid, gen, ctx.now_ms(), version, identity),
    )
    event(tx, ctx, account_id, "card_issue", f"card {card_no} generation {gen} issued", actor)
    card = {"card_no": card_no, "uid": uid, "generation": gen, "account_id": account_id}
    return _card_answer(ctx, tx, {**card, "identity": identity})


def card_counters(tx: Tx, account_id: int) -> dict[str, Any]:
    """What a newly written card starts with (docs/card-format.md): R6, the account's tracked
    amount of the day as the server has it (spent since campus midnight or the last correct
    consumption password), so a new card does not start the day's limit again; R5, the
    account's wrong consumption passwords and the desk's reset epoch they count in, so a new
    card does not start the lockout again."""
    row = tx.one(
        "SELECT spent_day, spent_fen, pin_tries, pin_epoch FROM accounts WHERE id = ?",
        (account_id,),
    )
    day = str(row["spent_day"] or "") if row is not None else ""
    return {
        "day": day or None,
        "spent_fen": int(row["spent_fen"]) if row and day else 0,
        "pin_tries": min(int(row["pin_tries"]), 255) if row else 0,
        "pin_epoch": int(row["pin_epoch"]) & 0xFF if row else 0,
    }


def _card_answer(ctx: Context, tx: Tx, card: dict[str, Any], again: bool = False) -> dict[str, Any]:
    return {
        "card_no": card["card_no"],
        "uid": card["uid"],
        "generation": card["generation"],
        "account_id": card["account_id"],
        "tag": cardproof.card_tag(
            cardproof.tag_key(tx),
            ctx.config.campus_id,
            card["card_no"],
            card["uid"],
            card["generation"],
        ),
        "identity": card["identity"],
        "counters": card_counters(tx, card["account_id"]),
        "already_issued": again,
    }


def card_identity(
    ctx: Context, tx: Tx, account_id: int, card_no: str, uid: str, generation: int
) -> str:
    """The issuer-signed identity of a card (base64; docs/card-format.md): the account's type,
    expiry (R13) and consumption-password verifier (R5) as they are now."""
    a = tx.one(
        "SELECT type, expires, id_card, card_verifier FROM accounts WHERE id = ?", (account_id,)
    )
    assert a is not None
    if a["card_verifier"]:
        verifier = bytes.fromhex(a["card_verifier"])
    else:  # the first card: from the R3 initial password
        verifier = layout.make_verifier(
            ctx.card_keys, account_id, rules.initial_password(a["id_card"])
        )
        tx.execute(
            "UPDATE accounts SET card_verifier = ? WHERE id = ?", (verifier.hex(), account_id)
        )
    ident = layout.Identity(
        card_no=card_no,
        account_id=account_id,
        card_type=a["type"],
        generation=generation,
        expires=a["expires"],
        issued=ctx.today(),
    )
    return b64e(layout.issue_blob(ctx.card_keys, bytes.fromhex(uid), ident, verifier))


def set_card_password(ctx: Context, tx: Tx, account_id: int, password: str) -> str | None:
    """R5: a new consumption password for the account's cards: store its card verifier and
    re-sign the active card's identity (returned, for the kiosk or desk to write)."""
    verifier = layout.make_verifier(ctx.card_keys, account_id, password)
    tx.execute("UPDATE accounts SET card_verifier = ? WHERE id = ?", (verifier.hex(), account_id))
    card = tx.one(
        "SELECT card_no, uid, generation FROM cards WHERE account_id = ? AND status = 'active'",
        (account_id,),
    )
    if card is None:
        return None
    identity = card_identity(ctx, tx, account_id, card["card_no"], card["uid"], card["generation"])
    tx.execute(
        "UPDATE cards SET identity = ?, version = ? WHERE card_no = ?",
        (identity, next_version(tx), card["card_no"]),
    )
    return identity


# --- top-up (R7) ------------------------------------------------------------------------------
def topup(
    ctx: Context,
    number: str,
    amount_fen: int,
    channel: str,
    request_id: str | None = None,
    actor: str = "admin",
) -> dict[str, Any]:
    """R7 cash top-up at the desk.  Money of the other channels enters only through an order
    paid at the channel's payment provider (:mod:`sync.server.topups`): no one credits it by
    hand."""
    try:
        ch = rules.Channel(channel)
        check_fen(amount_fen)
    except ValueError as exc:
        raise Invalid(str(exc), "bad_topup") from exc
    if ch is not rules.Channel.CASH:
        raise Invalid(
            f"{ch.value} money enters only through a top-up order paid at its payment provider "
            "(R7); the desk takes cash",
            "needs_payer",
        )
    if not ctx.policy()["channels"].get(ch.value, False):
        raise Conflict(f"top-up channel {ch.value} is switched off (R7)", "channel_off")
    a = get_account(ctx, number)
    target = ledger.wallet(a["id"])
    tid = f"topup:{request_id}" if request_id else f"topup:{ctx.rng.getrandbits(64):016x}"
    with ctx.db.tx() as tx:
        # R14 inside the transaction: a cancellation committed after the lookup above has paid
        # the balance out, and money must not land after it
        if tx.scalar("SELECT status FROM accounts WHERE id = ?", (a["id"],)) == (
            AccountStatus.CANCELLED
        ):
            raise Conflict("the account is cancelled (R14)", "bad_status")
        ledger.ensure(tx, ledger.channel(ch.value), "channel")
        applied = ledger.transfer(
            tx,
            ledger.Transfer(
                id=tid,
                ts_ms=ctx.now_ms(),
                debit=ledger.channel(ch.value),
                credit=target,
                amount=amount_fen,
                kind="topup",
                account_id=a["id"],
                memo=f"{ch.value} top-up by {actor}",
            ),
        )
        if applied:
            tx.execute("UPDATE accounts SET version = ? WHERE id = ?", (next_version(tx), a["id"]))
        else:
            done = tx.one("SELECT debit, credit, amount FROM transfers WHERE id = ?", (tid,))
            if done is None or (done["debit"], done["credit"], done["amount"]) != (
                ledger.channel(ch.value),
                target,
                amount_fen,
            ):
                raise Conflict(
                    f"request_id {request_id!r} was used for another top-up", "request_id_reused"
                )
    ctx.notifier.notify()
    out = show_account(ctx, number, history=False)
    out["transfer_id"] = tid
    out["applied"] = applied
    return out


def card_data(ctx: Context, tx: Tx, account_id: int) -> dict[str, Any]:
    """What a kiosk writes onto the account's current card (R11 reissue, R20 correction):
    identity, type, validity, limit, and the proof tag."""
    row = tx.one(
        "SELECT c.card_no, c.uid, c.generation, a.id, a.number, a.name, a.type, a.expires, "
        "a.limit_fen FROM cards c JOIN accounts a ON a.id = c.account_id "
        "WHERE c.account_id = ? AND c.status = 'active'",
        (account_id,),
    )
    if row is None:
        raise Conflict("the account has no active card", "no_card")
    # the identity signed afresh: type, validity (R13) and verifier (R5) as the server has them
    identity = card_identity(ctx, tx, row["id"], row["card_no"], row["uid"], row["generation"])
    stored = tx.scalar("SELECT identity FROM cards WHERE card_no = ?", (row["card_no"],))
    if stored != identity:
        tx.execute(
            "UPDATE cards SET identity = ?, version = ? WHERE card_no = ?",
            (identity, next_version(tx), row["card_no"]),
        )
    return {
        "identity": identity,
        "card_no": row["card_no"],
        "uid": row["uid"],
        "generation": row["generation"],
        "account_id": row["id"],
        "number": row["number"],
        "name": row["name"],
        "type": row["type"],
        "expires": row["expires"],
        "limit_fen": row["limit_fen"],
        "counters": card_counters(tx, row["id"]),
        "tag": cardproof.card_tag(
            cardproof.tag_key(tx),
            ctx.config.campus_id,
            row["card_no"],
            row["uid"],
            row["generation"],
        ),
    }
