"""``ykt bench --only card [--seconds S]``: a tap through pcscd, measured (docs/benchmarks.md).
About 8 taps per second of ``--seconds`` in each mode (40 with the default 5; at least 10, 1 s
with ``--quick``).  Without pyscard the figures say the benchmark was skipped.

A private pcscd with one vpcd slot, the central server and a POS agent on ``pcsc://`` run as
real processes; the simulated card is served from this process.  For each tap the amount is
keyed first, then the card arrives; the POS records when its reader reported the card
(``detected``) and when the decision was on the screen (``shown``), the time spent in card
I/O (15 APDUs to read, 1 to write the counters) and in the durable journal append.

Printed, p50 / p99 in milliseconds:

- tap latency: card-present event → decision shown (card I/O, journal, the rest: the online
  authorization or the offline checks, rules, signature check, screen);
- card-present detection delay: card in the field (the virtual card connects) → pcscd
  reports it (pcscd polls a vpcd slot every 400 ms, so expect 0-400 ms).

Online taps first, then, with the server stopped, offline taps.  Figures only: nothing here
fails on a timing.
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from drivers.reader import pcsc
from sim.bench.errors import BenchmarkError
from sim.cards import encoded_card
from sim.control import AgentControl
from sim.harness.pcscd import VirtualReaders
from sim.harness.procs import poll
from sim.harness.ykt import PosProcess, ServerProcess
from sim.vicc import VirtualCard
from sync.card.keys import Keystore

if TYPE_CHECKING:
    from sim.bench import Options

SKIPPED = "pyscard is not installed (pip install 'ykt[pcsc]'); skipped"


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def _stats(values: list[float]) -> dict[str, float]:
    return {"p50": round(_pct(values, 50), 3), "p99": round(_pct(values, 99), 3)}


def run(work: Path, opts: Options) -> dict[str, Any]:
    """``ykt bench --only card``: the figures, one per mode (online, offline)."""
    seconds = opts.seconds if opts.seconds is not None else (1.0 if opts.quick else 5.0)
    if not pcsc.available():
        return {"modes": [], "skipped": f"card bench: {SKIPPED}"}
    return {"modes": measure(seconds)}


def _setup(server: ServerProcess, data: Path) -> tuple[Any, str]:
    """One staff account with money and a card; the card's emulation and a POS enrol token."""
    admin = server.admin(keep_alive=True)
    try:
        admin.call(
            "POST",
            "/v1/admin/accounts",
            {
                "number": "B1",
                "name": "bench",
                "type": "staff",
                "id_card": "510102199901013052",
                "limit_fen": 10_000_000,
            },
        )
        admin.call(
            "POST", "/v1/admin/accounts/B1/topups", {"amount_fen": 10_000_000, "channel": "cash"}
        )
        policy = {
            "offline_max_purchase_fen": 100000,
            "offline_max_card_day_fen": 10_000_000,
            "offline_max_card_fen": 65535,  # the most a card holds (¥655.35 at 100 fen a tap)
        }
        admin.call("PUT", "/v1/admin/policy", {"values": policy})
        uid = "04BE4C11"
        rec = admin.call("POST", "/v1/admin/accounts/B1/cards", {"uid": uid})
    finally:
        admin.close()
    keys = Keystore.load(data / "card-keys.json")
    return encoded_card(bytes.fromhex(uid), rec["identity"], keys), server.enroll_token("bench")


def measure(seconds: float) -> list[dict[str, Any]]:
    """Online taps, then offline taps with the server stopped; one figure per mode."""
    taps = max(10, round(seconds * 8))
    with tempfile.TemporaryDirectory(prefix="ykt-bench-card-") as tmp_s:
        tmp = Path(tmp_s)
        readers = VirtualReaders(tmp / "readers")
        slot = readers.start(1)["slots"][0]
        server = ServerProcess(tmp / "server")
        pos: PosProcess | None = None
        try:
            server.start()
            card, token = _setup(server, server.data)
            pos = PosProcess(
                tmp / "pos",
                server_url=server.url,
                token=token,
                reader=f"pcsc://{slot['name']}",
                env={"PCSCLITE_CSOCK_NAME": str(readers.socket_path)},
            ).start()
            ctl = AgentControl(pos.url, timeout=10)
            rng = random.Random(0)

            def ready() -> None:
                if not poll(lambda: "ready" in ctl.status()["reader_status"], 5, 0.01):
                    raise BenchmarkError("card bench: the POS did not see the card leave")

            def tap(n: int) -> tuple[list[int], list[str]]:
                connected: list[int] = []
                codes: list[str] = []
                for _ in range(n):
                    keyed = ctl.amount(100)
                    # a person does not tap in step with pcscd's 400 ms poll
                    time.sleep(rng.uniform(0, 0.4))
                    vc = VirtualCard(card, slot["port"]).start()
                    out = ctl.wait(keyed["version"], ("approved", "declined"), 10)
                    codes.append(out["code"])
                    connected.append(vc.connected_ns)
                    vc.remove()
                    ready()
                return connected, codes

            def timings() -> list[dict[str, Any]]:
                assert pos is not None
                got = requests.get(pos.url + "/control/timings", timeout=5).json()["taps"]
                return list(got[-taps:])

            tap(1)  # one tap to warm up (keystore fetch, first connections)
            results = {}
            c_on, codes_on = tap(taps)
            results["online"] = (c_on, codes_on, timings())
            server.stop()
            c_off, codes_off = tap(taps)
            results["offline"] = (c_off, codes_off, timings())
        finally:
            if pos is not None:
                pos.stop()
            server.stop()
            readers.stop()
    return [_figures(mode, *got) for mode, got in results.items()]


def _figures(
    mode: str, connected: list[int], codes: list[str], timings: list[dict[str, Any]]
) -> dict[str, Any]:
    lat = [(t["shown_ns"] - t["detected_ns"]) / 1e6 for t in timings]
    io = [t["card_io_ns"] / 1e6 for t in timings]
    jr = [t["journal_ns"] / 1e6 for t in timings]
    rest = [a - b - c for a, b, c in zip(lat, io, jr, strict=True)]
    det = [(t["detected_ns"] - c) / 1e6 for t, c in zip(timings, connected, strict=True)]
    return {
        "benchmark": "card tap through pcscd + vpcd",
        "mode": mode,
        "taps": len(codes),
        "approved": sum(c == "ok" for c in codes),
        "latency_ms": {
            "present_to_shown": _stats(lat),
            "card_io": _stats(io),
            "journal": _stats(jr),
            "rest": _stats(rest),
        },
        "detection_delay_ms": _stats(det),
    }
