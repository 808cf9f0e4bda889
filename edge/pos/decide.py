"""How a POS decides a card sale (docs/architecture.md, docs/card-format.md; R2, R5, R6, R11, R13).

1. Read the card (:class:`sync.card.app.CampusCard`): identity checked against the issuer
   signature and the UID (a clone or altered data is refused), counters from the newest valid
   slot.
2. Card-level checks that work offline: the card number's issued UID, generation and status
   from the cache (R11; a card the server blocked), the card's expiry (R13), the
   consumption-password lockout (R5: the highest of the card's tries, the account's from the
   feed and this terminal's later records; the desk's reset arrives as the account's
   ``pin_epoch`` and clears it).
3. R6 from the card's counters: over the limit, ask for the consumption password.  The try is
   counted *on the card* first, then the password is checked against the card's verifier (as
   EMV PIN try counters are): a wrong one stays counted (and is journaled), a right one is
   taken back by the sale's write, or by a write of the counters as they were when no sale
   follows.
4. Authorize: online, the server checks status, generation, holds, R5/R6 and balance with the
   card's facts; offline, the caches, the journal and the risk limits decide, with the card's
   own offline amount against the per-card limit (it holds across terminals).
5. Write the new counters to the card (tear-safe: the other slot; the offline amount 0 after an
   online approval, plus the sale after an offline one), then journal (durably), then approve.
   A card pulled away during the write is declined with nothing charged; if the write did
   land, the counters are put back the next time the card is seen here.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from drivers.errors import CardGone, DriverError
from drivers.reader.base import PresentCard
from edge.cache import Cache
from edge.journal import Journal
from edge.link import Link
from edge.pos.cardkeys import KeyProvider
from sync import records, rules
from sync.card import layout
from sync.card.app import BadSignature, CampusCard, CardView
from sync.card.layout import Counters
from sync.client import ServerClient
from sync.clock import Clock, campus_date
from sync.errors import (
    AuthError,
    CardRefused,
    ServerRefused,
    ServerUnavailable,
    SyncError,
    YktError,
)
from sync.money import format_fen
from sync.records import AuthorizeAnswer, CachedAccount

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
    card_no: str | None = None
    timing: dict[str, int] = field(default_factory=dict)  # ns: card_io, journal
    #: why a card was refused, for machines: foreign_card, bad_signature, clone, bad_layout,
    #: counters_damaged, replaced, expired, no_keys (``code`` stays "declined"/"error")
    detail: str | None = None
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
        keys: KeyProvider,
        operator: str = "",
    ) -> None:
        self.journal = journal
        self.cache = cache
        self.client = client
        self.link = link
        self.clock = clock
        self.tz = tz
        self.keys = keys
        self.operator = operator
        #: uid -> (what the card may show, what to put back) of sales torn mid-write and of
        #: right passwords whose counted try was not taken back (the card left)
        self._torn: dict[bytes, tuple[tuple[Counters, ...], Counters]] = {}

    # -- entry --------------------------------------------------------------------------------
    def decide(self, card: PresentCard, amount_fen: int, pin: str | None) -> Outcome:
        try:
            keys = self.keys.get()
        except CardRefused as exc:
            return Outcome(
                False, "error", f"terminal has no card keys: {exc.reason}", False, detail="no_keys"
            )
        app: CampusCard | None = None
        t: dict[str, int] = {}
        try:
            with card.exclusive():
                app = CampusCard(card, keys)
                out = self._decide(app, amount_fen, pin, t)
        except CardGone:
            out = Outcome(
                False, "card_gone", "card removed too early: nothing charged, tap again", False
            )
        except BadSignature as exc:
            assert app is not None
            out = self._bad_signature(app, exc)
            out.offline = not self._reachable()
        except CardRefused as exc:
            out = Outcome(False, "declined", exc.reason, not self._reachable(), detail=exc.code)
        except DriverError as exc:
            log.warning("card error: %s", exc)
            out = Outcome(False, "card_error", f"card could not be read ({exc}); tap again", False)
        out.timing = {"card_io": app.io_ns if app else 0, **t}
        return out

    def _bad_signature(self, app: CampusCard, exc: BadSignature) -> Outcome:
        known = self.cache.card(exc.identity.card_no)
        if known is not None and known.uid != app.uid.hex().upper():
            return Outcome(
                False,
                "declined",
                f"card data of card {exc.identity.card_no} on a card with another UID: "
                "a clone, refused",
                False,
                detail="clone",
            )
        return Outcome(False, "declined", exc.reason, False, detail=exc.code)

    # -- the decision -------------------------------------------------------------------------
    def _decide(self, app: CampusCard, amount: int, pin: str | None, t: dict[str, int]) -> Outcome:
        view = app.read()
        self._recover_torn(app, view)
        ident = view.identity
        uid_hex = view.uid_hex
        now = self.clock.now_ms()
        today = campus_date(now, self.tz)
        acct = self.cache.account(ident.account_id)
        account: dict[str, Any] = {"account_id": ident.account_id}
        if acct is not None:
            account.update(number=acct.number, name=acct.name)

        def no(code: str, reason: str, **kw: Any) -> Outcome:
            # "offline": whether the server could have been asked (it is probed when in doubt)
            return Outcome(False, code, reason, not self._reachable(), account=account, **kw)

        known = self.cache.card(ident.card_no)
        if known is not None:
            if known.uid != uid_hex:
                return no(
                    "declined", "card UID does not match the issued card (clone?)", detail="clone"
                )
            if known.status == "blocked":
                return no(
                    "declined",
                    "card blocked: its counters went back (a copied or restored card); "
                    "see the service desk",
                    detail="blocked",
                )
            if known.generation != ident.generation or known.status != "active":
                return no("declined", "card replaced by a newer card (R11)", detail="replaced")
        # R13: the account's validity when this terminal knows it (a desk extension applies at
        # once; the card is corrected later, R20), else the one written on the card
        expires = acct.expires if acct is not None else ident.expires
        if expires and today > expires:
            return no("declined", "card expired (R13): see the service desk", detail="expired")

        # R5: wrong tries live on the card and in the account (the server's count, with this
        # terminal's later records): the higher one counts, so a card restored from an old image
        # or a new card does not start again; the desk's reset arrives as the account's epoch
        max_tries = min(self.cache.policy.pin_max_tries, layout.MAX_CARD_TRIES)
        counters, tries, local = self._tries(view, acct)
        if tries >= max_tries and self.link.online and self.refresh():
            acct = self.cache.account(ident.account_id)
            counters, tries, local = self._tries(view, acct)
        if counters.tries < view.counters.tries:
            log.info("card %s: wrong tries cleared by the desk", uid_hex)
        locked = tries >= max_tries

        # R6 from the card's counters and the account's amount (the snapshot and this
        # terminal's later records); a locked password blocks only what needs it (R5)
        limit = None if acct is None else acct.limit_fen
        tracker = rules.LimitTracker(counters.day or "", counters.spent_fen)
        needs = (
            local is not None
            and limit is not None
            and rules.card_tap_needs_password(tracker, local[0], today, amount, limit)
        )
        if locked and (needs or pin is not None):
            return no("pin_locked", "consumption password locked (R5): see the service desk")
        if pin is None:
            if needs and limit is not None:
                return no(
                    "needs_pin",
                    f"over the daily limit {format_fen(limit)}: consumption password required (R6)",
                    tries_left=max_tries - tries,
                )
            return self._sell(app, view, acct, account, counters, amount, "none", tracker, tries, t)
        # R5, as EMV PIN try counters: the try is counted on the card first (tear-safe), then
        # the password is checked; a right one takes the count back.  A card pulled away before
        # the count is written was never checked (a count that landed after all is put back
        # the next time the card is here); one pulled away after it keeps a wrong try.
        counted = view.counters.next(
            tries=min(tries + 1, layout.MAX_CARD_TRIES), epoch=counters.epoch
        )
        try:
            app.write_counters(view, counted)
        except CardGone:  # never checked: a count that landed is put back at the next tap
            self._torn[view.uid] = ((counted,), counters)
            raise
        if not app.check_pin(view, pin):
            self.journal.append(
                records.card_pin_fail(
                    ts=self.clock.now_ms(),
                    card_no=ident.card_no,
                    card=self._card_x(view, counted),
                    acct=ident.account_id,
                    off=not self._reachable(),
                    spent=tracker.spent_on(today),
                    lim=limit or 0,
                    op=self.operator,
                )
            )
            if self.link.online:
                self._push_now()  # the desk sees the count (and a lockout) at once
            left = max_tries - counted.tries
            return no(
                "wrong_pin",
                "wrong consumption password (R5)"
                + (f", {left} tries left" if left > 0 else "; now locked"),
                tries_left=max(left, 0),
            )
        out = self._sell(app, view, acct, account, counters, amount, "ok", tracker, tries, t)
        if not out.approved:  # the right password, and no sale: the try is taken back
            self._put_back(app, view, (counted,), counters)
        return out

    def _sell(
        self,
        app: CampusCard,
        view: CardView,
        acct: CachedAccount | None,
        account: dict[str, Any],
        counters: Counters,
        amount: int,
        pin_fact: Literal["none", "ok"],
        tracker: rules.LimitTracker,
        tries: int,
        t: dict[str, int],
    ) -> Outcome:
        """Authorize (online, else offline), write the counters, journal.  ``counters`` are the
        card's (the desk's reset applied), before any try counted now; ``tries`` the wrong
        tries that count (R5); ``account`` gets what the server says of the account."""
        ident = view.identity
        today = campus_date(self.clock.now_ms(), self.tz)
        max_tries = min(self.cache.policy.pin_max_tries, layout.MAX_CARD_TRIES)
        spent_before = 0 if pin_fact == "ok" else tracker.spent_on(today)
        auth: AuthorizeAnswer | None = None
        if self.link.try_online():
            got = self._online(view, counters, amount, pin_fact, account)
            if isinstance(got, Outcome):
                if got.code == "needs_pin":
                    if tries >= max_tries:
                        got.code = "pin_locked"
                        got.reason = "consumption password locked (R5): see the service desk"
                    got.tries_left = max(max_tries - tries, 0)
                return got
            auth = got
        if auth is None:
            checked = self._offline_checks(
                acct,
                ident.account_id,
                amount,
                today,
                self.local_view(acct) if acct is not None else None,
                card_offline_fen=counters.offline_fen,
            )
            if isinstance(checked, Outcome):
                checked.account = account
                return checked
            balance, limit = checked, acct.limit_fen if acct else 0
            off = True
        else:
            assert isinstance(auth.balance_fen, int) and isinstance(auth.limit_fen, int)
            balance, limit, off = auth.balance_fen, auth.limit_fen, False

        # the card first (tear-safe), then the journal, then the approval
        after = tracker.after_purchase(today, amount, pin_fact == "ok")
        new = view.counters.next(
            day=today,
            spent_fen=after.spent_fen,
            taps=counters.taps + 1,
            tries=0 if pin_fact == "ok" else counters.tries,
            epoch=counters.epoch,
            # what the card spent offline since its last online approval: an online approval
            # starts it again (docs/security.md)
            offline_fen=min(counters.offline_fen + amount, layout.MAX_CARD_OFFLINE_FEN)
            if off
            else 0,
        )
        before = view.counters
        try:
            app.write_counters(view, new)
        except CardGone:
            # put back the next time the card is here: the sale was declined (and with a right
            # password, the try counted before it is taken back too)
            if pin_fact == "none":
                self._torn[view.uid] = ((new,), before)
            else:
                self._torn[view.uid] = ((new, before), counters)
            log.warning("card %s left during the counter write: sale declined", view.uid_hex)
            raise
        t0 = time.perf_counter_ns()
        rec = records.card_sale(
            ts=self.clock.now_ms(),
            card_no=ident.card_no,
            card=self._card_x(view, new),
            acct=ident.account_id,
            amt=amount,
            off=off,
            pin=pin_fact,
            spent=spent_before,
            lim=limit,
            bal=balance,
            op=self.operator,
            auth=None if auth is None else auth.get("auth_id"),
        )
        done = self.journal.append(rec)  # durable before the approval is shown
        t["journal"] = time.perf_counter_ns() - t0
        return Outcome(
            True,
            "ok",
            "approved offline" if off else "approved",
            off,
            balance,
            done.seq,
            account,
            card_no=ident.card_no,
        )

    def _tries(
        self, view: CardView, acct: CachedAccount | None
    ) -> tuple[Counters, int, tuple[rules.LimitTracker, int, int] | None]:
        """The card's counters with the desk's reset applied (the account's ``pin_epoch``),
        the wrong tries that count (R5: the highest of the card's, the account's as the server
        had it, and what this terminal's later records left on the card), and
        :meth:`local_view` of the account."""
        counters = view.counters
        if acct is None:
            return counters, counters.tries, None
        epoch = acct.pin_epoch & 0xFF
        if epoch != counters.epoch:
            counters = replace(counters, tries=0, epoch=epoch)
        local = self.local_view(acct)
        here = self.journal.card_tries_after(acct.id, acct.as_of_seq, epoch)
        return counters, max(counters.tries, acct.pin_tries, here), local

    # -- helpers ------------------------------------------------------------------------------
    @staticmethod
    def _card_x(view: CardView, new: Counters) -> records.CardX:
        return records.CardX(
            uid=view.uid_hex,
            gen=view.identity.generation,
            ctr=new.seq,
            taps=new.taps,
            tries=new.tries,
            ep=new.epoch,
        )

    def _recover_torn(self, app: CampusCard, view: CardView) -> None:
        """A sale declined because the card left during a counter write whose write did land
        after all, or a right password whose counted try was not taken back: put the counters
        back (nothing was charged)."""
        torn = self._torn.pop(view.uid, None)
        if torn is None:
            return
        found, restore = torn
        if view.counters in found:
            self._put_back(app, view, found, restore)
            log.warning(
                "card %s: counters of the interrupted sale put back (nothing was charged)",
                view.uid_hex,
            )

    def _put_back(
        self, app: CampusCard, view: CardView, found: tuple[Counters, ...], restore: Counters
    ) -> None:
        """Write ``restore``'s values as the card's next counters; a card pulled away meanwhile
        is put back the next time it is here (while it still shows one of ``found``)."""
        back = replace(restore, seq=view.counters.next().seq, version=layout.COUNTER_VERSION)
        try:
            app.write_counters(view, back)
        except CardGone:
            self._torn[view.uid] = ((*found, back), restore)
            log.warning("card %s left before its counters were put back", view.uid_hex)

    def _reachable(self) -> bool:
        """Whether the server answers now (a cheap probe; the link remembers a failure, so a
        terminal that just failed does not probe at every tap)."""
        if not self.link.try_online():
            return False
        try:
            self.client.health()
        except SyncError as exc:
            self.link.down(str(exc))
            return False
        self.link.up()
        return True

    def _push_now(self) -> None:
        """Push the journal now, on this thread (the uplink would a moment later; a record
        sent twice is harmless)."""
        try:
            self.journal.set_acked(self.client.push(self.journal.unsent()).ack)
        except YktError as exc:
            log.info("immediate push failed (the uplink retries): %s", exc)

    def refresh(self) -> bool:
        """Pull the feed now (a locked card may have been cleared by the desk a moment ago)."""
        try:
            while True:
                page = self.client.feed(self.cache.version, wait=0)
                self.cache.apply(page)
                if not page.more:
                    return True
        except SyncError as exc:
            log.info("feed refresh failed: %s", exc)
            return False

    def _online(
        self,
        view: CardView,
        counters: Counters,
        amount: int,
        pin_fact: Literal["none", "ok"],
        account: dict[str, Any],
    ) -> AuthorizeAnswer | Outcome | None:
        """The server's approval (with the hold), a decline, or None when the server cannot
        decide (the caller goes offline)."""
        req = records.AuthorizeRequest(
            seq=self.journal.next_seq,
            card_no=view.identity.card_no,
            uid=view.uid_hex,
            amount_fen=amount,
            method="card",
            card=records.CardFacts.read(view.identity.generation, counters, pin_fact),
        )
        return self.authorize(req, account)

    def authorize(
        self, req: records.AuthorizeRequest, account: dict[str, Any]
    ) -> AuthorizeAnswer | Outcome | None:
        """The server's decision on a sale (a card's or a phone code's): its approval (it holds
        the amount), its decline as an Outcome, or None when it cannot decide and the sale is
        decided offline.  ``account`` gets what the server says of the account."""
        try:
            resp = self.client.authorize(req)
        except (ServerUnavailable, AuthError) as exc:
            self.undecided(exc)
            return None
        except ServerRefused as exc:
            return Outcome(
                False,
                "declined",
                f"server refused the sale: {exc}",
                False,
                account=account,
                method=req.method,
            )
        self.link.up()
        account.update(resp.account())
        if not resp.approved:
            return Outcome(
                False,
                resp.code,
                resp.reason,
                False,
                balance_fen=resp.get("balance_fen"),
                account=account,
                method=req.method,
            )
        return resp

    def undecided(self, exc: ServerUnavailable | AuthError) -> None:
        """The server could not decide (``exc``): the link is down, the sale is decided offline."""
        self.link.down(str(exc))
        if isinstance(exc, AuthError):
            log.error("server refused this terminal (%s); deciding offline", exc)
        else:
            log.warning("server unavailable, deciding offline: %s", exc)

    # -- offline ------------------------------------------------------------------------------
    def risk_refusal(self, account_id: int, amount: int, today: str) -> str | None:
        """docs/architecture.md offline risk limits: why this offline sale is too risky, or None."""
        policy = self.cache.policy
        if amount > policy.offline_max_purchase_fen:
            return (
                "over the offline limit per purchase "
                f"({format_fen(policy.offline_max_purchase_fen)})"
            )
        if (
            self.journal.offline_spent_on(account_id, today) + amount
            > policy.offline_max_card_day_fen
        ):
            return (
                "over the offline limit per card per day "
                f"({format_fen(policy.offline_max_card_day_fen)})"
            )
        if self.journal.unsynced_offline_fen + amount > policy.offline_max_total_fen:
            return "this terminal holds too much unsynced offline money; waiting for the network"
        return None

    def card_risk_refusal(self, card_offline_fen: int, amount: int) -> str | None:
        """The per-card offline limit (docs/security.md): what a card spends offline since its
        last online approval, at every terminal together, is carried on the card."""
        most = min(self.cache.policy.offline_max_card_fen, layout.MAX_CARD_OFFLINE_FEN)
        if card_offline_fen + amount > most:
            return (
                f"over what a card may spend offline ({format_fen(most)}; this card has spent "
                f"{format_fen(card_offline_fen)} offline since its last online payment)"
            )
        return None

    def local_view(self, acct: CachedAccount) -> tuple[rules.LimitTracker, int, int]:
        """The account snapshot plus what this terminal did after it: R6 tracking at account
        level (phone codes; cards carry their own counters), amount spent here (for the
        balance), wrong consumption passwords."""
        tracker = rules.LimitTracker(acct.spent_day, acct.spent_fen)
        spent_local, tries = 0, acct.pin_tries
        for r in self.journal.account_records(acct.id, acct.as_of_seq):
            if r.kind == "sale":
                tracker = tracker.after_purchase(r.day, r.amount, r.pin == "ok")
                spent_local += r.amount
                if r.pin == "ok":
                    tries = 0
            elif r.kind == "pin_fail" and r.offline:
                tries += 1
            elif r.kind == "refund":  # a refund at this till gives the money back
                spent_local -= r.amount
        return tracker, spent_local, tries

    def _offline_checks(
        self,
        acct: CachedAccount | None,
        account_id: int,
        amount: int,
        today: str,
        local: tuple[rules.LimitTracker, int, int] | None = None,
        card_offline_fen: int | None = None,
    ) -> int | Outcome:
        """The balance left after the sale, or why an offline sale is refused.  ``local`` is
        :meth:`local_view` of ``acct`` when the caller already has it; ``card_offline_fen``
        what the card spent offline since its last online approval (its own counter, so the
        limit holds across terminals)."""

        def no(code: str, reason: str, **kw: Any) -> Outcome:
            return Outcome(False, code, reason, True, **kw)

        if acct is None:
            return no("declined", "unknown card (offline: not in this terminal's list)")
        reason = rules.blocking_reason(acct.status)  # R2
        if reason is None and acct.expires and today > acct.expires:
            reason = "card expired (R13): see the service desk"
        if reason:
            return no("declined", reason)
        risk = self.risk_refusal(account_id, amount, today)
        if risk is None and card_offline_fen is not None:
            risk = self.card_risk_refusal(card_offline_fen, amount)
        if risk:
            return no("risk_limit", risk)
        _tracker, spent_local, _tries = local or self.local_view(acct)
        available = acct.balance_fen + acct.transition_fen - spent_local
        if amount > available:
            return no(
                "insufficient",
                f"insufficient balance ({format_fen(max(available, 0))})",
                balance_fen=available,
            )
        return int(available - amount)
