"""The simulated CRT-591 in its own process (``ykt sim dispenser``) and the real driver over its
pseudo-terminal, with pyserial, pcscd and vpcd running for real: the dispenser contract with the
encoder read through pcscd, the commands of test engineers, a kiosk SIGKILLed mid-command, and
the time a reissue's dispenser part takes."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drivers.registry import open_device
from sim import cardimage
from sim.dispenser import process
from sim.harness import pcscd
from tests.dispenser_contract import BLANKS, LOW_AT, REJECT_CAPACITY, Rig, run_contract
from tests.helpers import ykt

ROOT = Path(__file__).resolve().parent.parent
ENCODER_SLOT = 1


@pytest.fixture(scope="module")
def readers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pcscd.VirtualReaders]:
    vr = pcscd.VirtualReaders(tmp_path_factory.mktemp("disp"))
    vr.start(2)
    yield vr
    vr.stop()


def child(*args: str, readers: pcscd.VirtualReaders, timeout: float = 60) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "tests.dispenser_child", *args],
        env={**os.environ, "PCSCLITE_CSOCK_NAME": str(readers.socket_path)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip()


class Unit:
    """One ``ykt sim dispenser`` process in the module's reader directory."""

    def __init__(self, readers: pcscd.VirtualReaders, name: str, blanks: int, *extra: str):
        self.readers, self.name = readers, name
        self.dir = str(readers.dir)
        out = ykt(
            "sim", "dispenser", "start", "--dir", self.dir, "--name", name,
            "--blanks", str(blanks), "--encoder-slot", str(ENCODER_SLOT), "--json", *extra,
        )  # fmt: skip
        self.started = json.loads(out.stdout)
        self.url = f"serial://{self.started['device']}?baud=9600"
        self.reader = readers.slot(ENCODER_SLOT)["name"]

    def cli(self, *args: str) -> dict[str, Any]:
        out = ykt("sim", "dispenser", *args, "--dir", self.dir, "--name", self.name, "--json")
        return dict(json.loads(out.stdout))

    def summary(self) -> dict[str, Any]:
        return process.request(self.readers.dir, self.name, "summary")

    def encoder_uid(self) -> str | None:
        """The card at the encoder as pcscd shows it (a blank, read with the transport key),
        which must be the one the unit says is there; None once pcscd saw the slot empty."""
        there = self.summary()["at_encoder"]
        if there is None:
            gone = pcscd.wait_slot(self.readers.socket_path, self.reader, False, 3.0)
            assert gone, "the card left the encoder, pcscd still shows one"
            return None
        uid = child("read", self.reader, readers=self.readers)
        assert uid == there, f"pcscd shows {uid!r} at the encoder, the unit says {there}"
        return uid

    def take(self, out: Path) -> str:
        got = self.cli("take", "--out", str(out), "--force")
        assert cardimage.load(out).uid.hex().upper() == got["uid"]
        return str(got["uid"])

    def stop(self) -> None:
        ykt("sim", "dispenser", "stop", "--dir", self.dir, "--name", self.name)


def test_the_contract_over_a_pty_with_the_encoder_in_pcscd(
    readers: pcscd.VirtualReaders, tmp_path: Path
) -> None:
    unit = Unit(
        readers, "contract", BLANKS, "--low-at", str(LOW_AT),
        "--reject-capacity", str(REJECT_CAPACITY), "--seed", "4",
    )  # fmt: skip
    try:
        rig = Rig(
            open_device("dispenser", unit.url),
            unit.encoder_uid,
            lambda where: (
                unit.cli("fault", *(["--jam-at", where] if where else ["--clear"])) and None
            ),
            lambda: str(process.request(readers.dir, "contract", "take")["uid"]),
            unit.summary,
        )
        run_contract(rig)
        status = unit.cli("status")
        assert {"hopper", "rejected", "issued", "at_mouth"} <= set(status)
        assert status["hopper"] == 0 and status["running"] is True
    finally:
        unit.stop()
    stopped = unit.cli("status")  # the state file outlives the process
    assert stopped["running"] is False and len(stopped["issued"]) == 4


def test_what_the_kiosk_writes_at_the_encoder_leaves_with_the_holder(
    readers: pcscd.VirtualReaders, tmp_path: Path
) -> None:
    unit = Unit(readers, "writes", 3)
    d = open_device("dispenser", unit.url)
    try:
        d.to_encoder()
        data = b"ykt-dispenser-01".hex()
        assert child("write", unit.reader, data, readers=readers) == "written"
        d.to_mouth()
        card = tmp_path / "card.img"
        uid = unit.take(card)
        assert bytes(cardimage.load(card).blocks[1]).hex() == data
        # the holder puts it on another reader: pcscd has it there
        put = ykt("sim", "card", "present", str(card), "--dir", unit.dir, "--slot", "0", "--json")
        assert json.loads(put.stdout)["uid"] == uid
        ykt("sim", "card", "remove", "--dir", unit.dir, "--slot", "0")
        with pytest.raises(AssertionError, match="no card waits"):
            unit.take(tmp_path / "again.img")
        bad = ykt("sim", "dispenser", "fault", "--dir", unit.dir, "--name", "writes", check=False)
        assert bad.returncode == 2 and "--jam-at" in bad.stderr
    finally:
        d.close()
        unit.stop()


def test_a_sigkilled_kiosk_comes_back_to_the_same_unit(readers: pcscd.VirtualReaders) -> None:
    unit = Unit(readers, "killed", 5)
    holder = subprocess.Popen(
        [sys.executable, "-m", "tests.dispenser_child", "hold", unit.url],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "fed"
        holder.send_signal(signal.SIGKILL)  # in the middle of a status exchange, or between
        holder.wait(10)
        d = open_device("dispenser", unit.url)  # the same line, stale bytes and all
        d.reset()
        st = d.status()
        assert (st.card_at, st.jammed) == ("encoder", False)
        d.to_encoder()  # no second blank
        assert unit.summary()["hopper"] == 4
        d.to_mouth()
        assert unit.summary()["at_mouth"] is not None
        d.close()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
        if holder.stdout is not None:
            holder.stdout.close()
        unit.stop()


def test_the_dispenser_part_of_a_reissue_is_fast(readers: pcscd.VirtualReaders) -> None:
    """to_encoder until pcscd shows the card, then to_mouth: a reissue must fit p99 ≤ 3 s with
    the encoding; the dispenser's share is measured (figures in the test output, -s)."""
    n = 15
    unit = Unit(readers, "timed", n)
    try:
        out = child("time", unit.url, unit.reader, str(n), unit.dir, "timed", readers=readers)
    finally:
        unit.stop()
    t = json.loads(out)
    feed, mouth = sorted(t["to_encoder_visible"]), sorted(t["to_mouth"])
    print(
        f"\ndispenser over a pty, {n} issues: to_encoder + card in pcscd "
        f"p50 {statistics.median(feed) * 1000:.0f} ms, max {feed[-1] * 1000:.0f} ms; "
        f"to_mouth p50 {statistics.median(mouth) * 1000:.1f} ms, max {mouth[-1] * 1000:.1f} ms"
    )
    assert feed[-1] < 1.5 and mouth[-1] < 0.5
