"""The till: who is signed in, the shift, and refunds at the POS (docs/operations.md,
"Cashiers, shifts and refunds").

Operators (cashiers and supervisors) come from the delta feed: the operators of this terminal's
merchant, each with a slow-hash verifier of the PIN (:mod:`sync.passwords`), so a PIN is checked
here, online or offline alike.  Wrong PINs are counted per operator on this terminal before the
hash is computed: after :data:`MAX_TRIES` in a row the operator is locked here for
:data:`LOCK_MS`.

Once the merchant has operators, the POS sells only with a signed-in cashier (or supervisor),
whose number every journal record carries (``op``); a terminal whose merchant has none sells as
before, with ``--operator`` as ``op``.  An operator the feed reports disabled is signed out at
the next action and can no longer sign in; what was sold before the terminal learned it stands
(the server raises ``operator_disabled`` for sales after the disable).

A shift opens at the first sign-in (or ``open_shift``) and closes with a shift (Z) report of the
records made during it: counts and totals per method, refunds, offline sales, what has not
synced; the report is kept in the journal database and pushed to the server
(``POST /v1/pos/shift``) now or when the server is back.

A refund names a sale of this terminal by its journal sequence number (``T00001:17`` or
``17``): a sale from today, refunded once, for at most its amount, with a supervisor's PIN.  It
is a journal record of kind ``refund`` and syncs like a sale; the server checks it again
(:mod:`sync.server.posrefund`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from edge.cache import Cache
from edge.errors import TillError, TillForbidden, TillInvalid, TillLocked, TillNotFound
from edge.journal import Journal
from edge.link import Link
from sync import passwords, records
from sync.client import ServerClient
from sync.clock import Clock, campus_date
from sync.errors import SyncError
from sync.money import format_fen
from sync.records import Alarm, JournalRecord, OperatorRow

log = logging.getLogger(__name__)

MAX_TRIES = 5
LOCK_MS = 5 * 60 * 1000
METHODS = ("card", "qr-forward", "qr-reverse")


def _totals() -> dict[str, int]:
    return {"count": 0, "total_fen": 0}


def _add(t: dict[str, int], amount: int) -> None:
    t["count"] += 1
    t["total_fen"] += amount


class Till:
    def __init__(
        self,
        journal: Journal,
        cache: Cache,
        link: Link,
        clock: Clock,
        tz: str,
        terminal_id: str,
        default_operator: str,
        set_operator: Callable[[str], None],
    ) -> None:
        self.journal = journal
        self.cache = cache
        self.link = link
        self.clock = clock
        self.tz = tz
        self.terminal_id = terminal_id
        self.default_operator = default_operator
        self._set_operator = set_operator
        self._lock = threading.RLock()
        self._cashier: OperatorRow | None = None
        self._refused: dict[int, str] = {}  # refund records the server refused: why
        self.on_change: Callable[[], None] | None = None  # screens long-poll the engine
        #: called after a refund is journaled (its receipt is queued at once)
        self.on_journaled: Callable[[], object] | None = None
        #: called with the Z report of each shift closed (the receipt printer prints it)
        self.on_closed: Callable[[dict[str, Any]], object] | None = None

    # -- operators ---------------------------------------------------------------------------
    def _check_pin(self, number: str, pin: str, role: str | None = None) -> OperatorRow:
        """The operator ``number`` whose PIN is ``pin`` (and whose role is ``role``)."""
        op = self.cache.operator(number)
        if op is None:
            raise TillForbidden(f"no operator {number} at this merchant", "bad_operator")
        if op.status != "active" or not op.verifier:
            raise TillForbidden(f"operator {number} is disabled", "operator_disabled")
        now = self.clock.now_ms()
        tries, locked_until = self.cache.operator_tries(number)
        if locked_until > now:
            raise TillLocked(
                f"operator {number} is locked after {MAX_TRIES} wrong PINs; try again in "
                f"{(locked_until - now + 999) // 1000} s",
                "operator_locked",
            )
        # counted before the slow hash: a burst of guesses cannot outrun the count
        self.cache.set_operator_tries(number, tries + 1, 0)
        if not passwords.verify_password(pin, op.verifier):
            left = MAX_TRIES - (tries + 1)
            if left <= 0:
                self.cache.set_operator_tries(number, 0, now + LOCK_MS)
                raise TillLocked(
                    f"wrong PIN: operator {number} is locked for {LOCK_MS // 60000} minutes",
                    "operator_locked",
                )
            raise TillForbidden(f"wrong PIN ({left} tries left)", "wrong_pin")
        self.cache.set_operator_tries(number, 0, 0)
        if role is not None and op.role != role:
            raise TillForbidden(f"operator {number} is not a {role}", "not_" + role)
        return op

    @property
    def required(self) -> bool:
        """Whether sales need a signed-in cashier (the merchant has operators)."""
        return self.cache.has_operators()

    def _current(self) -> OperatorRow | None:
        """The signed-in operator, signed out first if the feed has disabled them since."""
        with self._lock:
            op = self._cashier
            if op is None:
                return None
            now = self.cache.operator(op.number)
            if now is None or now.status != "active":
                log.warning("operator %s was disabled: signed out", op.number)
                self._cashier = None
                self._set_operator(self.default_operator)
                self._changed()
                return None
            return op

    def refusal(self) -> str | None:
        """Why a sale may not start now (None: it may)."""
        if not self.required:
            return None
        if self._current() is None:
            return "请收银员登录 / a cashier must sign in first"
        return None

    def sign_in(self, number: str, pin: str) -> dict[str, Any]:
        op = self._check_pin(number, pin)
        with self._lock:
            self._cashier = op
            self._set_operator(op.number)
            if self._open_shift() is None:
                self._start_shift(op.number)
        log.info("operator %s signed in", number)
        self._changed()
        return self.state()

    def sign_out(self) -> dict[str, Any]:
        with self._lock:
            self._cashier = None
            self._set_operator(self.default_operator)
        self._changed()
        return self.state()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    # -- shifts ------------------------------------------------------------------------------
    def _open_shift(self) -> dict[str, Any] | None:
        row = self.journal.db.one(
            "SELECT shift_no, opened_ms, opened_by, first_seq FROM shifts "
            "WHERE closed_ms IS NULL ORDER BY shift_no DESC LIMIT 1"
        )
        return None if row is None else dict(row)

    def _start_shift(self, by: str) -> dict[str, Any]:
        with self.journal.db.tx() as tx:
            n = int(tx.scalar("SELECT COALESCE(MAX(shift_no), 0) FROM shifts")) + 1
            tx.execute(
                "INSERT INTO shifts (shift_no, opened_ms, opened_by, first_seq) "
                "VALUES (?, ?, ?, ?)",
                (n, self.clock.now_ms(), by, self.journal.head_seq + 1),
            )
        log.info("shift %d opened by %s", n, by or "-")
        shift = self._open_shift()
        assert shift is not None
        return shift

    def _who(self) -> str:
        op = self._current()
        if op is not None:
            return op.number
        if self.required:
            raise TillError("a cashier must sign in first", "sign_in_required")
        return self.default_operator

    def open_shift(self) -> dict[str, Any]:
        with self._lock:
            who = self._who()
            if self._open_shift() is not None:
                raise TillError("a shift is open already: close it first", "shift_open")
            self._start_shift(who)
        self._changed()
        return self.state()

    def close_shift(self) -> dict[str, Any]:
        """Close the open shift: its Z report (kept, and pushed to the server when it can
        be); the operator is signed out."""
        with self._lock:
            who = self._who()
            shift = self._open_shift()
            if shift is None:
                raise TillError("no shift is open", "no_shift")
            last = self.journal.head_seq
            report = self.report(shift, last, who)
            with self.journal.db.tx() as tx:
                tx.execute(
                    "UPDATE shifts SET closed_ms = ?, closed_by = ?, report = ? WHERE shift_no = ?",
                    (
                        report["closed_ms"],
                        who,
                        json.dumps(report, sort_keys=True),
                        shift["shift_no"],
                    ),
                )
            self._cashier = None
            self._set_operator(self.default_operator)
        log.info("shift %d closed by %s", shift["shift_no"], who or "-")
        if self.on_closed is not None:
            try:
                self.on_closed(report)
            except Exception:  # the shift is closed and its report kept: printing is extra
                log.exception("shift %d: report not printed", shift["shift_no"])
        self._changed()
        return report

    def report(self, shift: dict[str, Any], last: int, closed_by: str) -> dict[str, Any]:
        """The shift (Z) report of records ``first_seq`` to ``last``."""
        sales, offline, refunds = _totals(), _totals(), _totals()
        by_method = {m: _totals() for m in METHODS}
        refunds_by_method = {m: _totals() for m in METHODS}
        for rec in self.journal.records(int(shift["first_seq"]), last):
            if rec.kind == "sale":
                _add(sales, rec.amt)
                _add(by_method[rec.method], rec.amt)
                if rec.off:
                    _add(offline, rec.amt)
            elif rec.kind == "refund":
                _add(refunds, rec.amt)
                _add(refunds_by_method[rec.method], rec.amt)
        return {
            "terminal_id": self.terminal_id,
            "shift_no": int(shift["shift_no"]),
            "opened_ms": int(shift["opened_ms"]),
            "closed_ms": self.clock.now_ms(),
            "opened_by": str(shift["opened_by"]),
            "closed_by": closed_by,
            "first_seq": int(shift["first_seq"]),
            "last_seq": last,
            "sales": sales,
            "sales_by_method": by_method,
            "offline_sales": offline,
            "refunds": refunds,
            "refunds_by_method": refunds_by_method,
            "net_fen": sales["total_fen"] - refunds["total_fen"],
            "pending_sync": {
                "records": self.journal.queued,
                "offline_fen": self.journal.unsynced_offline_fen,
            },
        }

    def push_reports(self, client: ServerClient) -> int:
        """Push the reports of closed shifts the server does not have yet; how many went."""
        rows = self.journal.db.all(
            "SELECT shift_no, report FROM shifts WHERE closed_ms IS NOT NULL AND pushed = 0 "
            "ORDER BY shift_no"
        )
        sent = 0
        for r in rows:
            try:
                client.request("POST", "/v1/pos/shift", body=json.loads(r["report"]))
            except SyncError as exc:
                log.warning("shift report %d not pushed yet: %s", r["shift_no"], exc)
                break
            with self.journal.db.tx() as tx:
                tx.execute("UPDATE shifts SET pushed = 1 WHERE shift_no = ?", (r["shift_no"],))
            sent += 1
        return sent

    def shifts(self) -> list[dict[str, Any]]:
        return [
            {**json.loads(r["report"]), "pushed": bool(r["pushed"])}
            for r in self.journal.db.all(
                "SELECT report, pushed FROM shifts WHERE report IS NOT NULL ORDER BY shift_no"
            )
        ]

    # -- refunds -----------------------------------------------------------------------------
    def _sale(self, ref: str) -> JournalRecord:
        term, sep, num = ref.rpartition(":")
        if sep and term != self.terminal_id:
            raise TillError(
                f"sale {ref} was made at terminal {term}: refund it there (or at the desk)",
                "foreign_sale",
            )
        if not num.isdigit() or not 1 <= int(num) <= 2**62:
            raise TillInvalid(f"not a journal sequence number: {ref!r}", "bad_seq")
        rec = self.journal.record(int(num))
        if rec is None or rec.kind != "sale":
            raise TillNotFound(f"record {num} of this terminal is not a sale", "no_sale")
        return rec

    def sale_of_account(self, account_id: int) -> str:
        """The newest sale of today on this terminal of the account whose card was tapped,
        not refunded yet (its sequence number)."""
        today = campus_date(self.clock.now_ms(), self.tz)
        for r in reversed(self.journal.account_records(account_id, 0)):
            if r.kind == "sale" and r.day == today and self.journal.refunded(r.seq) is None:
                return str(r.seq)
        raise TillNotFound(
            "no sale of this card today at this terminal is left to refund", "no_sale"
        )

    def refund(
        self, ref: str, supervisor: str, supervisor_pin: str, amount_fen: int | None = None
    ) -> dict[str, Any]:
        with self._lock:
            cashier = self._who()
            sale = self._sale(ref)
            today = campus_date(self.clock.now_ms(), self.tz)
            if campus_date(sale.ts, self.tz) != today:
                raise TillError(
                    f"sale {sale.seq} is not from today: refund it at the desk", "not_today"
                )
            done = self.journal.refunded(sale.seq)
            if done is not None:
                raise TillError(f"sale {sale.seq} was refunded already (record {done})", "refunded")
            amount = sale.amt if amount_fen is None else amount_fen
            if not 0 < amount <= sale.amt:
                raise TillError(
                    f"a refund of sale {sale.seq} is ¥0.01 to {format_fen(sale.amt)}",
                    "over_refund",
                )
            self._check_pin(supervisor, supervisor_pin, role="supervisor")
            acct = self.cache.account(sale.acct) if sale.acct else None
            bal = None
            if acct is not None:
                spent = sum(
                    (r.amount if r.kind == "sale" else -r.amount if r.kind == "refund" else 0)
                    for r in self.journal.account_records(acct.id, acct.as_of_seq)
                )
                bal = acct.balance_fen - spent + amount
            off = not self.link.online
            done_rec = self.journal.append(
                records.refund(
                    ts=self.clock.now_ms(),
                    sale=sale,
                    amt=amount,
                    off=off,
                    op=cashier,
                    supervisor=supervisor,
                    bal=bal,
                ),
                refund_of=sale.seq,
            )
        if self.on_journaled is not None:
            try:
                self.on_journaled()
            except Exception:  # the refund stands; its receipt is queued at the next catch-up
                log.exception("refund record %d: receipt not queued yet", done_rec.seq)
        log.info(
            "sale %d refunded (%d fen) as record %d, supervisor %s",
            sale.seq,
            amount,
            done_rec.seq,
            supervisor,
        )
        return {
            "seq": done_rec.seq,
            "sale_seq": sale.seq,
            "terminal_id": self.terminal_id,
            "amount_fen": amount,
            "method": sale.method,
            "account_id": sale.acct,
            "balance_fen": bal,
            "offline": off,
            "operator": cashier,
            "supervisor": supervisor,
        }

    def note_alarms(self, alarms: list[Alarm]) -> None:
        """The server's alarms on a pushed batch: remember the refunds it refused."""
        for a in alarms:
            if a.kind != "refund_refused":
                continue
            head, _sep, why = a.detail.partition(": ")
            seq = head.removeprefix("record ")
            if seq.isdigit():
                with self._lock:
                    self._refused[int(seq)] = why
                    del_keys = sorted(self._refused)[:-100]
                    for k in del_keys:
                        del self._refused[k]

    def verdict(self, seq: int) -> str:
        """What the server made of refund record ``seq`` so far: ``applied``, ``refused: …``
        or ``pending`` (not synced yet)."""
        with self._lock:
            why = self._refused.get(seq)
        if why is not None:
            return f"refused: {why}"
        return "applied" if self.journal.acked >= seq else "pending"

    # -- what the screens show ---------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        op = self._current()
        shift = self._open_shift()
        return {
            "required": self.required,
            "cashier": None
            if op is None
            else {"number": op.number, "name": op.name, "role": op.role},
            "shift": shift,
        }
