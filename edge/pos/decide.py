"""How a POS decides a sale: online (ask the server, which holds the amount) or, when the
server cannot be reached, offline from the caches, the journal and the risk limits (SPEC §3).

Either way an approval is journaled (durably) before it is returned.  Rules come from
:mod:`edge.rules`: R2 (blocking statuses), R5/R6 (limit and consumption password), R11 (replaced
cards), R13 (expiry).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from drivers.reader.base import CardTap
from edge import rules
from edge.cache import Cache
from edge.clock import Clock, campus_date
from edge.journal import Journal
from edge.link import Link
from edge.money import format_fen
from edge.passwords import verify_password
from sync.client import ServerClient
from sync.errors import ApiError, AuthError, NetworkError, ProtocolError

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    approved: bool
    code: str  # ok | needs_pin | declined | wrong_pin | pin_locked | insufficient | risk_limit …
    reason: str
    offline: bool
    balance_fen: int | None = None
    seq: int | None = None
    account: dict[str, Any] = field(default_factory=dict)
    tries_left: int | None = None
    method: str = "card"


class Decider:
    def __init__(
        self,
        journal: Journal,
        cache: Cache,
        client: ServerClient,
        link: Link,
        clock: Clock,
        tz: str,
        operator: str = "",
    ) -> None:
        self.journal = journal
        self.cache = cache
        self.client = client
        self.link = link
        self.clock = clock
        self.tz = tz
        self.operator = operator

    # -- entry --------------------------------------------------------------------------------
    def decide(self, tap: CardTap, amount_fen: int, pin: str | None) -> Outcome:
        if self.link.try_online():
            try:
                return self._online(tap, amount_fen, pin)
            except NetworkError as exc:
                self.link.down(str(exc))
                log.warning("server unreachable, deciding offline: %s", exc)
            except AuthError as exc:
                self.link.down(str(exc))
                log.error("server refused this terminal (%s); deciding offline", exc)
            except (ApiError, ProtocolError) as exc:
                if isinstance(exc, ApiError) and exc.status < 500:
                    return Outcome(False, "declined", f"server refused the sale: {exc}", False)
                self.link.down(str(exc))
                log.warning("server error, deciding offline: %s", exc)
        return self._offline(tap, amount_fen, pin)

    def _record(self, tap: CardTap, acct_id: int, amount: int, **kw: Any) -> dict[str, Any]:
        rec = {
            "ts": self.clock.now_ms(),
            "kind": "sale",
            "acct": acct_id,
            "cred": f"card:{tap.card_no}:{tap.uid}",
            "amt": amount,
            "method": "card",
            "off": False,
            "pin": "none",
            "spent": 0,
            "lim": 0,
            "bal": None,
            "op": self.operator,
            "auth": None,
        }
        rec.update(kw)
        return rec

    # -- online -------------------------------------------------------------------------------
    def _online(self, tap: CardTap, amount: int, pin: str | None) -> Outcome:
        seq = self.journal.next_seq
        req: dict[str, Any] = {
            "seq": seq,
            "card_no": tap.card_no,
            "uid": tap.uid,
            "amount_fen": amount,
            "method": "card",
        }
        if pin is not None:
            req["pin"] = pin
        resp = self.client.authorize(req)
        self.link.up()
        account: dict[str, Any] = {
            k: resp[k] for k in ("account_id", "number", "name") if k in resp
        }
        if not resp["approved"]:
            return Outcome(
                False,
                resp["code"],
                resp["reason"],
                False,
                balance_fen=resp.get("balance_fen"),
                account=account,
                tries_left=resp.get("tries_left"),
            )
        rec = self._record(
            tap,
            resp["account_id"],
            amount,
            pin=resp["pin"],
            spent=resp["spent_fen"],
            lim=resp["limit_fen"],
            bal=resp["balance_fen"],
            auth=resp["auth_id"],
        )
        done = self.journal.append(rec)  # durable before the approval is shown
        return Outcome(True, "ok", "approved", False, resp["balance_fen"], done.seq, account)

    # -- offline ------------------------------------------------------------------------------
    def risk_refusal(self, account_id: int, amount: int, today: str) -> str | None:
        """SPEC §3 offline risk limits: why this offline sale is too risky, or None."""
        policy = self.cache.policy
        if amount > policy.get("offline_max_purchase_fen", 0):
            return (
                "over the offline limit per purchase "
                f"({format_fen(policy.get('offline_max_purchase_fen', 0))})"
            )
        if self.journal.offline_spent_on(account_id, today) + amount > policy.get(
            "offline_max_card_day_fen", 0
        ):
            return (
                "over the offline limit per card per day "
                f"({format_fen(policy.get('offline_max_card_day_fen', 0))})"
            )
        if self.journal.unsynced_offline_fen + amount > policy.get("offline_max_total_fen", 0):
            return "this terminal holds too much unsynced offline money; waiting for the network"
        return None

    def local_view(self, acct: dict[str, Any]) -> tuple[rules.LimitTracker, int, int]:
        """The account snapshot plus what this terminal did after it: R6 tracking, amount
        spent here (for the balance), wrong consumption passwords."""
        tracker = rules.LimitTracker(acct["spent_day"], acct["spent_fen"])
        spent_local, tries = 0, acct["pin_tries"]
        for r in self.journal.account_records(acct["id"], acct["as_of_seq"]):
            if r["kind"] == "sale":
                tracker = tracker.after_purchase(r["day"], r["amount"], r["pin"] == "ok")
                spent_local += r["amount"]
                if r["pin"] == "ok":
                    tries = 0
            elif r["kind"] == "pin_fail" and r["offline"]:
                tries += 1
        return tracker, spent_local, tries

    def _offline(self, tap: CardTap, amount: int, pin: str | None) -> Outcome:
        def no(code: str, reason: str, **kw: Any) -> Outcome:
            return Outcome(False, code, reason, True, **kw)

        card = self.cache.card(tap.card_no)
        if card is None:
            return no("declined", "unknown card (offline: not in this terminal's list)")
        if card["uid"] != tap.uid.upper():
            return no("declined", "card UID does not match the issued card (clone?)")
        if card["status"] != "active":
            return no("declined", "card replaced by a newer card (R11)")
        acct = self.cache.account(card["account_id"])
        if acct is None:
            return no("declined", "no account data for this card (offline)")
        account: dict[str, Any] = {
            "account_id": acct["id"],
            "number": acct["number"],
            "name": acct["name"],
        }
        reason = rules.blocking_reason(acct["status"])  # R2
        now = self.clock.now_ms()
        today = campus_date(now, self.tz)
        if reason is None and acct["expires"] and today > acct["expires"]:
            reason = "card expired (R13): see the service desk"
        if reason:
            return no("declined", reason, account=account)

        policy = self.cache.policy
        risk = self.risk_refusal(acct["id"], amount, today)
        if risk:
            return no("risk_limit", risk, account=account)
        tracker, spent_local, tries = self.local_view(acct)
        pin_fact = "none"
        max_tries = int(policy.get("pin_max_tries", rules.DEFAULT_PIN_MAX_TRIES))
        if tracker.needs_password(today, amount, acct["limit_fen"]):  # R6
            if tries >= max_tries:
                return no(
                    "pin_locked",
                    "consumption password locked (R5): see the service desk",
                    account=account,
                )
            if pin is None:
                return no(
                    "needs_pin",
                    f"over the daily limit {format_fen(acct['limit_fen'])}: "
                    "consumption password required (R6)",
                    account=account,
                    tries_left=max_tries - tries,
                )
            if not verify_password(pin, acct["pin_verifier"]):
                self.journal.append(
                    self._record(
                        tap,
                        acct["id"],
                        0,
                        kind="pin_fail",
                        off=True,
                        pin="fail",
                        spent=tracker.spent_on(today),
                        lim=acct["limit_fen"],
                    )
                )
                left = max_tries - tries - 1
                return no(
                    "wrong_pin",
                    "wrong consumption password (R5)"
                    + (f", {left} tries left" if left > 0 else "; now locked"),
                    account=account,
                    tries_left=max(left, 0),
                )
            pin_fact = "ok"
        available = acct["balance_fen"] + acct["transition_fen"] - spent_local
        if amount > available:
            return no(
                "insufficient",
                f"insufficient balance ({format_fen(max(available, 0))})",
                account=account,
                balance_fen=available,
            )
        rec = self._record(
            tap,
            acct["id"],
            amount,
            off=True,
            pin=pin_fact,
            spent=0 if pin_fact == "ok" else tracker.spent_on(today),
            lim=acct["limit_fen"],
            bal=available - amount,
        )
        done = self.journal.append(rec)  # durable before the approval is shown
        return Outcome(True, "ok", "approved offline", True, available - amount, done.seq, account)
