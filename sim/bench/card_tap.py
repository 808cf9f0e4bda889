"""Card-path benchmark (``ykt bench --only card [--seconds S]``): a tap through pcscd, measured
(docs/benchmarks.md).  About 8 taps per second of ``--seconds`` in each mode (40 with the default 5).

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

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from sim.harness.procs import free_port
from sync.card.keys import Keystore


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited before {url} answered")
        try:
            if requests.get(url, timeout=1).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer in {timeout}s")


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def _stats(values: list[float]) -> dict[str, float]:
    return {"p50": round(_pct(values, 50), 3), "p99": round(_pct(values, 99), 3)}


def run(seconds: float = 5.0, as_json: bool = False) -> list[dict[str, Any]]:
    """Measure and print; the figures, one dict per mode (online, offline)."""
    try:
        from drivers.reader import pcsc

        if not pcsc.available():
            raise ImportError
    except ImportError:
        print("card bench: pyscard is not installed (pip install 'ykt[pcsc]'); skipped")
        return []
    from sim import pcscd
    from sim.cards import encoded_card
    from sim.control import AgentControl
    from sim.vicc import VirtualCard

    taps = max(10, round(seconds * 8))
    with tempfile.TemporaryDirectory(prefix="ykt-bench-card-") as tmp_s:
        tmp = Path(tmp_s)
        readers = pcscd.VirtualReaders(tmp / "readers")
        slot = readers.start(1)["slots"][0]
        procs: list[subprocess.Popen[bytes]] = []
        ykt = [sys.executable, "-m", "edge.cli"]
        log = open(tmp / "bench.log", "ab")  # noqa: SIM115 - closed below
        try:
            sport, cport = free_port(), free_port()
            server = subprocess.Popen(
                [
                    *ykt,
                    "server",
                    "--data",
                    str(tmp / "server"),
                    "--port",
                    str(sport),
                    "--password-cost",
                    "10",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            procs.append(server)
            base = f"http://127.0.0.1:{sport}"
            _wait_http(base + "/v1/health", server)
            token = (tmp / "server" / "admin.token").read_text().strip()
            h = {"Authorization": f"Bearer {token}"}

            def admin(method: str, path: str, body: Any = None) -> dict[str, Any]:
                r = requests.request(method, base + path, json=body, headers=h, timeout=30)
                r.raise_for_status()
                return dict(r.json())

            admin(
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
            admin(
                "POST",
                "/v1/admin/accounts/B1/topups",
                {"amount_fen": 10_000_000, "channel": "cash"},
            )
            policy = {"offline_max_purchase_fen": 100000, "offline_max_card_day_fen": 10_000_000}
            admin("PUT", "/v1/admin/policy", {"values": policy})
            uid = "04BE4C11"
            rec = admin("POST", "/v1/admin/accounts/B1/cards", {"uid": uid})
            keys = Keystore.load(tmp / "server" / "card-keys.json")
            card = encoded_card(bytes.fromhex(uid), rec["identity"], keys)
            enroll = admin("POST", "/v1/admin/terminals/tokens", {"role": "pos", "name": "bench"})
            env = {**os.environ, "PCSCLITE_CSOCK_NAME": str(readers.socket_path)}
            pos = subprocess.Popen(
                [
                    *ykt,
                    "pos",
                    "--server",
                    base,
                    "--enroll",
                    enroll["token"],
                    "--data",
                    str(tmp / "pos"),
                    "--reader",
                    f"pcsc://{slot['name']}",
                    "--control-port",
                    str(cport),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
            procs.append(pos)
            agent = f"http://127.0.0.1:{cport}"
            _wait_http(agent + "/control/status", pos)
            ctl = AgentControl(agent, timeout=10)

            def ready() -> None:
                deadline = time.monotonic() + 5
                while "ready" not in ctl.status()["reader_status"]:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the POS did not see the card leave")
                    time.sleep(0.01)

            rng = random.Random(0)

            def run(n: int) -> tuple[list[int], list[str]]:
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

            # one tap to warm up (keystore fetch, first connections)
            run(1)
            results = {}
            c_on, codes_on = run(taps)
            t_on = requests.get(agent + "/control/timings", timeout=5).json()["taps"][-taps:]
            results["online"] = (c_on, codes_on, t_on)
            server.terminate()
            server.wait(15)
            c_off, codes_off = run(taps)
            t_off = requests.get(agent + "/control/timings", timeout=5).json()["taps"][-taps:]
            results["offline"] = (c_off, codes_off, t_off)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
                    try:
                        p.wait(15)
                    except subprocess.TimeoutExpired:
                        p.kill()
            log.close()
            readers.stop()

    figures: list[dict[str, Any]] = []
    for mode, (connected, codes, timings) in results.items():
        lat = [(t["shown_ns"] - t["detected_ns"]) / 1e6 for t in timings]
        io = [t["card_io_ns"] / 1e6 for t in timings]
        jr = [t["journal_ns"] / 1e6 for t in timings]
        rest = [a - b - c for a, b, c in zip(lat, io, jr, strict=True)]
        det = [(t["detected_ns"] - c) / 1e6 for t, c in zip(timings, connected, strict=True)]
        figures.append(
            {
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
        )
    for f in figures:
        if as_json:
            print(json.dumps(f, ensure_ascii=False))
            continue
        lat_ms = f["latency_ms"]
        print(f"card tap through pcscd + vpcd, {f['mode']}: {f['approved']}/{f['taps']} approved")
        for name, key in (
            ("tap latency (present → shown)", "present_to_shown"),
            ("  card I/O (16 APDUs)", "card_io"),
            ("  journal (durable append)", "journal"),
            ("  the rest", "rest"),
        ):
            v = lat_ms[key]
            print(f"    {name:<32} p50 {v['p50']:8.2f} ms   p99 {v['p99']:8.2f} ms")
        d = f["detection_delay_ms"]
        print(
            f"    {'card-present detection delay':<32} p50 {d['p50']:8.2f} ms   p99 {d['p99']:8.2f} ms"
        )
    if not as_json:
        print(
            "    budget (docs/benchmarks.md): tap latency p99 ≤ 15 ms; detection: pcscd polls vpcd every 400 ms"
        )
    return figures
