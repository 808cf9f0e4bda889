"""What tests/test_dispenser_sim.py runs in child processes, each a PC/SC client of the
module's private pcscd (libpcsclite reads ``PCSCLITE_CSOCK_NAME`` once per process, so the test
process itself talks to no pcscd).

``python -m tests.dispenser_child read READER``        the blank at the encoder: its UID, or ""
``python -m tests.dispenser_child write READER HEX``   write block 1 of the card at the encoder
``python -m tests.dispenser_child hold URL``           open the dispenser, feed a blank, print
                                                        "fed", then ask its status until killed
``python -m tests.dispenser_child time URL READER N DIR NAME``   N issues, timed: JSON
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from drivers.card.mifare_classic import KEY_A, MifareClassic
from drivers.reader import pcsc
from drivers.registry import open_device
from sim.dispenser import process
from sim.harness import pcscd
from tests.dispenser_contract import TRANSPORT_KEY, read_blank


def _read(reader: str) -> None:
    r = pcsc.open_url("pcsc://" + reader)
    card = r.current_card()
    print(read_blank(card) if card is not None else "")


def _write(reader: str, data: str) -> None:
    card = pcsc.open_url("pcsc://" + reader).current_card()
    assert card is not None, "no card at the encoder"
    mc = MifareClassic(card)
    with card.exclusive():
        mc.load_key(0, TRANSPORT_KEY)
        mc.authenticate(1, KEY_A, 0)
        mc.write_block(1, bytes.fromhex(data))
    print("written")


def _hold(url: str) -> None:
    d = open_device("dispenser", url)
    d.reset()
    d.to_encoder()
    print("fed", flush=True)
    while True:
        d.status()


def _time(url: str, reader: str, n: int, where: str, name: str) -> None:
    """to_encoder until pcscd shows the card, to_mouth; the holder takes it and walks away
    (pcscd sees the encoder empty) before the next one; ``n`` times."""
    d = open_device("dispenser", url)
    r = pcsc.open_url("pcsc://" + reader)
    d.reset()
    feed, mouth = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        d.to_encoder()
        card = r.current_card()
        assert card is not None, "the card is not in pcscd when to_encoder returns"
        card.close()
        t1 = time.perf_counter()
        d.to_mouth()
        t2 = time.perf_counter()
        feed.append(t1 - t0)
        mouth.append(t2 - t1)
        process.request(Path(where), name, "take")
        assert pcscd.wait_slot(Path(os.environ["PCSCLITE_CSOCK_NAME"]), reader, False, 3.0)
    print(json.dumps({"to_encoder_visible": feed, "to_mouth": mouth}))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "read":
        _read(args[0])
    elif cmd == "write":
        _write(args[0], args[1])
    elif cmd == "hold":
        _hold(args[0])
    elif cmd == "time":
        _time(args[0], args[1], int(args[2]), args[3], args[4])
    else:
        raise SystemExit(f"unknown command {cmd}")
