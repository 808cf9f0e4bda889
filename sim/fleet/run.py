"""The fleet run: a campus of POS terminals selling through simulated days under faults, one
virtual clock, one seed, the invariants checked after every step and after the final heal.

A *step* is one event of the schedule: a sale at a terminal, a terminal's background sync, a
desk act, a top-up, a fault starting or ending.  Each day's schedule is drawn from the run's
RNG; the event log (every event with its virtual time and outcome, no timings, paths or
addresses) is hashed into ``trace_hash``.  See docs/fleet.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.pos.engine import State
from sim.fleet import invariants as inv
from sim.fleet.campus import Campus, Holder, cheap_verifiers
from sim.fleet.determinism import seeded
from sim.fleet.net import Crash, Net, Rates
from sim.fleet.server import SimServer
from sim.fleet.terminal import SimTerminal
from sim.mifare import TEAR_MODES
from sync import protocol
from sync.clock import ManualClock, campus_midnight_ms
from sync.crypto import SigningKey
from sync.errors import YktError
from sync.records import JournalRecord
from sync.server import accounts, desk, ledger, reconcile, recovery, terminals
from sync.server.context import DEFAULT_POLICY

FAULT_KINDS = (
    "partition",
    "loss",
    "duplicate",
    "reorder",
    "delay",
    "server_crash",
    "server_restore",
    "terminal_crash",
    "torn_write",
    "clock_skew",
    "offline_days",
)
START_DAY = "2026-09-07"  # a Monday of term
MIN = 60_000
HOUR = 60 * MIN
SALES_PER_DAY = 24  # a terminal-day: 24 sales in three meal peaks, a sync every 30 minutes
SYNC_EVERY = 30 * MIN
MEALS = ((7 * HOUR, 90 * MIN, 0.2), (11 * HOUR, 120 * MIN, 0.45), (17 * HOUR, 120 * MIN, 0.35))
LAST_EVENTS = 25
SETTLE_EVERY = 30 * MIN  # the server settles reverse-scan payments (every minute on a real one)
TORN_SHARE = 0.03  # of card sales: the card is pulled away mid-sale
FULL_EVERY = 100  # steps between checks of every balance against its transfers


def meal(x: float) -> tuple[int, int]:
    """The meal (its start after midnight and its length) a uniform ``x`` falls in."""
    for start, span, share in MEALS:
        if x < share:
            return start, span
        x -= share
    return MEALS[-1][0], MEALS[-1][1]


@dataclass
class Options:
    seed: int
    terminals: int = 4
    days: int = 1
    faults: frozenset[str] = frozenset(FAULT_KINDS)
    sales_per_day: int = SALES_PER_DAY


@dataclass
class Result:
    seed: int
    terminals: int
    terminal_days: int
    sales: int = 0
    approved: int = 0
    offline_approved: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    violations: list[dict[str, Any]] = field(default_factory=list)
    trace_hash: str = ""
    steps: int = 0
    #: reverse-scan payments a restore took away (their sales charge nothing: finding 1)
    lost_payments: int = 0
    #: … and those charged again from the server-signed proof in the sale record (finding 1)
    proof_charged: int = 0
    #: online approvals the server gave while the terminal's cache still had a report the
    #: server no longer has (an unlock not yet seen, or a restore that undid it: finding 2)
    cache_behind: int = 0
    #: replayed codes (screenshots) an offline till approved: double spends found at sync
    replays_approved: int = 0
    last_events: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "terminals": self.terminals,
            "terminal_days": self.terminal_days,
            "sales": self.sales,
            "approved": self.approved,
            "offline_approved": self.offline_approved,
            "faults": self.faults,
            "violations": self.violations,
            "trace_hash": self.trace_hash,
        }


class Violated(Exception):
    pass


class Fleet:
    def __init__(self, opts: Options, workdir: Path, trace: Any = None) -> None:
        self.opts = opts
        self.rng = random.Random(f"fleet/{opts.seed}")
        self.clock = ManualClock(campus_midnight_ms(START_DAY) + 6 * HOUR)
        self.faults: Counter[str] = Counter({k: 0 for k in opts.faults})
        self.digest = hashlib.sha256()
        self.trace = trace
        self.recent: deque[dict[str, Any]] = deque(maxlen=LAST_EVENTS)
        self.result = Result(opts.seed, opts.terminals, opts.terminals * opts.days)
        self.workdir = workdir
        self.server = SimServer(workdir / "server", self.clock, opts.seed)
        rates = Rates(
            loss=0.02 if self._on("loss") else 0.0,
            duplicate=0.01 if self._on("duplicate") else 0.0,
            delay=0.01 if self._on("delay") else 0.0,
        )
        self.rates = rates  # from the end of the setup on
        self.net = Net(
            self.server, self._sub("net"), self.clock.now_ms, Rates.none(), self.faults, self.log
        )
        self.campus = Campus(self.server, self._sub("campus"))
        self.terms: list[SimTerminal] = []
        self.approved: dict[inv.Key, int] = {}
        self.offline_approved: Counter[int] = Counter()
        self.backup: tuple[Path, int, int, int] | None = None  # path, time, topped, paid
        self.step = 0
        self.down_until = 0
        self.policy = dict(DEFAULT_POLICY)
        self.later: list[tuple[int, str]] = []  # (time, terminal) a cut ends
        self.journal_sales: dict[inv.Key, int] = {}
        self.journal_codes: dict[inv.Key, str] = {}
        self.read_to: dict[str, int] = {}
        self.lost_payments: set[tuple[str, int]] = set()  # reverse-scan payments a restore lost
        self.proofs_shown: set[tuple[str, int]] = set()  # reverse scans with the proof shown
        self.cut_at: dict[str, int] = {}  # when each terminal was last cut off
        self.restored_from: int | None = None  # the time of the backup last restored
        self.reverse_orders: dict[inv.Key, int] = {}
        self.ledger_sales: dict[inv.Key, int] = {}
        self.reversals: dict[inv.Key, int] = {}
        self.new_codes: set[str] = set()
        self.fresh: set[inv.Key] = set()  # ledger sales not yet checked
        self.dirty: set[str] = set()  # terminals that journaled since the last look
        self.ledger_boot = -1
        self.ledger_row = 0
        self.rev_payments = 0
        self.policy_boot = -1
        self.day_cap = 0

    # -- plumbing -------------------------------------------------------------------------------
    def _on(self, kind: str) -> bool:
        return kind in self.opts.faults

    def _sub(self, name: str) -> random.Random:
        return random.Random(f"{self.opts.seed}/{name}/{self.rng.random()}")

    def log(self, kind: str, **facts: Any) -> None:
        ev = {"step": self.step, "at": self.clock.now_ms(), "ev": kind, **facts}
        line = json.dumps(ev, sort_keys=True, ensure_ascii=False, default=str)
        self.digest.update(line.encode() + b"\n")
        self.recent.append(ev)
        if self.trace is not None:
            self.trace.write(line + "\n")

    def fault(self, kind: str, **facts: Any) -> None:
        self.faults[kind] += 1
        self.log("fault." + kind, **facts)

    def violate(self, found: list[inv.Violation]) -> None:
        if found:
            for v in found:
                self.log("violation", **v)
            self.result.violations.extend(found)
            raise Violated(found[0]["invariant"])

    # -- set up ---------------------------------------------------------------------------------
    def setup(self) -> None:
        ctx = self.server.context
        n_holders = max(24, 8 * self.opts.terminals)  # about three meals each a day
        self.campus.setup(n_holders)
        for h in self.campus.holders:  # everyone starts the term with some money
            self.campus.topup(h, 30_000 + 1000 * self.rng.randrange(40), self.clock.now_ms())
        for i in range(self.opts.terminals):
            name = f"pos{i + 1:03d}"
            key = SigningKey.from_seed(self.rng.randbytes(32))
            token = terminals.create_enroll_token(ctx, "pos", name, simulated=True)["token"]
            tid = terminals.enroll(ctx, token, key.public.to_b64())["terminal_id"]
            data = self.workdir / name
            data.mkdir()
            term = SimTerminal(
                name, tid, key, data, self.clock, self.net, self._sub(name), "ynart", ctx.config.tz
            )
            term.keys.get()  # the card keystore, fetched once at install
            term.sync(force=True)
            self.terms.append(term)
        self.net.rates = self.rates
        self.log("setup", holders=n_holders, terminals=[t.id for t in self.terms])

    # -- the schedule ---------------------------------------------------------------------------
    def day_events(self, day: int) -> list[tuple[int, int, str, Any]]:
        base = campus_midnight_ms(START_DAY) + day * 24 * HOUR
        r = self.rng
        evs: list[tuple[int, int, str, Any]] = []

        def add(t: int, kind: str, arg: Any = None) -> None:
            evs.append((t, len(evs), kind, arg))

        for ti in range(len(self.terms)):
            for _ in range(self.opts.sales_per_day):
                start, span = meal(r.random())
                add(base + start + r.randrange(span), "sale", ti)
            off = r.randrange(SYNC_EVERY)
            for t in range(base + 6 * HOUR + off, base + 21 * HOUR, SYNC_EVERY):
                add(t, "sync", ti)
            if self._on("partition") and r.random() < 0.15:
                t0 = base + 6 * HOUR + r.randrange(14 * HOUR)
                add(t0, "cut", (ti, t0 + r.randrange(5 * MIN, 3 * HOUR)))
            if self._on("clock_skew") and r.random() < 0.06:
                skew = r.choice((-1, 1)) * r.choice((5_000, 40_000, 5 * MIN, 2 * HOUR))
                add(base + 6 * HOUR + r.randrange(14 * HOUR), "skew", (ti, skew))
            if self._on("terminal_crash") and r.random() < 0.12:
                add(base + 6 * HOUR + r.randrange(14 * HOUR), "arm_crash", (ti, r.randrange(1, 30)))
        if self._on("offline_days") and day == 0 and self.terms:
            ti = r.randrange(len(self.terms))  # one terminal out of reach for days (or to the end)
            add(base + 7 * HOUR, "cut", (ti, base + (24 * HOUR) * r.choice((1, 2, 3)) + 8 * HOUR))
            self.faults["offline_days"] += 1
        if self._on("partition") and r.random() < 0.3:  # a group of terminals cut off together
            t0 = base + 10 * HOUR + r.randrange(8 * HOUR)
            group = r.sample(range(len(self.terms)), max(1, len(self.terms) // 4))
            for ti in group:
                add(t0, "cut", (ti, t0 + r.randrange(10 * MIN, 2 * HOUR)))
        if self._on("server_crash"):
            for _ in range(r.choice((0, 1, 1, 2))):
                add(
                    base + 6 * HOUR + r.randrange(15 * HOUR),
                    "server_crash",
                    r.randrange(MIN, 40 * MIN),
                )
        if self._on("server_restore") and r.random() < 0.6:
            t0 = base + 6 * HOUR + r.randrange(8 * HOUR)
            add(t0, "backup", None)
            add(t0 + r.randrange(30 * MIN, 6 * HOUR), "restore", None)
        for t in range(base, base + 24 * HOUR, SETTLE_EVERY):  # the server's own round
            add(t + 1, "settle", None)
        n_people = max(4, len(self.terms))
        for _ in range(n_people):
            add(base + 8 * HOUR + r.randrange(12 * HOUR), "desk", r.random())
        for _ in range(2 * n_people):
            add(base + 6 * HOUR + r.randrange(15 * HOUR), "topup", r.randrange(1 << 30))
        evs.sort()
        return evs

    # -- the run --------------------------------------------------------------------------------
    def run(self) -> Result:
        with seeded(self._sub("secrets")), cheap_verifiers():
            try:
                self.setup()
                for day in range(self.opts.days):
                    for t, _order, kind, arg in self.day_events(day):
                        if t > self.clock.now_ms():
                            self.clock.set(t)
                        self.step += 1
                        self.net.tick()
                        self.do(kind, arg)
                        self.check(final=False)
                    self.log("day_end", day=day)
                self.heal()
                self.check(final=True)
            except Violated:
                pass
            finally:
                for term in self.terms:
                    term.close()
                if self.server.up:
                    self.server.crash()
        r = self.result
        r.faults = dict(sorted(self.faults.items()))
        r.trace_hash = self.digest.hexdigest()
        r.steps = self.step
        r.lost_payments = len(self.lost_payments)
        r.last_events = list(self.recent)
        return r

    def do(self, kind: str, arg: Any) -> None:
        now = self.clock.now_ms()
        if not self.server.up and now >= self.down_until:
            self._server_start()
        if self.later:
            ended = [x for x in self.later if x[0] <= now]
            if ended:
                self.later = [x for x in self.later if x[0] > now]
                for _t, tid in ended:
                    self.net.cut.discard(tid)
                    self.log("net.heal", t=tid)
        getattr(self, "ev_" + kind)(arg)

    def _server_start(self) -> None:
        self.server.start()
        self.log("server.start", boot=self.server.boots)

    # -- events ---------------------------------------------------------------------------------
    def ev_sync(self, ti: int) -> None:
        term = self.terms[ti]
        ok = self._guarded(term, lambda: term.sync(), "sync")
        self.log("sync", t=term.id, ok=ok, acked=term.journal.acked, version=term.cache.version)

    def _guarded(self, term: SimTerminal, fn: Any, what: str) -> Any:
        try:
            return fn()
        except Crash as exc:
            self.fault("terminal_crash", t=term.id, where=str(exc), during=what)
            term.restart()
            return None

    def ev_cut(self, arg: tuple[int, int]) -> None:
        ti, until = arg
        term = self.terms[ti]
        if term.id in self.net.cut:
            return
        self.net.cut.add(term.id)
        self.cut_at[term.id] = self.clock.now_ms()
        if until - self.clock.now_ms() < 24 * HOUR:
            self.faults["partition"] += 1
        self.log("net.cut", t=term.id, until=until)
        self.later.append((until, term.id))

    def ev_skew(self, arg: tuple[int, int]) -> None:
        ti, skew = arg
        self.terms[ti].clock.offset_ms = skew
        self.fault("clock_skew", t=self.terms[ti].id, ms=skew)

    def ev_arm_crash(self, arg: tuple[int, int]) -> None:
        ti, n = arg
        self.terms[ti].crash_in = n
        self.log("crash.armed", t=self.terms[ti].id, n=n)

    def ev_server_crash(self, down_ms: int) -> None:
        if not self.server.up:
            return
        self.server.crash()
        self.down_until = self.clock.now_ms() + down_ms
        self.fault("server_crash", down_ms=down_ms)

    def ev_backup(self, _arg: None) -> None:
        if not self.server.up:
            return
        path = self.workdir / f"backup-{self.step}.db"
        self.server.backup(path)
        self.backup = (path, self.clock.now_ms(), self.campus.topped_up, self.campus.paid_out)
        self.log("server.backup")

    def ev_restore(self, _arg: None) -> None:
        if self.backup is None:
            return
        path, t0, topped, paid = self.backup
        self.backup = None
        self.server.restore(path)
        # money the provider and the desk moved after the backup is gone from the ledger: the
        # provider's statement shows it at reconciliation (docs/security.md); tally it out
        self.campus.topped_up, self.campus.paid_out = topped, paid
        self.campus.after_restore()
        self.restored_from = t0
        # so is a phone's reverse-scan payment made since: a sale record with the proof shown
        # carries it and ingest charges the payer it names; one with the short code keyed meets
        # no payment (alarm reverse_unpaid) and charges nothing: the desk charges it
        for paid_ms, tid, order in self.campus.reverse_paid:
            if paid_ms > t0:
                if (tid, order) in self.proofs_shown:
                    self.result.proof_charged += 1
                else:
                    self.lost_payments.add((tid, order))
        self.campus.reverse_paid = [x for x in self.campus.reverse_paid if x[0] <= t0]
        self.fault("server_restore", backup_t=t0)

    def ev_settle(self, _arg: None) -> None:
        """The server's background round (sync/server/app.py): refund the reverse-scan
        payments no record will meet (sync/server/reconcile.py)."""
        if self.server.up:
            n = reconcile.settle(self.server.context)
            if n:
                self.log("server.settled", refunds=n)
            self._operator_after_restore()

    def _operator_after_restore(self) -> None:
        """The operator's look at a server recovering from a restore (docs/operations.md): a
        terminal cut off since before the backup cannot hold a record the restore took away,
        so when only such terminals are waited for, the operator ends the state with
        ``--force`` (``ykt admin server resume --force``)."""
        ctx = self.server.context
        if self.restored_from is None or recovery.state(ctx.db) is None:
            return
        since = self.restored_from
        off = {t for t in self.net.cut if self.cut_at.get(t, since + 1) <= since}
        wait = [str(w["id"]) for w in recovery.status(ctx)["waiting"]]
        if wait and set(wait) <= off:
            recovery.resume(ctx, "operator", force=True)
            self.log("server.recovery_forced", waiting=wait)

    def ev_topup(self, pick: int) -> None:
        if not self.server.up:
            return
        live = [h for h in self.campus.holders if not h.cancelled]
        h = live[pick % len(live)]
        bal = ledger.balances(self.server.context.db, h.acct)[0]
        if bal > 20_000:
            return
        amount = 10_000 * (1 + pick % 5)
        try:
            got = self.campus.topup(h, amount, self.clock.now_ms())
        except YktError as exc:
            self.log("topup.refused", acct=h.acct, code=exc.code)
            return
        self.log("topup", acct=h.acct, amount=amount, code=got.get("code"))

    def ev_desk(self, x: float) -> None:
        if not self.server.up:
            return
        ctx = self.server.context
        r = self.rng
        live = [h for h in self.campus.holders if not h.cancelled]
        h = r.choice(live)
        try:
            if x < 0.25:
                act = "report-loss" if r.random() < 0.7 else "freeze"
                accounts.change_status(ctx, h.number, act, "desk")
                self.log("desk." + act, acct=h.acct)
            elif x < 0.5:
                status = accounts.get_account(ctx, h.number)["status"]
                undo = {"lost": "unlock", "frozen": "unfreeze"}.get(status)
                if undo is None:
                    return
                accounts.change_status(ctx, h.number, undo, "desk")
                self.log("desk." + undo, acct=h.acct)
            elif x < 0.6:
                self.campus.issue(h)
                self.log("desk.reissue", acct=h.acct, card=h.card_no)
            elif x < 0.9:
                rows = ctx.db.all(
                    "SELECT id, amount FROM transfers WHERE kind = 'sale' ORDER BY id LIMIT 200"
                )
                if not rows:
                    return
                row = r.choice(rows)
                amt = max(1, int(row["amount"]) // 2)
                got = desk.refund(ctx, row["id"], amt, "diner complaint", None, "desk")
                self.log("desk.refund", transfer=row["id"], amount=amt, applied=got.get("applied"))
            elif x < 0.93:
                got = desk.cancel(ctx, h.number, "desk")
                h.cancelled = True
                self.campus.paid_out += int(got["paid_out_fen"])
                self.log("desk.cancel", acct=h.acct, paid=got["paid_out_fen"])
        except YktError as exc:
            self.log("desk.refused", acct=h.acct, code=exc.code)

    # -- a sale ---------------------------------------------------------------------------------
    def ev_sale(self, ti: int, replay: Holder | None = None) -> None:
        term, r = self.terms[ti], self.rng
        h = replay or r.choice(self.campus.holders)
        amount = r.choice((400, 600, 800, 1000, 1200, 1500, 1800, 2200, 2500))
        if r.random() < 0.03:
            amount = r.randrange(4000, 6000, 100)  # over the daily limit (R6): the password
        how = "card" if replay is None else "replay"
        if replay is None and h.phone is not None and r.random() < 0.4:
            how = "reverse" if not term.link.online and r.random() < 0.5 else "code"
        card = h.card
        if how == "card" and h.old_cards and r.random() < 0.1:
            card = r.choice(h.old_cards)  # a replaced card found in a drawer
        blocked = self._blocked(term, h, card if how == "card" else None)
        at_server = self._blocked_at_server(h, card if how == "card" else None)
        head = term.journal.head_seq
        self.dirty.add(term.id)
        key = f"{term.id} {how} {h.acct} {amount}"
        self.result.sales += 1
        torn = False
        if (
            how == "card"
            and card is not None
            and self._on("torn_write")
            and r.random() < TORN_SHARE
        ):
            # a sale is 16 APDUs (32 with the password): the tear may hit any, writes too
            card.tear_after(r.randrange(1, 34), r.choice(TEAR_MODES))
            torn = True
        try:
            shown = self._sell(term, h, card, how, amount)
        except Crash as exc:
            self.fault("terminal_crash", t=term.id, where=str(exc), during="sale")
            term.restart()
            shown = None
        finally:
            if card is not None:
                card.tear_after(None)
            if torn:
                self.faults["torn_write"] += 1
        if shown is None:
            self.log("sale.crashed", t=term.id, acct=h.acct, how=how, amount=amount)
            return
        approved = shown.get("state") == State.APPROVED
        if how == "reverse" and shown.get("method") != "qr-reverse":
            how = "card"  # the phone could not pay: the holder's card paid instead
        seq = shown.get("seq") if approved else None
        new = [
            int(row["seq"])
            for row in term.journal.db.all(
                "SELECT seq FROM journal WHERE seq > ? AND kind = 'sale' ORDER BY seq", (head,)
            )
        ]
        self.log(
            "sale",
            t=term.id,
            acct=h.acct,
            how=how,
            amount=amount,
            ok=approved,
            code=shown.get("code"),
            seq=seq,
            off=shown.get("offline"),
            torn=torn,
        )
        self.violate(inv.declined_clean(approved, new, key, seq))
        # a reverse-scan payment is the server's decision (the phone pays it online, R2 checked
        # there); the till, shown a short proof code, does not know who paid
        offline = bool(shown.get("offline")) and how != "reverse"
        self.violate(inv.hotlist(blocked, at_server, approved, offline, key))
        if approved and blocked and not offline:
            self.result.cache_behind += 1
            self.log("sale.cache_behind", t=term.id, acct=h.acct, cache=blocked)
        if approved and seq is not None:
            self.result.approved += 1
            self.approved[(term.id, int(seq))] = amount
            if how == "replay":
                self.result.replays_approved += 1
            if shown.get("offline") or how == "reverse":
                self.result.offline_approved += 1
                self.offline_approved[h.acct] += amount
        try:
            term.push()
        except Crash as exc:
            self.fault("terminal_crash", t=term.id, where=str(exc), during="push")
            term.restart()
        if how == "code" and approved and len(self.terms) > 1 and r.random() < 0.05:
            other = r.choice([i for i in range(len(self.terms)) if i != ti])
            self.log("code.replay", t=self.terms[other].id, acct=h.acct)
            self.ev_sale(other, replay=h)

    def _blocked(self, term: SimTerminal, h: Holder, card: Any) -> str | None:
        """What the terminal's cache says against this sale before it is decided."""
        acct = term.cache.account(h.acct)
        if acct is not None and acct.status != "normal":
            return f"account {acct.status}"
        if card is not None:
            no = self.campus.card_no_of(card)
            row = term.cache.card(no) if no else None
            if row is not None and row.status != "active":
                return f"card {no} {row.status}"
        return None

    def _blocked_at_server(self, h: Holder, card: Any) -> str | None:
        if not self.server.up:
            return None
        db = self.server.context.db
        status = db.scalar("SELECT status FROM accounts WHERE id = ?", (h.acct,))
        if status != "normal":
            return f"account {status}"
        no = self.campus.card_no_of(card) if card is not None else None
        if no:
            cs = db.scalar("SELECT status FROM cards WHERE card_no = ?", (no,))
            if cs is not None and cs != "active":
                return f"card {no} {cs}"
        return None

    def _sell(
        self, term: SimTerminal, h: Holder, card: Any, how: str, amount: int
    ) -> dict[str, Any]:
        e = term.engine
        e.key_amount(amount)
        if how == "replay":  # a screenshot of the code the holder just showed, at another till
            e.on_code(h.codes_made[-1])
        elif how == "code":
            e.on_code(self.campus.code(h, self.clock.now_ms()))
        elif how == "reverse":
            shown = self._reverse(term, h, amount)
            if shown is not None:
                e.cancel()
                return shown
            e.key_amount(amount)
            how = "card"
        if how == "card" and card is not None:
            present = term.reader.present(card)
            e.on_card(present)
            if e.screen()["state"] == State.WAIT_PIN:
                right = self.rng.random() < 0.9
                e.key_pin(h.password if right else "000000")
            term.reader.remove()
        shown = e.screen()
        e.cancel()  # the cashier keys the next sale
        return shown

    def _reverse(self, term: SimTerminal, h: Holder, amount: int) -> dict[str, Any] | None:
        """Reverse scan: the till shows a request, the phone pays it, the phone's proof is
        shown to the till's camera or the cashier keys the proof's code (one in five: the
        camera could not read the phone's screen; drawn apart from the run's stream).  None: the till or the phone could not (a card pays
        instead)."""
        e = term.engine
        try:
            s = e.start_reverse()
        except YktError:
            return None
        if not self.server.up:
            e.cancel()
            return None
        try:
            paid = self.campus.reverse_pay(h, str(s["request_text"]))
        except YktError as exc:
            self.log("phone.refused", acct=h.acct, code=exc.code)
            e.cancel()
            return None
        order = (str(paid["terminal_id"]), int(paid["order"]))
        if random.Random(f"{self.opts.seed}/proof/{order}").random() < 0.8:
            self.proofs_shown.add(order)  # the record carries the signed proof
            e.on_code(str(paid["proof_text"]))
            return e.screen()
        return e.key_proof_code(str(paid["proof_code"]))

    # -- invariants -----------------------------------------------------------------------------
    def _read_journals(self, everything: bool = False) -> None:
        """The sale records journaled since the last look (terminals that sold meanwhile)."""
        for term in self.terms if everything else [t for t in self.terms if t.id in self.dirty]:
            after = self.read_to.get(term.id, 0)
            rows = term.journal.db.all(
                "SELECT seq, body, amount FROM journal WHERE seq > ? AND kind = 'sale' "
                "ORDER BY seq",
                (after,),
            )
            for row in rows:
                k = (term.id, int(row["seq"]))
                self.journal_sales[k] = int(row["amount"])
                rec = JournalRecord.parse(row["body"])
                if rec.method == "qr-forward":
                    self.journal_codes[k] = rec.cred
                elif rec.method == "qr-reverse":
                    self.reverse_orders[k] = int(rec.x_value("order") or 0)
            self.read_to[term.id] = max(after, term.journal.head_seq)
        self.dirty.clear()

    def check(self, final: bool) -> None:
        """The invariants on the state as it is now.  Every step: the ledger sums to zero, the
        money in and out matches, no account is below its bound, every new ledger sale is a
        journaled one, every code pays once, the chains hold.  Every ``FULL_EVERY`` steps and at
        the end also every balance against its transfers; at the end, everything synced."""
        if not self.server.up:
            return
        db = self.server.context.db
        self._read_journals(everything=final)
        full = final or self.step % FULL_EVERY == 0
        # one statement: the ledger's sum, the channels, the wallets below zero
        total = 0
        chan: dict[Any, int] = {}
        wallets: dict[int, int] = {}
        for r in db.all(
            "SELECT 'sum' AS kind, '' AS id, 0 AS owner, COALESCE(SUM(balance), 0) AS balance "
            "FROM ledger_accounts UNION ALL SELECT kind, id, owner, balance FROM ledger_accounts "
            "WHERE kind = 'channel' OR (kind = 'wallet' AND balance < 0)"
        ):
            if r["kind"] == "sum":
                total = int(r["balance"])
            elif r["kind"] == "channel":
                chan[r["id"]] = int(r["balance"])
            else:
                wallets[int(r["owner"])] = int(r["balance"])
        fast = {"ok": total == 0, "sum_fen": total, "mismatched": []}
        check = ledger.check(db) if full else fast
        self.violate(
            inv.conservation(
                check,
                -chan.get(ledger.channel("wechat"), 0),
                chan.get(ledger.channel("cash"), 0),
                self.campus.topped_up,
                self.campus.paid_out,
            )
        )
        self._read_ledger(db)
        if final:
            lost = {k for k, o in self.reverse_orders.items() if (k[0], o) in self.lost_payments}
            self.violate(
                inv.sales_once(
                    {k: v for k, v in self.approved.items() if k not in lost},
                    {k: v for k, v in self.journal_sales.items() if k not in lost},
                    self.ledger_sales,
                    final=True,
                )
            )
        else:  # the sales the ledger gained in this step
            fresh = {k: self.ledger_sales[k] for k in self.fresh if k in self.ledger_sales}
            self.violate(inv.sales_once({}, self.journal_sales, fresh, final=False))
        self.fresh.clear()
        if self.policy_boot != self.server.boots:  # the sim never sets a policy: per boot
            self.policy_boot = self.server.boots
            self.day_cap = int(self.server.context.policy()["offline_max_card_day_fen"])
        d = self.day_cap
        days = self.opts.terminals * (self.opts.days + 1)  # terminal-days, the offline tail too
        self.violate(inv.offline_bound(wallets, self.offline_approved, d, days))
        heads = {
            str(r["id"]): (int(r["head_seq"]), str(r["head_hash"]))
            for r in db.all("SELECT id, head_seq, head_hash FROM terminals")
        }
        jheads = {t.id: (t.journal._head_seq, t.journal._head_hash) for t in self.terms}
        verified = {t.id: self._verifies(t) for t in self.terms} if final else {}
        self.violate(inv.chains(heads, jheads, verified, final))
        if self.new_codes or full:
            charges: dict[str, list[tuple[int, int]]] = {}
            for k, cred in self.journal_codes.items():
                if k in self.ledger_sales and (full or cred in self.new_codes):
                    charges.setdefault(cred, []).append(
                        (self.ledger_sales[k], self.reversals.get(k, 0))
                    )
            self.new_codes.clear()
            self.violate(inv.code_once(charges))
        if final:
            self._check_final(db)

    def _read_ledger(self, db: Any) -> None:
        """The sales and reversals the ledger gained since the last look (all of them again
        after a restore: the ledger went back)."""
        if self.server.boots != self.ledger_boot:
            self.ledger_boot, self.ledger_row = self.server.boots, 0
            self.ledger_sales.clear()
            self.reversals.clear()
            self.fresh.clear()
            self.rev_payments = 0
        # the new sales and reversals, then one row ('' as id) with the ledger's last row and
        # the reverse-scan payments settled so far (all before the first one still open)
        for row in db.all(
            "SELECT rowid AS r, id, amount FROM transfers WHERE rowid > ? "
            "AND kind IN ('sale', 'reversal') UNION ALL "
            "SELECT (SELECT COALESCE(MAX(rowid), 0) FROM transfers), '', "
            "(SELECT COALESCE(MIN(id) - 1, (SELECT COALESCE(MAX(id), 0) FROM reverse_payments)) "
            "FROM reverse_payments WHERE journal_seq IS NULL) ORDER BY 1, 2 DESC",
            (self.ledger_row,),
        ):
            if row["id"] == "":
                top, rev_to = int(row["r"]), int(row["amount"])
                continue
            self.ledger_row = max(self.ledger_row, int(row["r"]))
            what, tid, seq = str(row["id"]).split(":")
            k = (tid, int(seq))
            if what == "sale":
                self.ledger_sales[k] = int(row["amount"])
                self.fresh.add(k)
            elif what == "reversal":
                self.reversals[k] = int(row["amount"])
                cred = self.journal_codes.get(k)
                if cred:
                    self.new_codes.add(cred)
            if what == "sale" and k in self.journal_codes:
                self.new_codes.add(self.journal_codes[k])
        self.ledger_row = max(self.ledger_row, top)
        # a reverse-scan sale: the phone's payment (rsale:T:ORDER), linked to its record,
        # less a refund made before the record came, plus the late charge then (reconcile.py)
        for row in db.all(
            "SELECT p.terminal_id, p.journal_seq, p.amount - COALESCE(f.amount, 0) "
            "+ COALESCE(l.amount, 0) AS net FROM reverse_payments p "
            "LEFT JOIN refunds f ON f.transfer_id = p.refund_id "
            "LEFT JOIN transfers l ON l.id = 'rsale-late:' || p.terminal_id || ':' "
            "|| CAST(p.order_no AS TEXT) WHERE p.journal_seq IS NOT NULL AND p.id > ?",
            (self.rev_payments,),
        ):
            k = (str(row["terminal_id"]), int(row["journal_seq"]))
            self.ledger_sales[k] = int(row["net"])
            self.fresh.add(k)
        self.rev_payments = rev_to

    def _check_final(self, db: Any) -> None:
        server_recs: dict[str, set[int]] = {}
        for r in db.all("SELECT terminal_id, seq FROM records"):
            server_recs.setdefault(str(r["terminal_id"]), set()).add(int(r["seq"]))
        journal_recs = {
            t.id: {int(r["seq"]) for r in t.journal.db.all("SELECT seq FROM journal")}
            for t in self.terms
        }
        self.violate(inv.nothing_lost(server_recs, journal_recs))
        holds = 0
        for t in self.terms:  # a hold above the head waits for the next record (no TTL)
            holds += int(
                db.scalar(
                    "SELECT COUNT(*) FROM holds WHERE terminal_id = ? AND seq <= ?",
                    (t.id, t.journal.head_seq),
                )
            )
        open_rev = int(
            db.scalar(
                "SELECT COUNT(*) FROM reverse_payments "
                "WHERE journal_seq IS NULL AND refund_id IS NULL"
            )
        )
        self.violate(inv.settled(holds, open_rev, recovery.state(db) is not None))

    @staticmethod
    def _journal_head(t: SimTerminal) -> tuple[int, str]:
        row = t.journal.db.one("SELECT seq, hash FROM journal ORDER BY seq DESC LIMIT 1")
        if row is None:
            return 0, protocol.genesis_hash(t.id)
        return int(row["seq"]), str(row["hash"])

    @staticmethod
    def _verifies(t: SimTerminal) -> bool:
        try:
            t.journal.verify(t.key.public)
        except YktError:
            return False
        return True

    # -- the heal -------------------------------------------------------------------------------
    def heal(self) -> None:
        """Every fault ends: the network heals, clocks are set right, the server is up; every
        terminal syncs until the server has its whole journal and it has the whole feed."""
        self.step += 1
        self.clock.advance(HOUR)
        self.net.heal()
        self.later.clear()
        if not self.server.up:
            self._server_start()
        for t in self.terms:
            t.clock.offset_ms = 0
            t.crash_in = None
        self.log("heal")
        for _round in range(20):
            for t in self.terms:
                t.sync(force=True)
            db = self.server.context.db
            heads = {
                str(r["id"]): int(r["head_seq"])
                for r in db.all("SELECT id, head_seq FROM terminals")
            }
            if all(
                heads.get(t.id) == t.journal.head_seq and t.journal.queued == 0 for t in self.terms
            ):
                break
            self.clock.advance(MIN)
        for t in self.terms:
            t.sync(force=True)
        self.log("healed")


def _scratch() -> str | None:
    """Where a run keeps its databases: in memory (``/dev/shm``) where there is one.  The crash
    model does not need a disk: a terminal or server crash is a process crash, which keeps every
    committed transaction (the operating system, which survives, holds it) and loses what was
    not committed; nothing in the simulator ever drops the page cache."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def run_fleet(opts: Options, trace_path: Path | None = None) -> Result:
    work = Path(tempfile.mkdtemp(prefix="ykt-fleet-", dir=_scratch()))
    trace = trace_path.open("w", encoding="utf-8") if trace_path else None
    try:
        return Fleet(opts, work, trace).run()
    finally:
        if trace is not None:
            trace.close()
        shutil.rmtree(work, ignore_errors=True)
