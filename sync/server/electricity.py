"""R15 electricity (电控转账): a registry of dorm buildings and rooms, and transfers from a card
holder's balance to a room's electricity account (ledger account ``e:<building>:<room>``)."""

from __future__ import annotations

import re
from typing import Any

from sync import rules
from sync.money import format_fen
from sync.server import ledger, recovery
from sync.server.context import Context, next_version
from sync.server.errors import Conflict, Invalid, NotFound

_CODE = re.compile(r"^[A-Za-z0-9_-]{1,16}$")
MAX_ROOMS_PER_CALL = 5000


def room_account(building: str, room: str) -> str:
    return f"e:{building}:{room}"


def _check_code(value: str, what: str) -> str:
    if not _CODE.match(value or ""):
        raise Invalid(f"{what}: 1-16 letters, digits, '_' or '-'", f"bad_{what}")
    return value


def expand_rooms(spec: str) -> list[str]:
    """``"101-103,201"`` → ``["101", "102", "103", "201"]`` (ranges keep zero padding)."""
    out: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        if sep and lo.isdigit() and hi.isdigit() and len(lo) == len(hi) and int(lo) <= int(hi):
            if int(hi) - int(lo) >= MAX_ROOMS_PER_CALL:
                raise Invalid(f"room range {part} is too long", "bad_room")
            out += [str(n).zfill(len(lo)) for n in range(int(lo), int(hi) + 1)]
        else:
            out.append(_check_code(part, "room"))
    return out


def add_building(ctx: Context, code: str, name: str, rooms: list[str]) -> dict[str, Any]:
    _check_code(code, "building")
    name = (name or "").strip()
    if not 1 <= len(name) <= 64:
        raise Invalid("building name: 1-64 characters", "bad_name")
    if len(rooms) > MAX_ROOMS_PER_CALL:
        raise Invalid(f"at most {MAX_ROOMS_PER_CALL} rooms per call", "bad_room")
    for r in rooms:
        _check_code(r, "room")
    with ctx.db.tx() as tx:
        tx.execute(
            "INSERT INTO buildings (code, name, created_ms) VALUES (?, ?, ?) "
            "ON CONFLICT (code) DO UPDATE SET name = excluded.name",
            (code, name, ctx.now_ms()),
        )
        tx.executemany(
            "INSERT INTO rooms (building, room) VALUES (?, ?) ON CONFLICT DO NOTHING",
            [(code, r) for r in rooms],
        )
        total = int(tx.scalar("SELECT COUNT(*) FROM rooms WHERE building = ?", (code,)))
    return {"code": code, "name": name, "rooms": total}


def list_buildings(ctx: Context) -> list[dict[str, Any]]:
    return [
        {"code": r["code"], "name": r["name"], "rooms": int(r["n"])}
        for r in ctx.db.all(
            "SELECT b.code, b.name, COUNT(r.room) AS n FROM buildings b "
            "LEFT JOIN rooms r ON r.building = b.code GROUP BY b.code, b.name ORDER BY b.code"
        )
    ]


def list_rooms(ctx: Context, building: str) -> list[str]:
    if not ctx.db.one("SELECT 1 FROM buildings WHERE code = ?", (building,)):
        raise NotFound(f"no dorm building {building!r}", "no_building")
    return [
        str(r["room"])
        for r in ctx.db.all("SELECT room FROM rooms WHERE building = ? ORDER BY room", (building,))
    ]


def room_info(ctx: Context, building: str, room: str) -> dict[str, Any]:
    if not ctx.db.one("SELECT 1 FROM rooms WHERE building = ? AND room = ?", (building, room)):
        raise NotFound(f"no room {room!r} in building {building!r} (R15)", "no_room")
    bal = ctx.db.scalar(
        "SELECT balance FROM ledger_accounts WHERE id = ?", (room_account(building, room),)
    )
    return {"building": building, "room": room, "balance_fen": int(bal or 0)}


def transfer(
    ctx: Context,
    acct: dict[str, Any],
    building: str,
    room: str,
    amount_fen: int,
    request_id: str | None = None,
    actor: str = "app",
) -> dict[str, Any]:
    """R15: move money from the holder's balance to a room's electricity account."""
    if not ctx.db.one("SELECT 1 FROM rooms WHERE building = ? AND room = ?", (building, room)):
        raise NotFound(f"no room {room!r} in building {building!r} (R15)", "no_room")
    aid = acct["id"]
    tid = f"elec:{aid}:{request_id}" if request_id else f"elec:{aid}:{ctx.rng.getrandbits(64):016x}"
    target = room_account(building, room)
    with ctx.db.tx() as tx:
        recovery.refuse(tx, "transfer out of a balance")
        a = tx.one("SELECT status FROM accounts WHERE id = ?", (aid,))
        assert a is not None
        if not rules.may_spend_online(a["status"]):
            raise Conflict(f"the account is {a['status']}: no transfers (R2)", "bad_status")
        done = tx.one("SELECT credit, amount FROM transfers WHERE id = ?", (tid,))
        if done is not None:
            # a retry of the same transfer is harmless; the key reused for another room or
            # amount is refused, never answered as if that other transfer were made
            if (done["credit"], int(done["amount"])) != (target, amount_fen):
                raise Conflict(
                    f"request_id {request_id!r} was used for another electricity transfer",
                    "request_id_reused",
                )
            applied = False
        else:
            spendable = ledger.spendable(tx, aid)
            if amount_fen > spendable:
                raise Conflict(
                    f"insufficient balance ({format_fen(max(spendable, 0))})", "insufficient"
                )
            ledger.ensure(tx, target, "electricity")
            ledger.transfer(
                tx,
                ledger.Transfer(
                    id=tid,
                    ts_ms=ctx.now_ms(),
                    debit=ledger.wallet(aid),
                    credit=target,
                    amount=amount_fen,
                    kind="electricity",
                    account_id=aid,
                    memo=f"electricity for {building} room {room} via {actor} (R15)",
                ),
            )
            tx.execute("UPDATE accounts SET version = ? WHERE id = ?", (next_version(tx), aid))
            applied = True
        wallet, trans = ledger.balances(tx, aid)
    ctx.notifier.notify()
    return {
        "transfer_id": tid,
        "applied": applied,
        "building": building,
        "room": room,
        "amount_fen": amount_fen,
        "balance_fen": wallet,
        "transition_fen": trans,
    }
