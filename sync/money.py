"""Money is an integer number of fen (分); this module parses and formats it.

``parse_amount("12.50") == 1250`` and ``format_fen(1250) == "¥12.50"``.  Floats never appear.
"""

from __future__ import annotations

import re
import unicodedata

from sync.errors import MoneyError

#: The largest amount any single operation may carry (¥100,000.00); keeps bad input bounded.
MAX_AMOUNT_FEN = 10_000_000

#: ASCII digits only (after NFKC, so full-width ``１２.５０`` and ``￥`` are read as typed).
_AMOUNT = re.compile(r"^¥?\s*([0-9]{1,9})(?:\.([0-9]{1,2}))?$", re.ASCII)


def parse_amount(text: str, *, allow_zero: bool = False, max_fen: int = MAX_AMOUNT_FEN) -> int:
    """Parse a yuan amount such as ``"12.5"``, ``"12.50"`` or ``"¥3"`` into fen.

    Raises :class:`MoneyError` for anything else: negatives, more than two decimals, exponents,
    empty strings, amounts over ``max_fen``.
    """
    m = _AMOUNT.fullmatch(unicodedata.normalize("NFKC", text).strip())
    if not m:
        raise MoneyError(f"not an amount in yuan with at most two decimals: {text!r}")
    whole, frac = m.group(1), (m.group(2) or "")
    fen = int(whole) * 100 + int(frac.ljust(2, "0") or "0")
    check_fen(fen, allow_zero=allow_zero, max_fen=max_fen)
    return fen


def check_fen(fen: int, *, allow_zero: bool = False, max_fen: int = MAX_AMOUNT_FEN) -> int:
    """Return ``fen`` if it is a positive (or zero when allowed) bounded integer amount."""
    if isinstance(fen, bool) or not isinstance(fen, int):
        raise MoneyError(f"amount must be an integer number of fen, got {fen!r}")
    if fen < 0 or (fen == 0 and not allow_zero):
        raise MoneyError(f"amount must be positive, got {fen} fen")
    if fen > max_fen:
        raise MoneyError(f"amount {format_fen(fen)} is over the maximum {format_fen(max_fen)}")
    return fen


def format_fen(fen: int) -> str:
    """``1250 -> "¥12.50"``, ``-5 -> "-¥0.05"``."""
    sign = "-" if fen < 0 else ""
    whole, frac = divmod(abs(fen), 100)
    return f"{sign}¥{whole}.{frac:02d}"
