"""The canteen counter's shared bits for the real-process tests (tests/test_pos_counter.py,
tests/test_cashier.py, tests/test_canteen.py): the simulated peripherals on pseudo-terminals
(``ykt sim printer|display|pinpad``), what the printer received, and a merchant with a cashier
and a supervisor made by ``ykt admin`` as an operator would."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sim.escpos_stream import render
from tests.helpers import ServerProc, ykt
from tests.posutil import admin_args

CODE = "CANTEEN1"
CASHIER, CASHIER_PIN = "C01", "135790"
SUPER, SUPER_PIN = "S01", "864200"


def sim(*args: str) -> dict[str, Any]:
    """``ykt sim ARGS --json``: its answer."""
    out: dict[str, Any] = json.loads(ykt("sim", *args, "--json").stdout)
    return out


class Devices:
    """A receipt printer, a customer display and a PIN pad, each a ``ykt sim`` device process
    on a pseudo-terminal, in ``TMP/devices``; :meth:`args` are the ``ykt pos`` options that
    open them."""

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp / "devices"
        self.dir.mkdir()
        d = str(self.dir)
        # the three processes start side by side (each ``ykt`` takes seconds on a busy machine)
        with ThreadPoolExecutor(3) as pool:
            started = pool.map(
                lambda kind_name: sim(kind_name[0], "start", "--dir", d, "--name", kind_name[1]),
                [("printer", "p1"), ("display", "d1"), ("pinpad", "k1")],
            )
            self.printer, self.display, self.pinpad = (out["device"] for out in started)

    def args(self) -> list[str]:
        return [
            "--printer", f"escpos+serial://{self.printer}",
            "--display", f"serial://{self.display}",
            "--pinpad", f"serial://{self.pinpad}",
        ]  # fmt: skip

    def printed(self) -> bytes:
        """Every byte the printer received so far."""
        p = self.dir / "p1.escpos"
        return p.read_bytes() if p.exists() else b""

    def receipts(self) -> list[list[str]]:
        """The receipts printed so far, each as its lines of text."""
        return render(self.printed()).receipts

    def fault(self, *args: str) -> dict[str, Any]:
        return sim("printer", "fault", "--dir", str(self.dir), "--name", "p1", *args)

    def type_pin(self, digits: str, *more: str) -> None:
        """The diner keys ``digits`` and Enter on the PIN pad."""
        ykt("sim", "pinpad", "type", "--dir", str(self.dir), "--name", "k1", *more, digits)

    def stop(self) -> None:
        with ThreadPoolExecutor(3) as pool:
            for name in ("p1", "d1", "k1"):
                pool.submit(ykt, "sim", "printer", "stop", "--dir", str(self.dir), "--name", name,
                            check=False)  # fmt: skip


def add_merchant(server: ServerProc, name: str = "第一食堂") -> None:
    """Merchant :data:`CODE` with a cashier and a supervisor, by ``ykt admin`` (the
    supervisor through the API the CLI calls: a process less)."""
    args = admin_args(server)
    ykt(*args, "merchant", "add", "--code", CODE, "--name", name)
    ykt(
        *args, "operator", "add", "--merchant", CODE, "--number", CASHIER,
        "--name", "李收银", "--role", "cashier", "--pin", CASHIER_PIN,
    )  # fmt: skip
    server.admin().call(
        "POST",
        "/v1/admin/operators",
        {"merchant": CODE, "number": SUPER, "name": "张主管", "role": "supervisor",
         "pin": SUPER_PIN},
    )  # fmt: skip


def enroll(server: ServerProc, name: str) -> str:
    """A POS enrollment token for terminal ``name`` of merchant :data:`CODE`, by ``ykt admin
    terminal enroll``."""
    return ykt(
        *admin_args(server), "terminal", "enroll", "--role", "pos", "--name", name,
        "--merchant", CODE, "--simulated",
    ).stdout.strip()  # fmt: skip


def merchant_balance(server: ServerProc, code: str = CODE) -> int:
    """The merchant's ledger account balance (fen)."""
    rows = server.admin().call("GET", "/v1/admin/merchants")["merchants"]
    return int(next(m["balance_fen"] for m in rows if m["code"] == code))
