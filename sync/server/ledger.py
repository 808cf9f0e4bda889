"""The double-entry ledger (docs/architecture.md).

Every movement of money is a transfer from one ledger account to another with a unique id,
applied at most once, never edited or deleted.  Ledger accounts:

============== ============================================================
``w:<id>``     a card holder's wallet (the card balance)
``t:<id>``     a card holder's transition balance (过渡余额, R7)
``mc:<code>``  a merchant (a canteen and its windows): the money of its terminals' sales
``m:<term>``   the merchant behind a POS terminal, before merchants existed (history only: the
               sales of a terminal since the merchants migration credit ``mc:<code>``)
``c:<channel>`` a top-up channel (R7): cash, app, wechat, alipay, bank
``fee``        fee income (R11 reissue fee)
============== ============================================================

Balances are kept on the ledger accounts; the sum over all of them is zero at every commit,
and :func:`check` recomputes every balance from the transfers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from typing import Any, NamedTuple

from sync.db import Database, Params, Tx, value_rows

#: the ids of a holder's two ledger accounts (these prefixes and the account's id) and of a
#: merchant's (the prefix and the merchant's code)
WALLET, TRANSITION, MERCHANT = "w:", "t:", "mc:"


def wallet(account_id: int) -> str:
    return f"{WALLET}{account_id}"


def transition(account_id: int) -> str:
    return f"{TRANSITION}{account_id}"


def merchant(terminal_id: str) -> str:
    """The ledger account of a terminal before merchants (history; see :func:`merchant_of`)."""
    return f"m:{terminal_id}"


#: the id of the ledger account the sales of the terminal ``?`` credit (:func:`merchant_of`),
#: if it exists
TERMINAL_MERCHANT_READ = (
    f"SELECT id FROM ledger_accounts WHERE id = '{MERCHANT}' || "
    "(SELECT merchant FROM terminals WHERE id = ?)"
)


def merchant_account(code: str) -> str:
    """The ledger account of merchant ``code``."""
    return f"{MERCHANT}{code}"


def merchant_of(tx: Tx | Database, terminal_id: str) -> str:
    """The ledger account the sales of ``terminal_id`` credit: its merchant's."""
    code = tx.scalar("SELECT merchant FROM terminals WHERE id = ?", (terminal_id,))
    return merchant_account(str(code or "DEFAULT"))


def channel(name: str) -> str:
    return f"c:{name}"


FEE = "fee"


def ensure(tx: Tx, ledger_id: str, kind: str, owner: int | None = None) -> None:
    tx.execute(
        "INSERT INTO ledger_accounts (id, kind, owner) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING",
        (ledger_id, kind, owner),
    )


#: ``holds.expires_ms`` of every hold written since holds stopped expiring by the clock: a hold
#: lasts until the terminal's journal has synced past its sequence number (or the terminal
#: reuses that number, or is revoked): sync/server/authorize.py.
HOLD_UNTIL_SYNCED = 2**62


def held(tx: Tx | Database, account_id: int) -> int:
    """The amount held on an account for sales approved online whose records have not synced
    yet: money that is no longer the holder's to spend, pay out or take back."""
    return int(
        tx.scalar("SELECT COALESCE(SUM(amount), 0) FROM holds WHERE account_id = ?", (account_id,))
    )


def spendable(tx: Tx, account_id: int) -> int:
    """What an online payment may take from the account: its wallet balance less the amounts
    held for sales approved and not yet synced."""
    wallet_fen, _transition = balances(tx, account_id)
    return wallet_fen - held(tx, account_id)


def reversal_of(original: str) -> str | None:
    """The id of the reversal ingest writes for a journaled sale (``sale:<term>:<seq>`` ->
    ``reversal:<term>:<seq>``), or None for a transfer that is never reversed at sync."""
    return "reversal:" + original[5:] if original.startswith("sale:") else None


def corrected(tx: Tx, original: str) -> int:
    """How much of transfer ``original`` has been given back already: its refunds (the desk's
    and the automatic ones) and, for a journaled sale, the reversal ingest wrote when its phone
    code turned out double-spent or forged.  What is left to give back is the original amount
    less this: nothing is ever given back twice."""
    refunded = int(
        tx.scalar("SELECT COALESCE(SUM(amount), 0) FROM refunds WHERE original = ?", (original,))
    )
    rev = reversal_of(original)
    if rev is not None:
        refunded += int(
            tx.scalar(
                "SELECT COALESCE(SUM(amount), 0) FROM transfers WHERE id = ? AND kind = 'reversal'",
                (rev,),
            )
        )
    return refunded


class UnknownLedgerAccount(ValueError):
    """A transfer names a ledger account that does not exist (a bug of its writer: nothing is
    applied)."""


class Transfer(NamedTuple):
    """One movement of money (immutable; a tuple because ingest makes one per record)."""

    id: str
    ts_ms: int
    debit: str
    credit: str
    amount: int
    kind: str
    account_id: int | None
    memo: str = ""


def transfer(tx: Tx, t: Transfer) -> bool:
    """Apply one transfer; False (and nothing changes) when its id was already applied."""
    if t.amount <= 0:
        raise ValueError("a transfer moves a positive amount")
    if tx.one("SELECT 1 FROM transfers WHERE id = ?", (t.id,)) is not None:
        return False
    apply_many(tx, [t])
    return True


