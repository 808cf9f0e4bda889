"""The people of the simulated campus: card holders with their cards (simulated MIFARE Classic
cards the server issued, counters and all), phones with their own keys and certificates, and
the desk and payment provider acting on the real server services.

The desk and the phones talk to the server directly (they are not on a terminal's network);
when the server is down they cannot act, and the act is skipped.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from sim.cards import encoded_card
from sim.fleet.server import SimServer
from sim.mifare import MifareClassic1K
from sync import codes, paygate
from sync.card import layout
from sync.crypto import SigningKey
from sync.server import accounts, holders, reverse, topups
from sync.server.context import Context


@contextmanager
def cheap_verifiers() -> Iterator[None]:
    """Cards issued during the run carry a consumption-password verifier of scrypt 2^10 (the
    unit tests' cost) instead of 2^12: a POS checks the cost the card names, so the check is
    the same code, four times faster."""
    saved = layout.make_verifier.__defaults__
    layout.make_verifier.__defaults__ = (10,)
    try:
        yield
    finally:
        layout.make_verifier.__defaults__ = saved


@contextmanager
def remembered_scrypt() -> Iterator[None]:
    """For the length of a run, :func:`hashlib.scrypt` answers a (password, salt, cost) it
    computed before from memory.  scrypt is a pure function, so every check gives the answer
    it would: the product still hashes, stores, derives and compares as it does (a wrong
    password is a new input, computed and refused).  What goes is the deliberate slowness of
    hashing the same password with the same salt again: a holder's query password set at the
    desk and checked at every top-up, a card's consumption-password verifier made at issuing
    and checked at every sale over the R6 limit (about 2.5 ms each at the minimum cost, 2^10,
    a quarter of the CPU time of a fleet run before)."""
    real = hashlib.scrypt
    memo: dict[tuple[bytes, bytes, int, int, int, int], bytes] = {}

    def scrypt(
        password: bytes,
        *,
        salt: bytes,
        n: int,
        r: int,
        p: int,
        maxmem: int = 0,
        dklen: int = 64,
    ) -> bytes:
        key = (bytes(password), bytes(salt), n, r, p, dklen)
        got = memo.get(key)
        if got is None:
            got = memo[key] = real(password, salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=dklen)
        return got

    hashlib.scrypt = scrypt  # type: ignore[assignment]
    try:
        yield
    finally:
        hashlib.scrypt = real


_W = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
CHANNEL: Literal["wechat"] = "wechat"


def id_card(n: int) -> str:
    """A valid (GB 11643) ID-card number for holder ``n``."""
    body = f"510102{20000101 + n // 1000 % 28:08d}{n % 1000:03d}"
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, _W, strict=True)) % 11]


def initial_password(idc: str) -> str:
    """R3: the last six digits of the ID-card number (the X dropped)."""
    return idc[-7:-1] if idc[-1] == "X" else idc[-6:]


@dataclass
class Holder:
    n: int
    number: str
    acct: int
    password: str
    card: MifareClassic1K | None = None
    card_no: str = ""
    old_cards: list[MifareClassic1K] = field(default_factory=list)
    phone: SigningKey | None = None
    session: str = ""
    serial: int = 0
    counter: int = 0
    codes_made: list[str] = field(default_factory=list)
    cancelled: bool = False


class Campus:
    def __init__(self, server: SimServer, rng: random.Random) -> None:
        self.server = server
        self.rng = rng
        self.holders: list[Holder] = []
        self.uids = 0
        self.provider = SigningKey.from_seed(rng.randbytes(32))
        self.txns = 0
        self.topped_up = 0  # fen the provider's notifications credited
        self.paid_out = 0  # fen paid out in cash at cancellations
        self.campus_tag = codes.campus_tag(server.config.campus_id)
        self.card_nos: dict[int, str] = {}  # id(card) → its card number
        self.reverse_paid: list[tuple[int, str, int]] = []  # (time, terminal, order)

    @property
    def ctx(self) -> Context:
        return self.server.context

    def setup(self, n_holders: int) -> None:
        ctx = self.ctx
        topups.register(
            ctx,
            CHANNEL,
            "https://pay.sim",
            self.provider.public.to_b64(),
            "https://ykt.sim/v1/topups/notify/wechat",
            "fleet",
        )
        for n in range(1, n_holders + 1):
            idc = id_card(n)
            a = accounts.add_account(
                ctx, number=f"S{n:06d}", name=f"持卡人{n}", type="student", id_card=idc
            )
            h = Holder(n, a["number"], int(a["id"]), initial_password(idc))
            self.issue(h)
            if n % 3 == 0:  # a third of the holders pay with their phones too
                self.enroll_phone(h)
            self.holders.append(h)

    def new_uid(self) -> str:
        self.uids += 1
        return f"{0x04000000 + self.uids:08X}"

    def issue(self, h: Holder) -> None:
        """The desk issues a (new) card: the old one is replaced (R11)."""
        got = accounts.issue_card(self.ctx, h.number, self.new_uid(), actor="desk")
        card = encoded_card(
            bytes.fromhex(got["uid"]),
            got["identity"],
            self.ctx.card_keys,
            tag=bytes.fromhex(got["tag"]) if got.get("tag") else None,
        )
        if h.card is not None:
            h.old_cards.append(h.card)
        h.card, h.card_no = card, got["card_no"]
        self.card_nos[id(card)] = h.card_no

    def enroll_phone(self, h: Holder) -> None:
        h.phone = SigningKey.from_seed(self.rng.randbytes(32))
        s = holders.login(self.ctx, h.number, h.password, h.phone.public.to_b64())
        h.session, h.serial, h.counter = s["token"], int(s["wallet"]["serial"]), 0

    def code(self, h: Holder, now_ms: int) -> str:
        assert h.phone is not None
        h.counter += 1
        raw = codes.make_code(
            h.phone,
            codes.Kind.PAY,
            self.campus_tag,
            h.serial,
            now_ms // 1000,
            h.counter,
        )
        text = codes.to_text(raw)
        h.codes_made.append(text)
        return text

    def reverse_pay(self, h: Holder, request_text: str) -> dict[str, Any]:
        """The phone scans the terminal's payment request and pays (query password)."""
        holder = holders.session_account(self.ctx, h.session)
        paid = reverse.pay(self.ctx, holder, request_text, h.password)
        self.reverse_paid.append((self.ctx.now_ms(), str(paid["terminal_id"]), int(paid["order"])))
        return paid

    def topup(self, h: Holder, amount: int, now_ms: int) -> dict[str, Any]:
        """R7 through the payment provider: an order, the provider's signed notification."""
        holder = holders.find_holder(self.ctx, h.number)
        assert holder is not None
        order = topups.create_order(self.ctx, holder, amount, CHANNEL, h.password, None)
        self.txns += 1
        note = paygate.Notification(
            id=f"N{self.txns:08d}",
            event="payment.succeeded",
            order_id=order["order_id"],
            txn_id=f"X{self.txns:08d}",
            channel=CHANNEL,
            amount_fen=amount,
            currency="CNY",
            paid_ms=now_ms,
            attach=h.number,
        )
        body = paygate.encode(note)
        got = topups.notify(self.ctx, CHANNEL, body, paygate.sign(self.provider, body, now_ms))
        self.topped_up += amount
        return got

    def card_no_of(self, card: MifareClassic1K) -> str | None:
        return self.card_nos.get(id(card))

    def after_restore(self) -> None:
        """The server was restored from a backup: a card issued after it is unknown there, so
        its holder goes back to the card the server knows."""
        known = {str(r["card_no"]) for r in self.ctx.db.all("SELECT card_no FROM cards")}
        for h in self.holders:
            while h.card_no not in known and h.old_cards:
                h.card = h.old_cards.pop()
                h.card_no = self.card_nos[id(h.card)]
