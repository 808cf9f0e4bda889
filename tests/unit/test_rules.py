"""sync.rules: R3 initial passwords and GB 11643 ID-card numbers, R6 LimitTracker, R2/R7/R8."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync import rules
from sync.errors import IdCardError, RuleError
from sync.rules import LimitTracker, card_tap_needs_password
from tests.helpers import id_card


# --- R3 ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("number", "password"),
    [
        # the guide's two examples, masked as the guide writes them
        ("510*****9901013052", "013052"),
        ("510*****990101305X", "101305"),
        # docs/rules.md's unmasked, valid forms of the same two
        ("510102199901013052", "013052"),
        ("51011919990101305X", "101305"),
        # odd inputs
        ("51011919990101305x", "101305"),  # lowercase x
        ("510119 19990101 305x", "101305"),  # spaces inside
        (" 510102199901013052 ", "013052"),  # spaces around
        ("510102199901013052\n", "013052"),
        ("５１０１０２１９９９０１０１３０５２", "013052"),  # full-width digits
    ],
)
def test_r3_initial_password(number: str, password: str) -> None:
    got = rules.initial_password(number)
    assert got == password
    assert rules.check_password_format(got) == password


@pytest.mark.parametrize(
    "number",
    ["", "X", "12345", "1234X", "     ", "01305", "abcdefgh", "01305Y", "٠١٣٠٥٢", "0130-52"],
)
def test_r3_too_short_or_not_digits_is_a_clear_error(number: str) -> None:
    with pytest.raises(IdCardError, match="six digits"):
        rules.initial_password(number)


def test_r3_id_card_error_is_a_rule_error() -> None:
    assert issubclass(IdCardError, RuleError) and issubclass(IdCardError, ValueError)


@pytest.mark.parametrize(
    "number",
    ["510102199901013052", "51011919990101305X", "51011919990101305x", "510119 19990101 305X"],
)
def test_gb11643_valid(number: str) -> None:
    assert rules.validate_id_card(number) == rules.normalize_id_card(number)


def test_gb11643_full_width_normalizes_to_ascii() -> None:
    assert rules.validate_id_card("５１０１０２１９９９０１０１３０５２") == "510102199901013052"


@pytest.mark.parametrize(
    ("number", "why"),
    [
        ("510102199901013051", "check digit"),  # last digit wrong
        ("510102199901013053", "check digit"),
        ("51011919990101305 0", "check digit"),
        ("510119199901013059", "check digit"),  # should be X
        ("510*****9901013052", "17 digits"),  # masked numbers are not valid accounts
        ("51010219990101305", "17 digits"),  # too short
        ("5101021999010130522", "17 digits"),  # too long
        ("51010219990101305Y", "17 digits"),
        ("X10102199901013052", "17 digits"),
        ("٥١٠١٠٢١٩٩٩٠١٠١٣٠٥٢", "17 digits"),  # Arabic-Indic digits
        ("", "17 digits"),
    ],
)
def test_gb11643_invalid(number: str, why: str) -> None:
    with pytest.raises(IdCardError, match=why):
        rules.validate_id_card(number)


@given(st.integers(min_value=0, max_value=999), st.integers(min_value=0, max_value=16))
def test_gb11643_any_single_digit_change_is_caught(n: int, pos: int) -> None:
    """ISO 7064 MOD 11-2 catches every single-digit substitution."""
    good = id_card(n)
    assert rules.validate_id_card(good) == good
    for d in "0123456789":
        if d != good[pos]:
            with pytest.raises(IdCardError):
                rules.validate_id_card(good[:pos] + d + good[pos + 1 :])


@given(st.text(max_size=30))
def test_id_card_functions_only_raise_id_card_error(text: str) -> None:
    for fn in (rules.validate_id_card, rules.initial_password):
        try:
            out = fn(text)
        except IdCardError:
            continue
        assert out.isascii()
    try:
        pw = rules.initial_password(text)
    except IdCardError:
        return
    assert len(pw) == 6 and pw.isdigit() and pw.isascii()


@pytest.mark.parametrize("pw", ["01305", "0130522", "01305a", "", "０１３０５２", " 013052"])
def test_passwords_are_exactly_six_ascii_digits(pw: str) -> None:
    with pytest.raises(RuleError):
        rules.check_password_format(pw)


# --- R6 -----------------------------------------------------------------------------------------
TODAY, YESTERDAY = "2026-03-02", "2026-03-01"


def test_r6_counts_from_midnight() -> None:
    t = LimitTracker(YESTERDAY, 4900)
    assert t.spent_on(TODAY) == 0
    assert t.spent_on(YESTERDAY) == 4900
    assert not t.needs_password(TODAY, 5000, 5000)


def test_r6_limit_boundary() -> None:
    t = LimitTracker(TODAY, 3000)
    assert not t.needs_password(TODAY, 2000, 5000)  # exactly at the limit is allowed
    assert t.needs_password(TODAY, 2001, 5000)


def test_r6_purchase_accumulates_and_correct_password_resets() -> None:
    t = LimitTracker("", 0).after_purchase(TODAY, 1250, password_ok=False)
    assert t == LimitTracker(TODAY, 1250)
    t = t.after_purchase(TODAY, 3000, password_ok=False)
    assert t.spent_on(TODAY) == 4250
    assert t.needs_password(TODAY, 4500, 5000)
    # a correct password resets the tracked amount; the purchase counts from zero
    t = t.after_purchase(TODAY, 4500, password_ok=True)
    assert t == LimitTracker(TODAY, 4500)
    assert not t.needs_password(TODAY, 500, 5000)
    assert t.needs_password(TODAY, 501, 5000)


def test_r6_first_purchase_of_a_new_day_starts_from_zero() -> None:
    t = LimitTracker(YESTERDAY, 4999).after_purchase(TODAY, 100, password_ok=False)
    assert t == LimitTracker(TODAY, 100)


def test_r6_single_purchase_over_the_limit_needs_the_password() -> None:
    assert LimitTracker("", 0).needs_password(TODAY, 5001, 5000)


# --- R2, R7, R8 ----------------------------------------------------------------------------------
def test_r2_blocking_statuses() -> None:
    assert rules.blocking_reason("normal") is None
    for st_ in ("lost", "frozen", "expired", "cancelled"):
        assert rules.blocking_reason(st_)
    with pytest.raises(ValueError):
        rules.blocking_reason("weird")


def test_r7_channels_default_and_transition() -> None:
    assert rules.DEFAULT_CHANNELS == {
        "app": True,
        "wechat": True,
        "alipay": True,
        "bank": False,
        "cash": True,
    }
    assert rules.lands_in_transition("alipay")
    assert not any(rules.lands_in_transition(c) for c in ("app", "wechat", "bank", "cash"))


def test_r7_only_card_transactions_move_the_transition_balance() -> None:
    assert rules.moves_transition("card")
    assert not rules.moves_transition("qr-forward")
    assert not rules.moves_transition("qr-reverse")


def test_r6_tracked_amount_then_the_holds_in_order() -> None:
    # yesterday's amount does not count; a correct password among the holds resets it
    assert LimitTracker(YESTERDAY, 4900).then(TODAY, [(1000, False)]) == LimitTracker(TODAY, 1000)
    held = [(2000, False), (500, True), (700, False)]
    assert LimitTracker(TODAY, 3000).then(TODAY, held) == LimitTracker(TODAY, 1200)
    assert LimitTracker(TODAY, 3000).then(TODAY, []) == LimitTracker(TODAY, 3000)


def test_r6_a_card_tap_asks_when_the_card_or_the_account_would_pass_the_limit() -> None:
    empty, spent = LimitTracker("", 0), LimitTracker(TODAY, 4500)
    assert not card_tap_needs_password(empty, empty, TODAY, 5000, 5000)
    assert card_tap_needs_password(spent, empty, TODAY, 1000, 5000)  # the card's own sales
    assert card_tap_needs_password(empty, spent, TODAY, 1000, 5000)  # e.g. phone payments
    assert not card_tap_needs_password(spent, spent, TODAY, 500, 5000)


def test_r3_initial_passwords_from_the_id_card_number() -> None:
    """R3: last six digits; a trailing letter is dropped first (the guide's own examples)."""
    assert rules.initial_password("510102199901013052") == "013052"
    assert rules.initial_password("51011919990101305X") == "101305"
    assert rules.initial_password("510*****9901013052") == "013052"
    assert rules.initial_password("510*****990101305X") == "101305"
