"""The bounds of every integer that crosses a boundary of ykt — journal records and the other
wire types (:mod:`sync.records`), the server's HTTP API (its pydantic models), the terminals'
control APIs — in one place, so that a value one part accepts every other part can hold.

=====================  ==========================  ==========================================
kind                   range                       why
=====================  ==========================  ==========================================
an amount of money     1 .. ``MAX_AMOUNT_FEN``     one operation (a sale, a top-up, a
                       (0 where "nothing" is a     transfer, a limit) is at most ¥100,000.00
                       value: ``FenOrZero``)       (:data:`sync.money.MAX_AMOUNT_FEN`)
a balance or a total   ±``MAX_TOTAL_FEN``          what an account or a terminal holds, either
                                                   sign (an overdrawn account)
an id, a sequence      0 (or 1) .. ``MAX_ID``      ids, sequence numbers, versions, counters,
number, a counter                                  order numbers: exact in the JSON numbers of
                                                   every language (IEEE doubles) and in a 64-bit
                                                   database column, with room to add 1024 of
                                                   them without overflow
a time                 0 .. ``MAX_TS_MS``          epoch milliseconds up to the end of year 9999
a card counter         what the card stores        docs/card-format.md: generation and tap
                                                   counter 16 bits, taps and spent amount 24
                                                   bits, tries and reset epoch 8 bits
=====================  ==========================  ==========================================

Each type below carries its bounds twice, for the two libraries that read it: msgspec
(``Meta``, the wire types) and pydantic (``Field``, the HTTP APIs).  Both are **strict**:
``true``, ``"100"`` and ``100.0`` are not integers (pydantic's lax mode would take them).
Query and path parameters arrive as text, so they use the ``MAX_*`` constants with FastAPI's
own ``Query``/``Path`` instead.
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta
from pydantic import Field

from sync.money import MAX_AMOUNT_FEN

__all__ = [
    "MAX_AMOUNT_FEN",
    "MAX_CARD_BYTE",
    "MAX_CARD_COUNT",
    "MAX_CARD_WORD",
    "MAX_ID",
    "MAX_TOTAL_FEN",
    "MAX_TS_MS",
    "CardByte",
    "CardCount",
    "CardWord",
    "Fen",
    "FenOrZero",
    "Id",
    "PosId",
    "Total",
    "Ts",
    "in_id_range",
    "parse_id",
]

#: ids, sequence numbers, versions, counters (2^53 - 1: exact in every JSON reader)
MAX_ID = 2**53 - 1
#: a balance or running total, either sign
MAX_TOTAL_FEN = MAX_ID
#: epoch milliseconds of 9999-12-31T23:59:59.999Z
MAX_TS_MS = 253_402_300_799_999
#: card counters (docs/card-format.md)
MAX_CARD_WORD = 0xFFFF
MAX_CARD_COUNT = 0xFFFFFF
MAX_CARD_BYTE = 0xFF

Fen = Annotated[
    int,
    Meta(ge=1, le=MAX_AMOUNT_FEN),
    Field(strict=True, ge=1, le=MAX_AMOUNT_FEN, description="an amount in fen (分), positive"),
]
FenOrZero = Annotated[
    int,
    Meta(ge=0, le=MAX_AMOUNT_FEN),
    Field(strict=True, ge=0, le=MAX_AMOUNT_FEN, description="an amount in fen (分)"),
]
Total = Annotated[
    int,
    Meta(ge=-MAX_TOTAL_FEN, le=MAX_TOTAL_FEN),
    Field(strict=True, ge=-MAX_TOTAL_FEN, le=MAX_TOTAL_FEN, description="fen, either sign"),
]
Id = Annotated[int, Meta(ge=0, le=MAX_ID), Field(strict=True, ge=0, le=MAX_ID)]
PosId = Annotated[int, Meta(ge=1, le=MAX_ID), Field(strict=True, ge=1, le=MAX_ID)]
Ts = Annotated[
    int,
    Meta(ge=0, le=MAX_TS_MS),
    Field(strict=True, ge=0, le=MAX_TS_MS, description="epoch milliseconds"),
]
CardWord = Annotated[int, Meta(ge=0, le=MAX_CARD_WORD), Field(strict=True, ge=0, le=MAX_CARD_WORD)]
CardCount = Annotated[
    int, Meta(ge=0, le=MAX_CARD_COUNT), Field(strict=True, ge=0, le=MAX_CARD_COUNT)
]
CardByte = Annotated[int, Meta(ge=0, le=MAX_CARD_BYTE), Field(strict=True, ge=0, le=MAX_CARD_BYTE)]


def in_id_range(value: object) -> bool:
    """An integer (not a bool) from 0 to :data:`MAX_ID`."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID


def parse_id(text: str) -> int | None:
    """The id written in ``text`` (ASCII digits, no sign, at most :data:`MAX_ID`), else None:
    ``str.isdigit`` also takes "²" and "١", which ``int`` refuses or reads as another number."""
    if not text or len(text) > 16 or not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if value <= MAX_ID else None
