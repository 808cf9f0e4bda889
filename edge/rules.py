"""The rules of the card system (SPEC §1, R1-R20): the one place each of them is decided.

Both ends import this module: the server to keep accounts, the terminals to decide offline.
Every function names the rule it implements.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum

from edge.errors import IdCardError, RuleError


# --- R1 card types ---------------------------------------------------------------------------
class CardType(StrEnum):
    """R1: temporary (临时卡), student (学生卡), staff (教工卡), consumer (消费卡)."""

    TEMPORARY = "temporary"
    STUDENT = "student"
    STAFF = "staff"
    CONSUMER = "consumer"


CARD_TYPE_LABELS = {
    CardType.TEMPORARY: "临时卡",
    CardType.STUDENT: "学生卡",
    CardType.STAFF: "教工卡",
    CardType.CONSUMER: "消费卡",
}


# --- R2 one account: statuses that block every credential -------------------------------------
class AccountStatus(StrEnum):
    NORMAL = "normal"
    LOST = "lost"  # R10
    FROZEN = "frozen"  # R12
    EXPIRED = "expired"  # R13
    CANCELLED = "cancelled"  # R14


#: R2: whatever blocks the account blocks the card and the phone codes alike.
DECLINE_REASONS = {
    AccountStatus.LOST: "card reported lost (挂失)",
    AccountStatus.FROZEN: "account frozen (冻结): see the service desk",
    AccountStatus.EXPIRED: "card expired (过期): see the service desk",
    AccountStatus.CANCELLED: "account cancelled (销户)",
}


def blocking_reason(status: str) -> str | None:
    """R2: the decline reason for an account status, or None when the account may pay."""
    st = AccountStatus(status)
    return None if st is AccountStatus.NORMAL else DECLINE_REASONS[st]


# --- R3 initial passwords; GB 11643 ID-card numbers -------------------------------------------
_GB11643_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_GB11643_CHECK = "10X98765432"


def normalize_id_card(id_card: str) -> str:
    """Strip spaces, read full-width characters as ASCII (NFKC) and upper-case a trailing x."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", id_card)).upper()


def validate_id_card(id_card: str) -> str:
    """Return the normalized 18-character ID-card number or raise :class:`IdCardError`.

    The last character is the GB 11643 (ISO 7064 MOD 11-2) check digit.
    """
    n = normalize_id_card(id_card)
    if not re.fullmatch(r"[0-9]{17}[0-9X]", n):
        raise IdCardError(f"ID-card number must be 17 digits and a digit or X, got {id_card!r}")
    total = sum(int(d) * w for d, w in zip(n[:17], _GB11643_WEIGHTS, strict=True))
    if _GB11643_CHECK[total % 11] != n[17]:
        raise IdCardError(f"ID-card number {n[:6]}…{n[-4:]} fails its GB 11643 check digit")
    return n


def initial_password(id_card: str) -> str:
    """R3: the initial query and consumption password from an ID-card number.

    The last six digits; if the last character is a letter, drop it and take the last six
    digits of the rest.  Masked numbers (``510*****9901013052``) are accepted as the guide
    writes them; only the tail matters.
    """
    n = normalize_id_card(id_card)
    if n and n[-1].isalpha():
        n = n[:-1]
    tail = n[-6:]
    if not re.fullmatch(r"[0-9]{6}", tail):
        raise IdCardError(
            f"cannot take an initial password from {id_card!r}: need six digits at the end"
        )
    return tail


def check_password_format(pw: str) -> str:
    """R3/R4/R5: passwords are exactly six digits."""
    if not re.fullmatch(r"[0-9]{6}", pw or ""):
        raise RuleError("a password is exactly six digits")
    return pw


# --- R6 daily limit ----------------------------------------------------------------------------
DEFAULT_DAILY_LIMIT_FEN = 5000  # ¥50.00
#: Wrong consumption passwords allowed before the password locks (only the desk clears it).
DEFAULT_PIN_MAX_TRIES = 3


@dataclass(frozen=True)
class LimitTracker:
    """R6: the amount spent since campus midnight or since the last correct consumption
    password, whichever is later.  ``day`` is the campus date the amount belongs to."""

    day: str
    spent_fen: int

    def spent_on(self, today: str) -> int:
        return self.spent_fen if self.day == today else 0

    def needs_password(self, today: str, amount_fen: int, limit_fen: int) -> bool:
        """R6: a purchase that would take the tracked amount over the limit asks for the
        consumption password."""
        return self.spent_on(today) + amount_fen > limit_fen

    def after_purchase(self, today: str, amount_fen: int, password_ok: bool) -> LimitTracker:
        """R6: a correct password resets the tracked amount; the purchase counts from zero."""
        base = 0 if password_ok else self.spent_on(today)
        return LimitTracker(today, base + amount_fen)


# --- R7 top-up channels ------------------------------------------------------------------------
class Channel(StrEnum):
    APP = "app"  # 学付宝
    WECHAT = "wechat"  # 新微校
    ALIPAY = "alipay"  # lands in the transition balance (过渡余额)
    BANK = "bank"  # "to be opened"
    CASH = "cash"  # at the service desk


#: R7: every channel is on by default except the bank app.
DEFAULT_CHANNELS = {c.value: c is not Channel.BANK for c in Channel}


def lands_in_transition(channel: str) -> bool:
    """R7: Alipay money first lands in the transition balance."""
    return Channel(channel) is Channel.ALIPAY


# --- R8 payment methods ------------------------------------------------------------------------
class Method(StrEnum):
    CARD = "card"
    QR_FORWARD = "qr-forward"  # 正扫: the terminal reads the phone's payment code
    QR_REVERSE = "qr-reverse"  # 反扫: only while the terminal is offline


def moves_transition(method: str) -> bool:
    """R7: the transition balance moves into the balance at the next *card* transaction."""
    return Method(method) is Method.CARD