#: rows one set-based UPDATE … FROM (VALUES …) changes at most: a journal batch's ledger accounts
#: (a few hundred) in one statement, not one statement each (on PostgreSQL every statement is
#: the server's work and a round trip, on SQLite a GIL hand-over per row of ``executemany``)
SET_ROWS = 500

TRANSFER_COLUMNS = ("id", "ts_ms", "debit", "credit", "amount", "kind", "account_id", "memo")


def apply_many(
    tx: Tx,
    transfers: Iterable[Transfer],
    also: Sequence[tuple[str, Params]] = (),
    known: Collection[str] = (),
) -> list[list[Any]] | None:
    """Insert new transfers and move the balances: one UPDATE for all the ledger accounts
    touched (up to :data:`SET_ROWS` each), sent with the INSERT of a few transfers and the
    statements ``also`` in one round trip (``Tx.batch``); returns the rows of ``also``.

    The transfer ids must be new: a repeated id fails the whole transaction (applied at most
    once is enforced by the primary key).  Every ledger account a transfer names must exist:
    the UPDATE must change one row per account named, or :class:`UnknownLedgerAccount` fails
    the transaction (on PostgreSQL this is the check, in place of a foreign key checked row by
    row, migration 0014).

    ``known``: ledger accounts this transaction read (under the writer lock: nothing removes
    one meanwhile).  On PostgreSQL, when every account the transfers name is among them and
    all goes in one statement a table, the statements (and ``also``) go with the
    transaction's next statement or its ``COMMIT`` (``Tx.later``), in that one's round trip,
    and None is returned: a POS's push of a sale then holds the writer lock for one round
    trip less (docs/benchmarks.md, peak)."""
    rows = []
    delta: dict[str, int] = defaultdict(int)
    for t in transfers:
        rows.append((t.id, t.ts_ms, t.debit, t.credit, t.amount, t.kind, t.account_id, t.memo))
        delta[t.debit] -= t.amount
        delta[t.credit] += t.amount
    moves = list(delta.items())  # a net move of 0 too: its accounts must exist all the same
    parts = [moves[start : start + SET_ROWS] for start in range(0, len(moves), SET_ROWS)]
    statements: list[tuple[str, Params]] = [
        (
            "UPDATE ledger_accounts SET balance = balance + CAST(v.column2 AS BIGINT) "
            f"FROM (VALUES {value_rows(len(part), 2)}) AS v "
            "WHERE ledger_accounts.id = v.column1 RETURNING ledger_accounts.id",
            [x for move in part for x in move],
        )
        for part in parts
    ]
    insert = tx.insert_statement("transfers", TRANSFER_COLUMNS, rows)
    if insert is not None:
        statements.append(insert)
    if (  # (on SQLite a statement costs no round trip, and the caller keeps the rows of also)
        tx.dialect == "postgresql"
        and len(parts) <= 1
        and (insert is not None or not rows)
        and all(account in known for account, _ in moves)
    ):
        for sql, params in (*statements, *also):
            tx.later(sql, params)
        return None
    got = tx.batch([*statements, *also]) if statements or also else []
    for part, changed in zip(parts, got, strict=False):
        if len(changed) != len(part):
            raise UnknownLedgerAccount(
                f"{len(part) - len(changed)} of the ledger accounts of these transfers do not exist"
            )
    if rows and insert is None:
        tx.insert_rows("transfers", TRANSFER_COLUMNS, rows)
    return got[len(statements) :]


def balances(tx: Tx | Database, account_id: int) -> tuple[int, int]:
    """(wallet, transition) balances of a card holder."""
    return balances_of(account_id, tx.all(*balances_statement(account_id)))


def balances_statement(account_id: int) -> tuple[str, Params]:
    """The read of :func:`balances`, for a caller that sends it with others (``Tx.batch``)."""
    return (
        "SELECT id, balance FROM ledger_accounts WHERE id IN (?, ?)",
        (wallet(account_id), transition(account_id)),
    )


def balances_of(account_id: int, rows: Sequence[Any]) -> tuple[int, int]:
    """(wallet, transition) from the rows of :func:`balances_statement`."""
    got = {r["id"]: int(r["balance"]) for r in rows}
    return got.get(wallet(account_id), 0), got.get(transition(account_id), 0)


def check(db: Database) -> dict[str, Any]:
    """Money conservation: the sum of all balances is zero, and every stored balance equals
    what its transfers add up to."""
    total = int(db.scalar("SELECT COALESCE(SUM(balance), 0) FROM ledger_accounts"))
    mismatched = db.all(
        """
        SELECT la.id, la.balance, COALESCE(f.s, 0) AS computed
        FROM ledger_accounts la
        LEFT JOIN (
            SELECT id, SUM(d) AS s FROM (
                SELECT credit AS id, amount AS d FROM transfers
                UNION ALL
                SELECT debit AS id, -amount AS d FROM transfers
            ) AS moves GROUP BY id
        ) f ON f.id = la.id
        """
    )
    bad = [
        {"account": r["id"], "balance": r["balance"], "computed": r["computed"]}
        for r in mismatched
        if r["balance"] != r["computed"]
    ]
    n = int(db.scalar("SELECT COUNT(*) FROM transfers"))
    return {"ok": total == 0 and not bad, "sum_fen": total, "mismatched": bad, "transfers": n}
