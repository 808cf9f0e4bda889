"""A kiosk SIGKILLed at every step of a reissue, and a dispenser that jams (issue 11, "every
step survives a crash or a fault"): after the restart the order is finished or undone, the fee is
charged once, exactly one new card works (the old one is declined), and a card that may be
half-encoded goes into the reject bin, never to the mouth.  Through the real lower layers
(tests/kioskutil.py)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import wait_until
from tests.kioskutil import Kiosk, running_kiosk

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def k(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kiosk]:
    yield from running_kiosk(tmp_path_factory, "kioskcrash")


CRASHES = [
    ("fed", "undone", 1),  # a blank at the encoder, the server not asked: nothing charged
    ("ordered", "at_mouth", 1),  # the server's order, nothing written yet: a fresh blank
    ("encode:20", "at_mouth", 1),  # mid-encode: the half-encoded card to the reject bin
    ("encoded", "at_mouth", 0),  # written and read back: verified again, issued
    ("done", "at_mouth", 0),  # the order closed: issued
]


@pytest.mark.parametrize(("where", "ends", "rejected"), CRASHES, ids=[c[0] for c in CRASHES])
def test_a_kiosk_sigkilled_at_any_step_ends_with_one_fee_and_one_working_card(
    k: Kiosk, tmp_path: Path, where: str, ends: str, rejected: int
) -> None:
    h = k.holder(topup=10000)
    k.kiosk.stop()
    k.kiosk = k.start_kiosk(YKT_KIOSK_CRASH=where)
    out = k.sim("reissue", "--number", h["number"], "--id-card", h["id_card"], check=False)
    assert out.returncode != 0  # the kiosk died
    crashed = k.kiosk
    assert crashed.proc is not None and crashed.proc.wait(10) == -signal.SIGKILL
    crashed.stop()
    assert k.disp.cli("status")["at_mouth"] is None  # nothing handed out yet
    k.kiosk = k.start_kiosk()  # the restart finishes or undoes the order
    done = wait_until(lambda: (s := k.kiosk.status())["open_orders"] == [] and s, 30)
    (order,) = [o for o in done["orders"] if o["number"] == h["number"]]
    assert (order["step"], order["rejected"]) == (ends, rejected), order
    status = k.disp.cli("status")
    if ends == "undone":
        assert status["at_mouth"] is None and status["at_encoder"] is None
        assert k.balance(h["number"]) == 10000  # nothing charged
        assert k.sale(h["card"], 100)["approved"]  # the old card still works
        return
    assert status["at_mouth"] == order["uid"]
    assert k.balance(h["number"]) == 10000 - 2000  # the fee once
    new = k.disp.take(tmp_path / "new.img")
    k.pos.wait_card_known(order["card_no"])
    assert k.sale(new, 100)["approved"]
    assert not k.sale(h["card"], 100)["approved"]


@pytest.mark.parametrize("where", ["encoder", "mouth"])
def test_a_jammed_dispenser_is_reset_and_the_reissue_finishes_charged_once(
    k: Kiosk, tmp_path: Path, where: str
) -> None:
    h = k.holder(topup=5000)
    k.disp.cli("fault", "--jam-at", where)
    out = k.sim("reissue", "--number", h["number"], "--id-card", h["id_card"])
    assert out["balance_fen"] == 3000 and k.balance(h["number"]) == 3000
    assert k.disp.cli("status")["at_mouth"] == out["uid"]
    new = k.disp.take(tmp_path / f"jam-{where}.img")
    k.pos.wait_card_known(out["card_no"])
    assert k.sale(new, 100)["approved"]
