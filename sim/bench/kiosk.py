"""``ykt bench --only kiosk``: a self-service reissue (R11), the holder's confirm → the new card
at the dispenser's mouth (docs/benchmarks.md; budget p99 ≤ 3 s).  20 reissues (3 with
``--quick``).  Without pyscard the figures say the benchmark was skipped.

A private pcscd with the encoder in a vpcd slot, the simulated CRT-591 on a pseudo-terminal
(``ykt sim dispenser``), the central server and ``ykt kiosk`` run as real processes.  Each
reissue is quoted first (not timed), then confirmed: the confirm answers when the card is at
the mouth.  The kiosk says where the time went (``GET /control/status``, ``issue_timings``):
the blank fed to the encoder and seen by pcscd (pcscd polls a vpcd slot every 400 ms), the
server's order, encoding and reading back (about 50 APDUs), closing the order, the move to the
mouth.  The holder takes the card before the next one.  Figures only.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from drivers.reader import pcsc
from sim.bench.errors import BenchmarkError
from sim.bench.stats import summary_ms
from sim.control import AgentControl
from sim.dispenser import process
from sim.harness.pcscd import VirtualReaders
from sim.harness.procs import ykt_cmd
from sim.harness.ykt import KioskProcess, ServerProcess

if TYPE_CHECKING:
    from sim.bench import Options

SKIPPED = "pyscard is not installed (pip install 'ykt[pcsc]'); skipped"
ID_CARD = "510102199901013052"
STEPS = ("feed_ms", "order_ms", "encode_ms", "done_ms", "mouth_ms")


def _ms(values_ms: list[float]) -> dict[str, Any]:
    return summary_ms(round(v * 1e6) for v in values_ms)


def run(work: Path, opts: Options) -> dict[str, Any]:
    if not pcsc.available():
        return {"skipped": f"kiosk bench: {SKIPPED}"}
    return measure(3 if opts.quick else 20)


def _setup(server: ServerProcess, n: int) -> str:
    """One holder per reissue (R11 counts a number's reissue attempts)."""
    admin = server.admin(keep_alive=True)
    try:
        for i in range(n):
            body = {"number": f"KB{i}", "name": "bench", "type": "staff", "id_card": ID_CARD}
            admin.call("POST", "/v1/admin/accounts", body)
            topup = {"amount_fen": 5000, "channel": "cash"}
            admin.call("POST", f"/v1/admin/accounts/KB{i}/topups", topup)
    finally:
        admin.close()
    return server.enroll_token("bench-kiosk", role="kiosk")


def measure(n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ykt-bench-kiosk-") as tmp_s:
        tmp = Path(tmp_s)
        readers = VirtualReaders(tmp / "readers")
        slots = readers.start(2)["slots"]
        server = ServerProcess(tmp / "server")
        kiosk: KioskProcess | None = None
        unit = False
        try:
            server.start()
            token = _setup(server, n)
            started = subprocess.run(
                ykt_cmd(
                    "sim",
                    "dispenser",
                    "start",
                    "--dir",
                    str(readers.dir),
                    "--name",
                    "kb",
                    "--blanks",
                    str(n + 2),
                    "--encoder-slot",
                    "1",
                    "--json",
                ),
                capture_output=True,
                text=True,
                timeout=60,
            )
            if started.returncode != 0:
                raise BenchmarkError(f"kiosk bench: the dispenser did not start: {started.stderr}")
            unit = True
            device = json.loads(started.stdout)["device"]
            kiosk = KioskProcess(
                tmp / "kiosk",
                server_url=server.url,
                token=token,
                reader=f"pcsc://{slots[0]['name']}",
                encoder=f"pcsc://{slots[1]['name']}",
                dispenser=f"serial://{device}?baud=9600",
                env={"PCSCLITE_CSOCK_NAME": str(readers.socket_path)},
                log_level=None,
            ).start()
            ctl = AgentControl(kiosk.url, timeout=30, token_file=kiosk.data / "control.token")
            totals: list[float] = []
            for i in range(n):
                ident = {"number": f"KB{i}", "id_card": ID_CARD}
                ctl._call("POST", "/control/reissue/quote", ident)
                t0 = time.perf_counter()
                ctl._call("POST", "/control/reissue/confirm", None, timeout=30)
                totals.append((time.perf_counter() - t0) * 1000)
                process.request(readers.dir, "kb", "take")
            status = requests.get(kiosk.url + "/control/status", timeout=5).json()
            steps = status["issue_timings"][-n:]
        finally:
            if kiosk is not None:
                kiosk.stop()
            if unit:
                subprocess.run(
                    ykt_cmd("sim", "dispenser", "stop", "--dir", str(readers.dir), "--name", "kb"),
                    capture_output=True,
                    timeout=30,
                )
            server.stop()
            readers.stop()
    return {
        "benchmark": "kiosk reissue: confirm -> card at the mouth",
        "reissues": n,
        "confirm_to_mouth": _ms(totals),
        "steps": {k: _ms([s.get(k, 0.0) for s in steps]) for k in STEPS},
        "budget_p99_ms": 3000,
    }
