"""The server after a restore from a backup: *recovering* until every terminal has pushed again.

A restored database has lost what the server did after the backup, and among it the records
of sales the terminals had synced (and acked) since: they come back when each terminal pushes
again (docs/operations.md), but until then the server does not know that money was spent.  A
balance is too high, so a cancellation would pay out, a refund take back, and an online
approval spend money those sales already spent: the account ends below the offline bound of
docs/security.md (the fleet simulator's finding 5, docs/fleet.md).

So a restore puts the server in the *recovering* state, kept in its database (the ``recovery``
setting, so every server process and a restart see it):

- explicitly: ``ykt server restore --from BACKUP`` (SQLite) writes it into the restored
  database; after a PostgreSQL ``pg_restore``, ``ykt admin server restored`` (or ``ykt
  server --restored`` at the first start);
- automatically, as a safety net: a terminal whose feed request reports an ``acked`` head
  above the head the server holds for it proves the server lost records it had acked
  (:func:`saw_ack`).

While recovering the server refuses what would spend or pay out money it may no longer know
was spent (:func:`refuse`): online authorizations answer 503 ``recovering`` (the terminal
decides offline, within the offline bound, as when the server is down), reverse-scan payments
and transfers out of a balance likewise, desk cancellations and refunds that take money out
of a balance 409 ``recovering``; each names the terminals still to push.  It leaves the state
by itself (:func:`check`) once every enrolled, non-revoked terminal that pushes a journal (a
POS) has reported its journal head in a feed request since the restore and the server holds its journal up to that head;
or when an administrator forces it (``ykt admin server resume --force``, audited), e.g. for a
terminal that will never come back (revoking it also takes it out of the wait).
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from sync.db import Database, Row, Tx, placeholders
from sync.errors import ConfigError
from sync.server.context import Context
from sync.server.errors import Conflict, ServiceError
from sync.server.roles import ENDPOINTS

log = logging.getLogger(__name__)

#: the setting that holds the state: ``{"since_ms", "reason", "by"}``, or null
KEY = "recovery"
#: how many waiting terminals an error message names
NAMED = 8


class Recovering(ServiceError):
    """An online spending request while recovering: 503, so a terminal decides offline (the
    client's ``ServerUnavailable``) exactly as when the server cannot be reached."""

    http_status = 503
    code = "recovering"


#: the statement :func:`state` reads, for a caller that sends it with others
#: (``Database.reads``, ``Tx.batch``); :func:`state_of` takes its rows
STATE_READ = ("SELECT value FROM settings WHERE key = ?", (KEY,))


def state(rd: Database | Tx) -> dict[str, Any] | None:
    """The recovering state (``since_ms``, ``reason``, ``by``), or None."""
    return state_of(rd.all(*STATE_READ))


def state_of(rows: list[Row]) -> dict[str, Any] | None:
    """The recovering state from the rows of :data:`STATE_READ`."""
    if not rows or rows[0]["value"] is None:
        return None
    value = json.loads(rows[0]["value"])
    return value if isinstance(value, dict) else None


#: the roles whose journals the server ingests: only theirs can have been lost (a kiosk keeps
#: no journal the server holds, so it is never waited for)
JOURNALING = tuple(sorted(ENDPOINTS["POST /v1/journal"]))


def waiting(rd: Database | Tx, since_ms: int) -> list[dict[str, Any]]:
    """The active terminals the server still waits for: no head reported since ``since_ms``,
    or a journal not synced up to the head reported."""
    return [
        dict(r)
        for r in rd.all(
            "SELECT id, name, role, head_seq, reported_head, reported_ms FROM terminals "
            f"WHERE status = 'active' AND role IN ({placeholders(len(JOURNALING))}) "
            "AND (reported_ms < ? OR head_seq < reported_head) ORDER BY id",
            (*JOURNALING, since_ms),
        )
    ]


def _alarm(tx: Tx, ctx: Context, terminal_id: str | None, kind: str, detail: str) -> None:
    log.warning("%s: %s", kind, detail)
    tx.execute(
        "INSERT INTO alarms (ts_ms, terminal_id, kind, detail) VALUES (?, ?, ?, ?)",
        (ctx.now_ms(), terminal_id, kind, detail),
    )


def enter_tx(
    ctx: Context, tx: Tx, reason: str, by: str, terminal_id: str | None = None
) -> dict[str, Any]:
    """Enter (or, after another restore, enter again from now) the recovering state."""
    value = {"since_ms": ctx.now_ms(), "reason": reason[:300], "by": by[:100]}
    ctx.put_setting(tx, KEY, value)
    _alarm(tx, ctx, terminal_id, "server_recovering", f"{reason} (by {by})")
    return value


def enter(ctx: Context, reason: str, by: str) -> dict[str, Any]:
    """The server's database was restored from a backup (``by`` says who said so)."""
    with ctx.db.tx() as tx:
        enter_tx(ctx, tx, reason, by)
    return status(ctx)


def status(ctx: Context) -> dict[str, Any]:
    """What ``ykt admin server status`` shows: the state and the terminals waited for."""
    st = state(ctx.db)
    if st is None:
        return {"recovering": False, "since_ms": None, "reason": "", "by": "", "waiting": []}
    return {"recovering": True, **st, "waiting": waiting(ctx.db, int(st["since_ms"]))}


def _names(rows: list[dict[str, Any]]) -> str:
    named = ", ".join(
        f"{r['id']} (head {r['head_seq']}"
        + (
            f" of {r['reported_head']})"
            if r["head_seq"] < r["reported_head"]
            else ", not heard from)"
        )
        for r in rows[:NAMED]
    )
    more = f" and {len(rows) - NAMED} more" if len(rows) > NAMED else ""
    return named + more


def refuse(
    rd: Database | Tx, doing: str, online: bool = False, read: list[Row] | None = None
) -> None:
    """Raise while recovering: ``doing`` would spend or pay out money the server may no longer
    know was spent.  ``online``: an online approval (503 :class:`Recovering`: the terminal
    decides offline); else 409 ``recovering`` (the desk waits).  ``read``: the rows of
    :data:`STATE_READ`, when the caller read them with other statements."""
    st = state(rd) if read is None else state_of(read)
    if st is None:
        return
    rows = waiting(rd, int(st["since_ms"]))
    who = (
        f"terminals still to push: {_names(rows)}"
        if rows
        else "every terminal has pushed; the state ends at the next push or feed request"
    )
    message = (
        f"the server was restored from a backup and does not know every sale yet: no {doing} "
        f"until every terminal has pushed its journal again ({who}; docs/operations.md)"
    )
    if online:
        raise Recovering(message)
    raise Conflict(message, "recovering")


def check(ctx: Context) -> bool:
    """Leave the state when no terminal is waited for any more; True when it ended now."""
    with ctx.db.tx() as tx:
        st = state(tx)
        if st is None or waiting(tx, int(st["since_ms"])):
            return False
        _end(ctx, tx, "every terminal has pushed its journal again since the restore")
    return True


def _end(ctx: Context, tx: Tx, why: str) -> None:
    ctx.put_setting(tx, KEY, None)
    _alarm(tx, ctx, None, "server_recovered", why)


def resume(ctx: Context, actor: str, force: bool) -> dict[str, Any]:
    """An administrator ends the state: at once with ``force`` (the terminals still waited
    for are named in the alarm; the audit log keeps who), else only when none is waited for."""
    with ctx.db.tx() as tx:
        st = state(tx)
        if st is None:
            return status(ctx)
        rows = waiting(tx, int(st["since_ms"]))
        if rows and not force:
            raise Conflict(
                f"terminals still to push: {_names(rows)} (bring them online, revoke one that "
                "will never come back, or end the state anyway with --force)",
                "recovering",
            )
        _end(
            ctx,
            tx,
            f"ended by {actor}"
            + (f" with --force, not waiting for: {_names(rows)}" if rows else ""),
        )
    return status(ctx)


def saw_ack(ctx: Context, tx: Tx, terminal_id: str, acked: int) -> None:
    """A terminal reports the head the server acked to it: above the head the server holds,
    the server lost records it had acked (restored from a backup behind our back)."""
    held = tx.scalar("SELECT head_seq FROM terminals WHERE id = ?", (terminal_id,))
    if held is None or acked <= int(held):
        return
    if state(tx) is not None:
        return  # already recovering: the terminal is waited for anyway
    enter_tx(
        ctx,
        tx,
        f"terminal {terminal_id} reports record {acked} acked, the server holds its journal "
        f"up to {held}: the database went back (restored from a backup?)",
        "detected",
        terminal_id,
    )


def put_back(db_path: Path, backup: Path, keep: bool = True) -> Path | None:
    """Put a SQLite backup in the place of the database ``db_path`` (the server stopped):
    the backup (with its ``-wal`` when one lies beside it: a copy of a stopped server's data
    directory) is copied next to the database, checked to be a ykt database and made whole
    (its WAL folded in; the backup itself is not touched), the database it replaces is kept
    (``keep``: as ``ykt.db.replaced-N`` with its ``-wal``/``-shm``, returned; else deleted),
    and the copy takes its place (mode 0600).  The caller opens it (migrating an older
    backup) and enters the recovering state (:func:`enter`)."""
    tmp = db_path.with_name(db_path.name + ".restoring")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(backup, tmp)
    if Path(f"{backup}-wal").exists():
        shutil.copyfile(f"{backup}-wal", f"{tmp}-wal")
    tmp.chmod(0o600)
    try:
        con = sqlite3.connect(tmp)
        try:
            con.execute("SELECT value FROM settings WHERE key = 'policy'").fetchall()
            con.execute("SELECT head_seq FROM terminals LIMIT 1").fetchall()
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            con.execute("PRAGMA journal_mode = DELETE").fetchall()  # one file, no WAL
        finally:
            con.close()
    except sqlite3.Error as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"{backup} is not a backup of a ykt server's database: {exc}") from exc
    for suffix in ("-wal", "-shm"):
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    kept: Path | None = None
    if keep and db_path.exists():
        n = 1
        while (kept := db_path.with_name(f"{db_path.name}.replaced-{n}")).exists():
            n += 1
        for suffix in ("", "-wal", "-shm"):  # moved aside as they are, with their WAL
            old = Path(f"{db_path}{suffix}")
            if old.exists():
                old.replace(f"{kept}{suffix}")
    for suffix in ("-wal", "-shm", "-journal"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    tmp.replace(db_path)
    return kept
