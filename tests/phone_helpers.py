"""Helpers for the phone-code tests: the simulated phone, pictures of codes, the ``ykt`` CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import cv2

from sim import phone_screen, wallet, wallet_codes
from sync import codes
from tests.helpers import PosProc, ServerProc, wait_until, ykt


def ykt_json(*args: str) -> dict[str, Any]:
    out = ykt(*args, "--json")
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, f"--json must print one JSON object, got:\n{out.stdout}"
    data = json.loads(lines[0])
    assert isinstance(data, dict)
    return data


class Phone:
    """A signed-in simulated phone (the wallet file lives in ``path``)."""

    def __init__(self, server: ServerProc, number: str, password: str, path: Path) -> None:
        self.path = path
        self.w = wallet.login(server.url, number, password)
        self.w.save(path)

    def code(self, kind: codes.Kind = codes.Kind.PAY, **kw: Any) -> str:
        self.w = wallet.Wallet.load(self.path)
        return str(wallet_codes.make_code(self.w, self.path, kind, **kw)["text"])

    def scan(self, request_text: str, **kw: Any) -> dict[str, Any]:
        self.w = wallet.Wallet.load(self.path)
        return wallet_codes.scan(self.w, request_text, path=self.path, **kw)


def png(text: str, look: phone_screen.Look | None = None, seed: int = 0) -> bytes:
    """A camera picture of a phone showing ``text`` (the bare screen without ``look``)."""
    if look is None:
        img = 255 - phone_screen.qr_matrix(text) * 255
        img = cv2.resize(img, None, fx=8, fy=8, interpolation=cv2.INTER_NEAREST)
    else:
        img = phone_screen.render(text, look, seed=seed)
    ok, data = cv2.imencode(".png", img)
    assert ok
    return bytes(data.tobytes())


def rendered(text: str, condition: str, seed: int = 0) -> bytes:
    return png(text, phone_screen.look_for(condition, random.Random(seed)), seed)


def wait_codes_known(pos: PosProc, timeout: float = 15.0) -> None:
    """Until the feed brought the code keys and at least one wallet certificate."""
    wait_until(lambda: pos.status()["cache"].get("certs", 0) > 0, timeout, 0.05)
