"""The rules of the card system (docs/rules.md, R1-R20): the one place each of them is decided.

Both ends import this module: the server to keep accounts, the terminals to decide offline.
Every function names the rule it implements.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from sync.errors import IdCardError, RuleError


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

    def then(self, today: str, purchases: Iterable[tuple[int, bool]]) -> LimitTracker:
        """R6: this amount as of ``today``, then purchases it does not hold yet (amount,
        password ok), in order: the server's holds, authorized but not yet synced."""
        out = LimitTracker(today, self.spent_on(today))
        for amount_fen, password_ok in purchases:
            out = out.after_purchase(today, amount_fen, password_ok)
        return out


def card_tap_needs_password(
    card: LimitTracker, account: LimitTracker, today: str, amount_fen: int, limit_fen: int
) -> bool:
    """R6 at a card tap: the limit is the account's.  The card's counters hold its sales at
    every terminal (offline ones too), the account's amount the day's phone payments and every
    synced sale; the password is asked for when either would pass the limit."""
    return card.needs_password(today, amount_fen, limit_fen) or account.needs_password(
        today, amount_fen, limit_fen
    )


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


# --- R9 queries: what the bills and the transaction flow hold ---------------------------------
#: R9 bills (账单): top-ups and purchases.  A purchase is a sale at a POS, a transfer to a dorm
#: room's electricity account (R15) and a refund, which corrects a purchase or a top-up; a
#: reversal corrects a phone-code sale found at sync to be a double spend (R12, docs/codes.md).
BILL_KINDS = ("topup", "sale", "electricity", "refund", "reversal")
#: R9 transaction flow (交易流水): account operations, top-ups and purchases.  Beside the bills'
#: money it holds the account's own money operations (the transition balance moving in R7, the
#: reissue fee R11, the pay-out at cancellation R14) and every non-money account operation
#: (loss, unlock, freeze, password and limit changes, cards, extension, …).
FLOW_MONEY_KINDS = (*BILL_KINDS, "transition", "fee", "payout")


# --- R10 loss and unlock: card-less, rate limited ---------------------------------------------
#: R10: card-less loss/unlock requests allowed per number, and per client address, per window.
CARDLESS_PER_NUMBER = 5
CARDLESS_PER_CLIENT = 30
CARDLESS_WINDOW_S = 600


# --- R11 reissue -------------------------------------------------------------------------------
#: R11: self-service kiosks reissue only student and staff cards; others go to the desk.
KIOSK_REISSUE_TYPES = frozenset({CardType.STUDENT, CardType.STAFF})


def kiosk_may_reissue(card_type: str) -> bool:
    """R11: a self-service reissue kiosk reissues student and staff cards only."""
    return CardType(card_type) in KIOSK_REISSUE_TYPES


def reissue_identity_ok(card_type: str, via: str) -> bool:
    """R11: student and staff cards: number + ID-card number, or the app's code; temporary
    (and, at the desk, consumer) cards: card number + ID card."""
    if CardType(card_type) in KIOSK_REISSUE_TYPES:
        return via in ("number+id_card", "auth_code")
    return via == "card_no+id_card"


# --- R12 freeze --------------------------------------------------------------------------------
#: R12: the automatic freeze rules an operator can switch on or off (policy keys).
AUTO_FREEZE_RULES = {
    "auto_freeze_negative_balance": "a negative balance after offline purchases",
    "auto_freeze_pin_lockout": "repeated wrong consumption passwords",
    "auto_freeze_query_lockout": "repeated wrong query passwords",
}


# --- R13 extension, R14 cancellation -------------------------------------------------------------
def extension_status(status: str) -> AccountStatus:
    """R13: extending an expired account makes it usable again; other states are kept."""
    st = AccountStatus(status)
    return AccountStatus.NORMAL if st is AccountStatus.EXPIRED else st


#: R14: on cancellation the remaining balance (card and transition balance) is paid out to the
#: holder in cash at the desk; a negative balance must be settled (cash top-up) first.
CANCEL_PAYOUT_CHANNEL = Channel.CASH


# --- R15 electricity, R16 login, R17 found cards ---------------------------------------------------
def may_spend_online(status: str) -> bool:
    """R2/R15: the app may move money out of an account that is normal or only reported lost
    (the holder signed in with the query password); frozen, expired and cancelled accounts
    may not."""
    return AccountStatus(status) in (AccountStatus.NORMAL, AccountStatus.LOST)


def sso_allowed(card_type: str) -> bool:
    """R16: campus single sign-on is for students and staff; everyone else signs in with the
    temporary card number and the query password."""
    return CardType(card_type) in (CardType.STUDENT, CardType.STAFF)


def found_card_lookup_allowed(status: str) -> bool:
    """R17: the owner looks a found card up after reporting the loss."""
    return AccountStatus(status) is AccountStatus.LOST
