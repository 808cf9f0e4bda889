"""sync.money: yuan text <-> integer fen, and bad amounts refused with MoneyError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync.errors import MoneyError
from sync.money import MAX_AMOUNT_FEN, check_fen, format_fen, parse_amount


@pytest.mark.parametrize(
    ("text", "fen"),
    [
        ("12.50", 1250),
        ("12.5", 1250),
        ("12", 1200),
        ("0.01", 1),
        ("¥3", 300),
        ("￥3.05", 305),
        (" 7.00 ", 700),
        ("100000.00", MAX_AMOUNT_FEN),
        ("１２.５０", 1250),  # full-width digits, as a Chinese input method types them
    ],
)
def test_parse_amount(text: str, fen: int) -> None:
    assert parse_amount(text) == fen


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "-1",
        "-0.01",
        "+1",
        "12.345",
        "12.",
        ".5",
        "1e3",
        "1,000",
        "12,50",
        "abc",
        "NaN",
        "inf",
        "0x10",
        "1_000",
        "0",
        "0.00",
        "100000.01",
        "9999999999",
        "١٢",  # Arabic-Indic digits are not an amount on a campus POS
        "12.5\n3",
        "¥",
    ],
)
def test_parse_amount_refuses(text: str) -> None:
    with pytest.raises(MoneyError):
        parse_amount(text)


def test_zero_only_when_allowed() -> None:
    assert parse_amount("0", allow_zero=True) == 0
    assert check_fen(0, allow_zero=True) == 0
    with pytest.raises(MoneyError):
        check_fen(0)


@pytest.mark.parametrize("bad", [True, False, 1.0, "100", None, -1, MAX_AMOUNT_FEN + 1])
def test_check_fen_refuses(bad: object) -> None:
    with pytest.raises(MoneyError):
        check_fen(bad)  # type: ignore[arg-type]


def test_custom_maximum() -> None:
    assert parse_amount("5.00", max_fen=500) == 500
    with pytest.raises(MoneyError):
        parse_amount("5.01", max_fen=500)


@pytest.mark.parametrize(
    ("fen", "text"),
    [(1250, "¥12.50"), (5, "¥0.05"), (0, "¥0.00"), (-5, "-¥0.05"), (-1250, "-¥12.50")],
)
def test_format_fen(fen: int, text: str) -> None:
    assert format_fen(fen) == text


@given(st.integers(min_value=1, max_value=MAX_AMOUNT_FEN))
def test_format_then_parse_round_trips(fen: int) -> None:
    assert parse_amount(format_fen(fen)) == fen


@given(st.text(max_size=20))
def test_parse_amount_only_raises_money_error(text: str) -> None:
    try:
        fen = parse_amount(text)
    except MoneyError:
        return
    assert isinstance(fen, int) and 0 < fen <= MAX_AMOUNT_FEN
