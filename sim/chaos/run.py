"""The real-process chaos run (``ykt sim chaos``): a real ``ykt server`` and N real ``ykt pos``
agents (started by :mod:`sim.harness.ykt`), each agent on simulated hardware (a ``sim://``
reader; the cards are files in one folder all agents share, so a card's counters go from till
to till) and behind its own :class:`sim.chaos.proxy.FaultProxy` on its way to the server.

While one driver thread per terminal runs scripted sales through the agent's control API (card
sales, over-limit sales with the consumption password, phone-code sales), a chaos thread
switches the proxies' faults (partitions, blackholes, delay, connections cut mid-request and
mid-answer, trickle), SIGKILLs terminals and the server and restarts them, and reports cards
lost and unlocks them at the server.  Then it heals (proxies clean, everything running, every
terminal's queue empty) and checks the invariants of :mod:`sim.chaos.check` through the admin
API, the terminals' journals and ``ykt admin ledger check``.

The schedule (which fault, which card, which amount, the pauses) comes from the seed; the
processes themselves are not deterministic (when a signal lands, when bytes arrive), so the
same seed runs the same script, not the same interleaving.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from edge import identity
from edge.errors import EdgeError
from edge.journal import Journal
from sim import wallet, wallet_codes
from sim.chaos import check
from sim.chaos.check import JournalSale, SaleSeen, Violation
from sim.chaos.proxy import FaultProxy, Mode
from sim.control import AgentControl
from sim.errors import SimError, SimUsageError
from sim.harness.pg import TempCluster
from sim.harness.procs import StartFailed, free_port, poll, ykt_cmd
from sim.harness.ykt import PosProcess, ServerProcess
from sync import codes
from sync.clock import SystemClock
from sync.db import Database
from sync.errors import SyncError
from sync.records import JournalRecord

__all__ = ["ChaosConfig", "ChaosRun", "run_chaos"]

log = logging.getLogger("ykt.chaos")

#: faults a terminal's proxy is switched to, with their weights
PROXY_FAULTS: tuple[tuple[Mode, int], ...] = (
    (Mode.PARTITION, 2),
    (Mode.BLACKHOLE, 1),
    (Mode.DELAY, 1),
    (Mode.CUT_REQUEST, 2),
    (Mode.CUT_ANSWER, 3),
    (Mode.TRICKLE, 1),
)
#: the chaos thread's actions, with their weights
ACTIONS: tuple[tuple[str, int], ...] = (
    ("proxy", 8),
    ("partition_all", 1),
    ("kill_pos", 3),
    ("kill_server", 2),
    ("loss", 3),
    ("desk", 3),
)
SALE_KINDS = ("card", "pin", "code", "reverse")
_W = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def id_card(n: int) -> str:
    """A valid (GB 11643) ID-card number, different for every n below 1000."""
    body = f"510102{20040101 + n // 1000:08d}{n % 1000:03d}"
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, _W, strict=True)) % 11]


def initial_password(n: int) -> str:
    """R3: both passwords start as the ID-card number's last six digits (the check letter X
    left out)."""
    card = id_card(n)
    return card[-7:-1] if card[-1] == "X" else card[-6:]


@dataclass
class ChaosConfig:
    seconds: float = 20.0
    terminals: int = 2
    seed: int = 1
    #: where the processes keep their data and logs (None: a temporary folder, removed when
    #: the run finds nothing)
    dir: Path | None = None
    accounts: int = 0  # 0: 3 per terminal, at least 6
    #: the server's database: "sqlite" (in its data directory), "postgres" (a throwaway
    #: cluster started for the run, sim/harness/pg.py) or a PostgreSQL URL
    db: str = "sqlite"
    #: how long the heal may take (every queue empty), seconds
    heal_s: float = 90.0


@dataclass
class Account:
    n: int
    number: str
    card_no: str
    password: str
    phone: Path | None = None


@dataclass
class Lost:
    account: Account
    version: int
    unlock_sent: float | None = None


@dataclass
class Terminal:
    index: int
    proc: PosProcess
    proxy: FaultProxy
    up: threading.Event = field(default_factory=threading.Event)
    #: set while the driver waits for the agent's answer to a sale
    selling: threading.Event = field(default_factory=threading.Event)
    terminal_id: str = ""

    @property
    def name(self) -> str:
        return f"pos-{self.index}"


class ChaosRun:
    def __init__(self, cfg: ChaosConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.temp = cfg.dir is None
        self.dir = cfg.dir or Path(tempfile.mkdtemp(prefix="ykt-chaos-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.server = ServerProcess(self.dir / "server", log_path=self.dir / "server.log")
        self.pg: TempCluster | None = None
        self.terminals: list[Terminal] = []
        self.accounts: list[Account] = []
        self.seen: list[SaleSeen] = []
        self.lost: dict[str, Lost] = {}  # card_no ->
        self.lock = threading.Lock()
        self.busy: set[str] = set()  # card numbers lying on a reader right now
        self.used_amounts: set[int] = set()
        self.stop = threading.Event()
        self.counts: Counter[str] = Counter()
        self.violations: list[Violation] = []
        self.events: list[str] = []
        #: seconds after the heal began at which each terminal was online with an empty queue
        self.synced_after: dict[str, float] = {}
        self.t0 = time.monotonic()

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        try:
            self.setup()
            self.event(f"setup done in {time.monotonic() - started:.1f}s")
            workers = [
                threading.Thread(target=self._guard(self.drive, t), name=t.name, daemon=True)
                for t in self.terminals
            ]
            chaos = threading.Thread(target=self._guard(self.chaos), name="chaos", daemon=True)
            for th in (*workers, chaos):
                th.start()
            self.stop.wait(self.cfg.seconds)
            self.stop.set()
            for th in (chaos, *workers):
                th.join(60)
            self.event("chaos over; healing")
            self.heal()
            self.check()
        except (StartFailed, SyncError, SimError, EdgeError, OSError) as exc:
            self.violations.append(Violation("run", f"the run could not go on: {exc}"))
        except Exception as exc:  # a driver bug: still exit 1 with the logs kept
            log.exception("chaos run failed")
            self.violations.append(Violation("run", f"the run failed: {exc!r}"))
        finally:
            self.teardown()
        return self.result(time.monotonic() - started)

    def _guard(self, fn: Callable[..., None], *args: Any) -> Callable[[], None]:
        def run() -> None:
            try:
                fn(*args)
            except Exception as exc:  # a driver bug must end as a violation, not a hang
                log.exception("chaos thread failed")
                self.violations.append(Violation("run", f"{fn.__name__} failed: {exc!r}"))
                self.stop.set()

        return run

    def event(self, what: str) -> None:
        line = f"{time.monotonic() - self.t0:7.2f}s {what}"
        log.info("%s", line)
        with self.lock:
            self.events.append(line)

    # -- setup --------------------------------------------------------------------------------
    def setup(self) -> None:
        n_term = self.cfg.terminals
        if self.cfg.db == "postgres":
            self.pg = TempCluster(durable=True).start()
            self.server.db_url = self.pg.create_database("chaos")
        elif self.cfg.db != "sqlite":
            self.server.db_url = self.cfg.db
        self.server.start()
        count = self.cfg.accounts or max(6, 3 * n_term)
        for n in range(1, count + 1):
            self.accounts.append(self._account(n))
        cards = self.dir / "cards"
        cards.mkdir(exist_ok=True)
        for k in range(1, n_term + 1):
            # a port of this xdist worker's residue class (sim/harness/procs.py), as the
            # harness's children get
            proxy = FaultProxy(self.server.port, self.cfg.seed * 1000 + k, free_port()).start()
            data = self.dir / f"pos-{k}"
            proc = PosProcess(
                data,
                server_url=f"http://127.0.0.1:{proxy.port}",
                token=self.server.enroll_token(f"chaos-{k}"),
                reader=f"sim://r{k}?cards={cards}",
                seed=self.cfg.seed * 1000 + k,
                log_level="INFO",
                log_path=self.dir / f"pos-{k}.log",
            )
            term = Terminal(k, proc, proxy)
            self.terminals.append(term)
            proc.start()
            proc.token = None  # later starts reuse the identity
            term.terminal_id = str(proc.status()["terminal_id"])
            term.up.set()
        wallets = self.dir / "phones"
        wallets.mkdir(exist_ok=True)
        for a in self.accounts[::2]:
            w = wallet.login(self.server.url, a.number, a.password)  # the phone's own network
            a.phone = wallets / f"{a.number}.json"
            w.save(a.phone)
        phones = len(self.accounts[::2])
        for t in self.terminals:

            def fed(t: Terminal = t) -> bool:
                c = t.proc.status()["cache"]
                return bool(c["cards"] >= len(self.accounts) and c.get("certs", 0) >= phones)

            self._wait(
                fed,
                30,
                f"{t.name} never got every card and wallet certificate from the feed",
            )

    def _account(self, n: int) -> Account:
        number = f"C{self.cfg.seed % 1000:03d}{n:03d}"
        # a third of the accounts are poor: their offline sales overdraw them
        topup = 3000 if n % 3 == 0 else 100000
        body = {"number": number, "name": f"混沌{n}", "type": "student", "id_card": id_card(n)}
        self.server.admin_call("POST", "/v1/admin/accounts", body)
        self.server.admin_call(
            "POST", f"/v1/admin/accounts/{number}/topups", {"amount_fen": topup, "channel": "cash"}
        )
        card = self.server.admin_call("POST", f"/v1/admin/accounts/{number}/cards", {})
        return Account(n, number, str(card["card_no"]), initial_password(n))

    def _wait(self, pred: Callable[[], Any], timeout: float, what: str) -> Any:
        def ok() -> Any:
            try:
                return pred()
            except (requests.RequestException, SimError, ValueError, KeyError):
                return None

        got = poll(ok, timeout, 0.1)
        if not got:
            raise SimError(what)
        return got

    # -- the sales ----------------------------------------------------------------------------
    def drive(self, t: Terminal) -> None:
        rng = random.Random(self.cfg.seed * 7919 + t.index)
        ctl = AgentControl(t.proc.url, timeout=15, token_file=t.proc.data / "control.token")
        while not self.stop.is_set():
            if not t.up.wait(0.5):
                continue
            how = rng.choices(SALE_KINDS, (5, 2, 2, 2))[0]
            if t.proxy.mode in (Mode.PARTITION, Mode.BLACKHOLE) and rng.random() < 0.5:
                how = "reverse"  # the till is cut off and the phones are not: R8's case
            with self._card(rng, phone=how in ("code", "reverse")) as acct:
                if acct is None:
                    self.stop.wait(0.05)
                    continue
                self._sale(t, ctl, rng, how, acct)
            self.stop.wait(rng.uniform(0.01, 0.15))

    @contextmanager
    def _card(self, rng: random.Random, phone: bool) -> Iterator[Account | None]:
        """A card (or phone) no other till holds right now: one card is at one till at once."""
        with self.lock:
            free = [
                a for a in self.accounts if a.card_no not in self.busy and (a.phone or not phone)
            ]
            acct = rng.choice(free) if free else None
            if acct is not None:
                self.busy.add(acct.card_no)
        try:
            yield acct
        finally:
            if acct is not None:
                with self.lock:
                    self.busy.discard(acct.card_no)

    def _amount(self, rng: random.Random, lo: int, hi: int) -> int:
        """A fen amount no other sale of the run has: an amount names its sale."""
        with self.lock:
            amount = rng.randint(lo, hi)
            while amount in self.used_amounts:
                amount += 1
            self.used_amounts.add(amount)
            return amount

    def _lost_known(self, t: Terminal, ctl: AgentControl, acct: Account) -> bool:
        """Whether the card's loss report has reached the terminal's cache (and no unlock was
        sent since)."""
        with self.lock:
            lost = self.lost.get(acct.card_no)
        if lost is None or lost.unlock_sent is not None:
            return False
        return int(ctl.status()["feed_version"]) >= lost.version

    def _still_lost(self, acct: Account, before: bool) -> bool:
        with self.lock:
            lost = self.lost.get(acct.card_no)
        return before and lost is not None and lost.unlock_sent is None

    def _sale(
        self, t: Terminal, ctl: AgentControl, rng: random.Random, how: str, acct: Account
    ) -> None:
        # "pin": over the daily limit (R6), the consumption password is keyed
        lo, hi = (2000, 4900) if how == "pin" else (100, 1999)
        amount = self._amount(rng, lo, hi)
        seen = SaleSeen(t.terminal_id, how, acct.number, acct.card_no, amount, "in_doubt")
        skipped = False
        try:
            known = self._lost_known(t, ctl, acct)
            t.selling.set()
            if how == "reverse":
                got = self._reverse(ctl, rng, acct, amount, seen)
                if got is None:  # not tried: the till is online
                    skipped = True
                    return
                out = got
            elif how == "code":
                assert acct.phone is not None
                w = wallet.Wallet.load(acct.phone)
                text = str(wallet_codes.make_code(w, acct.phone, codes.Kind.PAY)["text"])
                keyed = ctl.amount(amount)
                ctl.code_text(text)
                out = ctl.wait(keyed["version"], ("approved", "declined"), ctl.timeout)
            else:
                out = ctl.sale(amount, acct.card_no, pin=acct.password)
            seen.outcome = "approved" if out.get("approved") else "declined"
            seen.seq = out.get("seq")
            seen.offline = bool(out.get("offline"))
            seen.code = out.get("code")
            seen.reason = out.get("reason")
            seen.lost_known = self._still_lost(acct, known)
        except SimError as exc:  # the agent died, or did not answer in time
            seen.code = f"in doubt: {exc}"[:200]
            with suppress(SimError):
                ctl.cancel()
        finally:
            t.selling.clear()
            if not skipped:
                with self.lock:
                    self.seen.append(seen)
                self.counts[f"{how}_{seen.outcome}"] += 1

    def _reverse(
        self,
        ctl: AgentControl,
        rng: random.Random,
        acct: Account,
        amount: int,
        seen: SaleSeen,
    ) -> dict[str, Any] | None:
        """Reverse scan (R8, offline only): the till shows a payment request, the phone pays
        it at the server (its own network), the cashier keys the proof's short code.  None:
        not tried (the till is online)."""
        assert acct.phone is not None
        if ctl.status()["online"]:
            return None
        try:
            req = ctl.reverse(amount)
        except SimUsageError:  # back online meanwhile: the till refuses a reverse scan
            ctl.cancel()
            return None
        w = wallet.Wallet.load(acct.phone)
        try:
            paid = wallet_codes.scan(w, req["request_text"], acct.password, path=acct.phone)
        except SimError as exc:  # the phone could not pay (or does not know it did)
            ctl.cancel()  # the till closes the request with a void: any payment is refunded
            return {"approved": False, "code": "phone_failed", "reason": str(exc)[:200]}
        seen.order = int(req["order"])
        if rng.random() < 0.2:  # paid, but the cashier cancels: the void refunds the payment
            ctl.cancel()
            return {"approved": False, "code": "cancelled_after_pay"}
        return ctl.proof_code(str(paid["proof_code"]))

    # -- the faults ---------------------------------------------------------------------------
    def chaos(self) -> None:
        rng = random.Random(self.cfg.seed * 104729)
        first = [a for a, _ in ACTIONS]  # every kind once first, in a seeded order
        rng.shuffle(first)
        clean_at: dict[int, float] = {}  # a proxy fault lasts a while, then heals by itself
        while not self.stop.wait(rng.uniform(0.2, 1.2)):
            now = time.monotonic()
            for t in self.terminals:
                if clean_at.get(t.index, now + 1) <= now:
                    del clean_at[t.index]
                    t.proxy.set_mode(Mode.CLEAN)
                    self.event(f"{t.name} proxy clean")
            if first:
                action = first.pop()
            else:
                action = rng.choices([a for a, _ in ACTIONS], [w for _, w in ACTIONS])[0]
            self.counts[action] += 1
            if action == "proxy":
                t = rng.choice(self.terminals)
                mode = rng.choices([m for m, _ in PROXY_FAULTS], [w for _, w in PROXY_FAULTS])[0]
                lasts = rng.uniform(0.5, 5.0)
                self.event(f"{t.name} proxy {mode} for {lasts:.1f}s")
                t.proxy.set_mode(mode)
                clean_at[t.index] = time.monotonic() + lasts
            elif action == "partition_all":
                mode = rng.choice((Mode.PARTITION, Mode.BLACKHOLE))
                lasts = rng.uniform(1.0, 6.0)
                self.event(f"every proxy {mode} for {lasts:.1f}s")
                for t in self.terminals:
                    t.proxy.set_mode(mode)
                    clean_at[t.index] = time.monotonic() + lasts
            elif action == "kill_pos":
                t = rng.choice(self.terminals)
                if rng.random() < 0.5:  # half of the kills land while a sale is under way
                    t.selling.wait(2.0)
                    time.sleep(rng.uniform(0.0, 0.05))  # somewhere in the sale
                self.kill_pos(t, rng.uniform(0.0, 1.5))
            elif action == "kill_server":
                self.kill_server(rng.uniform(0.0, 2.0))
            elif action == "desk":
                self.desk(rng)
            else:
                self.loss_or_unlock(rng)

    def kill_pos(self, t: Terminal, down_s: float) -> None:
        self.event(f"SIGKILL {t.name} for {down_s:.1f}s")
        t.up.clear()
        proc = t.proc.proc
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        t.proc.stop()  # closes the log of the killed process
        t.proc.proc = None
        time.sleep(down_s)  # the terminal stays down this long (no event to await)
        t.proc.start()
        t.up.set()
        self.counts["pos_restarts"] += 1

    def kill_server(self, down_s: float) -> None:
        self.event(f"SIGKILL server for {down_s:.1f}s")
        self.server.stop(signal.SIGKILL)
        self.server.proc = None
        time.sleep(down_s)  # the server stays down this long (no event to await)
        self.server.start()
        self.counts["server_restarts"] += 1

    def desk(self, rng: random.Random) -> None:
        """The desk tops up in cash an account an overdraft froze (R12), or any account, and
        unfreezes it, so its card goes on paying."""
        try:
            states = {
                a.number: self.server.admin_call("GET", f"/v1/admin/accounts/{a.number}")["status"]
                for a in self.accounts
            }
            frozen = sorted(n for n, st in states.items() if st == "frozen")
            number = rng.choice(frozen) if frozen else rng.choice(self.accounts).number
            self.server.admin_call(
                "POST",
                f"/v1/admin/accounts/{number}/topups",
                {"amount_fen": 20000, "channel": "cash"},
            )
            self.counts["topups"] += 1
            if states[number] == "frozen":
                self.server.admin_call(
                    "POST", f"/v1/admin/accounts/{number}/status", {"action": "unfreeze"}
                )
                self.counts["unfreezes"] += 1
            self.event(f"desk: {number} was {states[number]}, topped up 200.00")
        except (SyncError, requests.RequestException) as exc:
            self.event(f"desk: not answered: {exc}")

    def loss_or_unlock(self, rng: random.Random) -> None:
        with self.lock:
            lost = list(self.lost.values())
        if lost and (len(lost) >= 2 or rng.random() < 0.5):
            item = rng.choice(lost)
            with self.lock:
                item.unlock_sent = time.monotonic()
            try:
                self.server.admin_call(
                    "POST", f"/v1/admin/accounts/{item.account.number}/status", {"action": "unlock"}
                )
                self.event(f"unlock {item.account.number}")
                self.counts["unlocks"] += 1
            except (SyncError, requests.RequestException) as exc:
                self.event(f"unlock {item.account.number} not answered: {exc}")
            with self.lock:
                self.lost.pop(item.account.card_no, None)
            return
        acct = rng.choice([a for a in self.accounts if a.card_no not in self.lost])
        try:
            got = self.server.admin_call(
                "POST", f"/v1/admin/accounts/{acct.number}/status", {"action": "report-loss"}
            )
            version = int(requests.get(self.server.url + "/v1/health", timeout=5).json()["version"])
        except (SyncError, requests.RequestException, ValueError) as exc:
            self.event(f"loss of {acct.number} not answered: {exc}")
            return
        if got.get("status") != "lost":
            self.event(f"loss of {acct.number}: status {got.get('status')}")
            return
        self.event(f"loss of {acct.number} (feed version {version})")
        self.counts["losses"] += 1
        with self.lock:
            self.lost[acct.card_no] = Lost(acct, version)

    # -- heal and check -----------------------------------------------------------------------
    def heal(self) -> None:
        for t in self.terminals:
            t.proxy.set_mode(Mode.CLEAN)
        if not self.server.running():
            self.server.proc = None
            self.server.start()
        for t in self.terminals:
            if not t.proc.running():
                t.proc.proc = None
                t.proc.start()
        started = time.monotonic()
        for t in self.terminals:

            def synced(t: Terminal = t) -> bool:
                s = t.proc.status()
                return bool(s["queued"] == 0 and s["online"])

            try:
                self._wait(
                    synced,
                    max(1.0, self.cfg.heal_s - (time.monotonic() - started)),
                    f"{t.name} never synced",
                )
                self.synced_after[t.name] = round(time.monotonic() - started, 1)
                self.event(f"{t.name} synced")
            except SimError:
                status = None
                with suppress(requests.RequestException, ValueError):
                    status = t.proc.status()
                self.violations.append(
                    Violation(
                        "heal", f"{t.name} did not sync within {self.cfg.heal_s:.0f}s", status
                    )
                )
        self.heal_s = round(time.monotonic() - started, 1)
        for t in self.terminals:
            t.proc.stop()

    def journal(self, t: Terminal) -> tuple[int | str, list[JournalSale]]:
        found = identity.load(t.proc.data)
        assert found is not None
        ident, key = found
        j = Journal(
            Database(t.proc.data / "journal.db", synchronous="FULL"),
            ident.terminal_id,
            key,
            SystemClock(),
            ident.tz,
        )
        try:
            try:
                verified: int | str = j.verify()
            except EdgeError as exc:
                verified = str(exc)
            sales = []
            for r in j.db.all("SELECT body FROM journal ORDER BY seq"):
                rec = JournalRecord.parse(r["body"].encode())
                if rec.kind in ("sale", "void"):
                    order = rec.x.get("order") if isinstance(rec.x, dict) else None
                    sales.append(
                        JournalSale(rec.term, rec.seq, rec.amt, rec.acct, rec.off, order, rec.kind)
                    )
            return verified, sales
        finally:
            j.db.close()

    def check(self) -> None:
        verified: dict[str, int | str] = {}
        journals: dict[str, list[JournalSale]] = {}
        for t in self.terminals:
            verified[t.terminal_id], journals[t.terminal_id] = self.journal(t)
        heads = {
            str(r["id"]): int(r["head_seq"])
            for r in self.server.admin_call("GET", "/v1/admin/terminals")["terminals"]
        }
        alarms = self.server.admin_call("GET", "/v1/admin/alarms")["alarms"]
        policy = self.server.admin_call("GET", "/v1/admin/policy")
        bound = len(self.terminals) * int(policy["offline_max_card_day_fen"])
        accounts: list[dict[str, Any]] = []
        ledger_sales: dict[str, int] = {}
        refunds: dict[str, int] = {}
        for a in self.accounts:
            got = self.server.admin_call("GET", f"/v1/admin/accounts/{a.number}")
            accounts.append(got)
            for b in got["bills"]:
                if b["kind"] == "sale":
                    ledger_sales[str(b["id"])] = -int(b["amount_fen"])
                elif b["kind"] == "refund":
                    refunds[str(b["id"])] = int(b["amount_fen"])
        ledger = self.ledger_check()
        seen = list(self.seen)
        self.violations += check.check_ledger(ledger)
        self.violations += check.check_approved_in_journal(seen, journals)
        self.violations += check.check_ledger_sales(journals, ledger_sales, refunds)
        self.violations += check.check_chains(verified, heads, alarms)
        self.violations += check.check_bound(accounts, bound)
        self.violations += check.check_losses(seen)
        self.counts["journal_sales"] = sum(
            j.kind == "sale" for sales in journals.values() for j in sales
        )
        self.counts["journal_voids"] = sum(
            j.kind == "void" for sales in journals.values() for j in sales
        )
        self.counts["refunded_reverse"] = sum(r.startswith("rrefund:") for r in refunds)
        self.counts["ledger_sales"] = len(ledger_sales)
        self.counts["min_balance_fen"] = min(int(a["balance_fen"]) for a in accounts)
        self.counts["bound_fen"] = bound
        self.counts["alarms"] = len(alarms)
        self.alarm_kinds = sorted({str(a["kind"]) for a in alarms})

    def ledger_check(self) -> dict[str, Any]:
        """``ykt admin ledger check --json``, as the operator runs it."""
        out = subprocess.run(
            ykt_cmd(
                "admin",
                "--server",
                self.server.url,
                "--token-file",
                str(self.server.token_file),
                "ledger",
                "check",
                "--json",
            ),
            capture_output=True,
            text=True,
            timeout=60,
        )
        try:
            got = json.loads(out.stdout)
        except ValueError:
            got = {"ok": False, "stdout": out.stdout, "stderr": out.stderr[-2000:]}
        got["exit_code"] = out.returncode
        if out.returncode != 0:
            got["ok"] = False
        return dict(got)

    def teardown(self) -> None:
        for t in self.terminals:
            with suppress(Exception):
                t.proc.stop(signal.SIGKILL)
            with suppress(Exception):
                t.proxy.stop()
        with suppress(Exception):
            self.server.stop(signal.SIGKILL)
        if self.pg is not None:
            with suppress(Exception):
                self.pg.stop()
            with suppress(Exception):
                self.pg.cleanup()

    def result(self, elapsed: float) -> dict[str, Any]:
        seen = self.seen
        faults: Counter[str] = Counter()
        for t in self.terminals:
            faults.update(t.proxy.counts)
        out: dict[str, Any] = {
            "seed": self.cfg.seed,
            "terminals": self.cfg.terminals,
            "seconds": self.cfg.seconds,
            "db": "postgres" if self.server.db_url else "sqlite",
            "sales": len(seen),
            "approved": sum(s.outcome == "approved" for s in seen),
            "offline_approved": sum(s.outcome == "approved" and s.offline for s in seen),
            "declined": sum(s.outcome == "declined" for s in seen),
            "in_doubt": sum(s.outcome == "in_doubt" for s in seen),
            "by_kind": {
                k: v for k, v in sorted(self.counts.items()) if k.split("_")[0] in SALE_KINDS
            },
            "declined_codes": dict(
                Counter(str(s.code) for s in seen if s.outcome == "declined").most_common()
            ),
            "declined_reasons": dict(
                Counter(str(s.reason) for s in seen if s.outcome == "declined").most_common(8)
            ),
            "lost_card_refusals": sum(s.lost_known and s.outcome == "declined" for s in seen),
            "chaos": {
                k: self.counts[k]
                for k in (
                    "proxy",
                    "partition_all",
                    "kill_pos",
                    "kill_server",
                    "losses",
                    "unlocks",
                    "pos_restarts",
                    "server_restarts",
                    "topups",
                    "unfreezes",
                )
            },
            "proxy": dict(sorted(faults.items())),
            "checked": {
                k: self.counts[k]
                for k in (
                    "journal_sales",
                    "journal_voids",
                    "ledger_sales",
                    "refunded_reverse",
                    "min_balance_fen",
                    "bound_fen",
                    "alarms",
                )
            },
            "heal_s": getattr(self, "heal_s", None),
            "synced_after_s": self.synced_after,
            "alarm_kinds": getattr(self, "alarm_kinds", []),
            "violations": [v.to_json() for v in self.violations],
            "elapsed_s": round(elapsed, 1),
            "dir": str(self.dir),
        }
        if self.violations:
            (self.dir / "events.log").write_text("\n".join(self.events) + "\n")
            (self.dir / "sales.jsonl").write_text(
                "".join(json.dumps(s.to_json(), ensure_ascii=False) + "\n" for s in seen)
            )
        elif self.temp:
            shutil.rmtree(self.dir, ignore_errors=True)
            out["dir"] = None
        return out


def run_chaos(cfg: ChaosConfig) -> dict[str, Any]:
    return ChaosRun(cfg).run()
