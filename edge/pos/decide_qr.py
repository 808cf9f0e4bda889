"""How a POS decides a phone-code sale (R8, R18; docs/codes.md).

Forward scan (正扫)
    The camera read a payment code.  Cheap checks first (format, kind, campus, this terminal's
    seen-set); then online the server authorizes it (it verifies the code, claims it in its
    seen-set and holds the amount), or offline the terminal verifies it itself: certificate
    chain, signature, validity window, hotlist (R2), risk limits, R6 (over the limit the phone
    must have confirmed with the query password: the code's flag), balance.  The code enters
    the seen-set in the same transaction as its journal record.
Reverse scan (反扫, only while offline, R8)
    The terminal shows a payment request signed with its own key; the phone pays it online
    and shows the server's proof (QR, checked against the issuer key) or the cashier keys the
    proof's short code (an HMAC under the key this terminal shares with the server).  The
    sale is journaled with method ``qr-reverse``; the money moved when the phone paid.  The
    request is kept open in the journal database from before it is shown until a record
    closes it: its sale, or a ``void`` (cancelled, too many wrong proofs, or found open at the
    next start), after which the server refunds a payment made for it (docs/security.md).
"""

from __future__ import annotations

import base64
import logging
import random
import threading
from dataclasses import dataclass
from typing import Any

from edge.errors import ReverseRefused
from edge.pos.decide import Decider, Outcome
from sync import codes, records, rules
from sync.clock import campus_date
from sync.crypto import SigningKey, VerifyKey
from sync.errors import (
    CodeError,
    ProtocolError,
    ServerUnavailable,
    SyncError,
)
from sync.money import format_fen
from sync.records import AuthorizeAnswer

log = logging.getLogger(__name__)

MAX_PROOF_TRIES = 5


@dataclass
class Pending:
    """A reverse-scan payment request shown on the customer screen."""

    request: codes.PaymentRequest
    text: str
    tries: int = 0


class QrDecider:
    def __init__(
        self,
        base: Decider,
        terminal_id: str,
        campus_id: str,
        key: SigningKey,
        rng: random.Random | None = None,
    ) -> None:
        self.base = base
        self.terminal_id = terminal_id
        self.campus = codes.campus_tag(campus_id)
        self.key = key
        self.rng = rng or random.SystemRandom()
        self._order_lock = threading.Lock()

    # -- what the feed gave us ----------------------------------------------------------------
    def _issuer_keys(self) -> dict[int, VerifyKey]:
        out = {}
        for k in self.base.cache.codes.keys:
            try:
                out[k.kid] = VerifyKey.from_b64(k.public_key)
            except ProtocolError:
                log.error("bad code key in the feed: %r", k)
        return out

    def verifier(self) -> codes.CodeVerifier:
        policy = self.base.cache.policy
        cache = self.base.cache

        def lookup(serial: int) -> codes.KnownCert | None:
            got = cache.cert(serial)
            return None if got is None else codes.KnownCert(got[0], got[1])

        return codes.CodeVerifier(
            campus=self.campus,
            issuer_keys=self._issuer_keys(),
            lookup_cert=lookup,
            valid_s=policy.code_valid_s,
            skew_s=policy.code_skew_s,
        )

    # -- forward scan -------------------------------------------------------------------------
    def decide_forward(self, text: str, amount: int) -> Outcome:
        online_possible = self.base.link.try_online()

        def no(code: str, reason: str, offline: bool = not online_possible, **kw: Any) -> Outcome:
            return Outcome(False, code, reason, offline, method="qr-forward", **kw)

        try:
            code = codes.parse_code(codes.unpack_text(text), (codes.Kind.PAY, codes.Kind.AUTH))
        except CodeError as exc:
            return no(exc.reason, exc.message)
        if code.kind is codes.Kind.AUTH:
            return no("wrong_kind", "this is an authentication code: show the payment code")
        if code.campus != self.campus:
            return no("other_campus", "code of another campus")
        if self.base.journal.code_seen(code.serial, code.counter) is not None:
            return no("replayed", "this code was already used: refresh the code on the phone")
        if online_possible:
            decided = self._online(text, code, amount)
            if decided is not None:
                return decided
        return self._offline(text, amount)

    def _online(self, text: str, code: codes.PhoneCode, amount: int) -> Outcome | None:
        """The server's decision on the code, or None when it cannot decide."""
        b = self.base
        account: dict[str, Any] = {}
        req = records.AuthorizeRequest(
            seq=b.journal.next_seq, amount_fen=amount, method="qr-forward", qr=text
        )
        resp = b.authorize(req, account)
        if not isinstance(resp, AuthorizeAnswer):
            return resp
        if not isinstance(resp.account_id, int):
            b.undecided(ServerUnavailable(200, "bad_answer", "an approved code names no account"))
            return None
        rec = records.code_sale(
            ts=b.clock.now_ms(),
            cred=code.cred,
            code_text=text,
            acct=resp.account_id,
            amt=amount,
            off=False,
            pin=resp.get("pin"),
            spent=resp.get("spent_fen"),
            lim=resp.get("limit_fen"),
            bal=resp.get("balance_fen"),
            op=b.operator,
            auth=resp.get("auth_id"),
        )
        return self._approved(rec, code, account)

    def _approved(
        self, rec: records.Entry, code: codes.PhoneCode, account: dict[str, Any]
    ) -> Outcome:
        """Journal the sale of ``code`` (durably: the code enters the seen-set with its record)
        and approve it."""
        done = self.base.journal.append(rec, code=(code.serial, code.counter))
        return Outcome(
            True,
            "ok",
            "approved offline" if rec.off else "approved",
            rec.off,
            rec.bal,
            done.seq,
            account,
            method="qr-forward",
        )

    def _offline(self, text: str, amount: int) -> Outcome:
        b = self.base

        def no(code: str, reason: str, **kw: Any) -> Outcome:
            return Outcome(False, code, reason, True, method="qr-forward", **kw)

        now = b.clock.now_ms()
        try:
            verified = self.verifier().verify(text, now, (codes.Kind.PAY,))
        except CodeError as exc:
            return no(exc.reason, exc.message)
        code = verified.code
        acct = b.cache.account(verified.account_id)
        if acct is None:
            return no("declined", "no account data for this code (offline)")
        account: dict[str, Any] = {
            "account_id": acct.id,
            "number": acct.number,
            "name": acct.name,
        }
        today = campus_date(now, b.tz)
        reason = rules.blocking_reason(acct.status)  # R2: the account blocks its codes
        if reason is None and acct.expires and today > acct.expires:
            reason = "card expired (R13): see the service desk"
        if reason:
            return no("declined", reason, account=account)
        risk = b.risk_refusal(acct.id, amount, today)
        if risk:
            return no("risk_limit", risk, account=account)
        tracker, spent_local, _tries = b.local_view(acct)
        confirmed = False
        if tracker.needs_password(today, amount, acct.limit_fen):  # R6
            if not code.confirmed:
                return no(
                    "needs_confirm",
                    f"over the daily limit {format_fen(acct.limit_fen)}: confirm on the "
                    "phone with the query password and show the new code (R6)",
                    account=account,
                )
            confirmed = True
        available = acct.balance_fen - spent_local  # R7: the transition balance is the card's
        if amount > available:
            return no(
                "insufficient",
                f"insufficient balance ({format_fen(max(available, 0))})",
                account=account,
                balance_fen=available,
            )
        rec = records.code_sale(
            ts=b.clock.now_ms(),
            cred=code.cred,
            code_text=text,
            acct=acct.id,
            amt=amount,
            off=True,
            pin="ok" if confirmed else "none",
            spent=0 if confirmed else tracker.spent_on(today),
            lim=acct.limit_fen,
            bal=available - amount,
            op=b.operator,
        )
        return self._approved(rec, code, account)

    # -- reverse scan -------------------------------------------------------------------------
    def start_reverse(self, amount: int) -> Pending:
        """A signed payment request for ``amount`` (refused while the server is reachable)."""
        b = self.base
        if b.link.online or self._server_answers():
            raise ReverseRefused(
                "reverse scan only while offline (R8): the terminal is online, "
                "use the card or the payment code"
            )
        if not self._issuer_keys() or not b.cache.codes.proof_key:
            raise ReverseRefused("this terminal has not received the code keys yet (sync once)")

        def make(order: int) -> str:
            raw = codes.make_request(
                self.key,
                self.campus,
                codes.terminal_number(self.terminal_id),
                order,
                amount,
                b.clock.now_ms() // 1000,
                self.rng.getrandbits(64).to_bytes(8, "big"),
            )
            return codes.to_text(raw, numeric=True)

        with self._order_lock:
            # one request at a time: one still open was left by a crash or a failed close
            self.close_open("a new request was started")
            _order, text = b.journal.open_order(amount, make)
        return Pending(codes.parse_request(codes.unpack_text(text)), text)

    def close_open(self, why: str) -> int:
        """Close every reverse-scan request still open with a ``void`` record (the terminal
        started again while one was shown, or its close failed): a phone that paid one is
        refunded when the record syncs.  Returns how many."""
        n = 0
        for o in self.base.journal.open_orders():
            self._void(o.order, o.amount, why)
            n += 1
        return n

    def void(self, pending: Pending, why: str) -> None:
        """Close the request on screen without a sale (cancelled, or too many wrong proofs)."""
        self._void(pending.request.order, pending.request.amount_fen, why)

    def _void(self, order: int, amount: int, why: str) -> None:
        b = self.base
        rec = records.reverse_void(ts=b.clock.now_ms(), order=order, amt=amount, op=b.operator)
        done = b.journal.append(rec, order=order)
        log.warning(
            "reverse-scan request %d closed without a sale (record %d): %s", order, done.seq, why
        )

    def _server_answers(self) -> bool:
        """A quick probe: reverse scan is for a terminal that cannot reach the server."""
        try:
            self.base.client.request("GET", "/v1/health", signed=False, timeout=(0.5, 1.0))
        except SyncError:
            return False
        return True

    def accept_proof_text(self, pending: Pending, text: str) -> Outcome:
        """A proof shown to the camera: the server's signature over this very request."""
        try:
            proof = codes.parse_proof(codes.unpack_text(text))
            codes.check_proof(proof, self._issuer_keys(), pending.request)
        except CodeError as exc:
            return Outcome(False, exc.reason, exc.message, True, method="qr-reverse")
        return self._reverse_sale(pending, proof.account_id, proof.payment, proof.raw)

    def accept_proof_code(self, pending: Pending, digits: str) -> Outcome:
        """A proof keyed on the PIN pad (8 digits)."""
        try:
            key = base64.b64decode(self.base.cache.codes.proof_key, validate=True)
            codes.check_proof_code(key, pending.request, digits)
        except (CodeError, ValueError) as exc:
            pending.tries += 1
            msg = getattr(exc, "message", str(exc))
            left = MAX_PROOF_TRIES - pending.tries
            return Outcome(
                False,
                getattr(exc, "reason", "garbage"),
                f"{msg}" + (f", {left} tries left" if left > 0 else "; request cancelled"),
                True,
                method="qr-reverse",
                tries_left=max(left, 0),
            )
        return self._reverse_sale(pending, 0, None)

    def _reverse_sale(
        self, pending: Pending, acct_id: int, payment: int | None, proof: bytes | None = None
    ) -> Outcome:
        """``acct_id`` 0 and no ``payment`` when only the short code was keyed: the server
        knows who paid.  ``proof``: the server-signed proof shown, journaled with the sale (a
        server restored from a backup older than the payment charges the payer from it)."""
        b = self.base
        req = pending.request
        rec = records.reverse_sale(
            ts=b.clock.now_ms(),
            order=req.order,
            amt=req.amount_fen,
            op=b.operator,
            acct=acct_id,
            payment=payment,
            proof=proof,
        )
        done = b.journal.append(rec, order=req.order)  # closes the request with the sale
        account = {"account_id": acct_id} if acct_id else {}
        return Outcome(
            True,
            "ok",
            "paid by phone (reverse scan)",
            True,
            None,
            done.seq,
            account,
            method="qr-reverse",
        )
