"""The real-process chaos run (``ykt sim chaos``, sim/chaos/): its fault-injecting proxy, and a
short run of real ``ykt server`` and ``ykt pos`` processes under faults and SIGKILLs after
which money adds up (docs/architecture.md "Chaos")."""

from __future__ import annotations

import json
import socket
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sim.chaos.proxy import FaultProxy, Mode
from sim.chaos.run import ChaosConfig, run_chaos
from tests.helpers import free_port, ykt


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    echo = socketserver.ThreadingTCPServer(("127.0.0.1", free_port()), _Echo)
    echo.daemon_threads = True
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    p = FaultProxy(echo.server_address[1], seed=5, port=free_port()).start()
    try:
        yield p
    finally:
        p.stop()
        echo.shutdown()
        echo.server_close()


def _exchange(port: int, payload: bytes, timeout: float = 3.0) -> bytes:
    """Send ``payload`` and read until the other end closes, resets or goes quiet."""
    got = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(payload)
            while len(got) < len(payload) and (chunk := s.recv(65536)):
                got += chunk
        except (ConnectionError, TimeoutError):
            pass
    return got


def test_the_proxy_passes_cuts_and_partitions(proxy: FaultProxy) -> None:
    payload = bytes(range(256)) * 40  # 10240 bytes: past every cut point
    assert _exchange(proxy.port, payload) == payload
    proxy.set_mode(Mode.CUT_ANSWER)
    got = _exchange(proxy.port, payload)
    assert 0 < len(got) < len(payload) and payload.startswith(got)
    proxy.set_mode(Mode.CUT_REQUEST)
    assert len(_exchange(proxy.port, payload)) < len(payload)
    proxy.set_mode(Mode.PARTITION)
    assert _exchange(proxy.port, payload) == b""
    proxy.set_mode(Mode.BLACKHOLE)
    assert _exchange(proxy.port, payload, timeout=0.5) == b""
    proxy.set_mode(Mode.TRICKLE)
    assert _exchange(proxy.port, payload[:200]) == payload[:200]
    proxy.set_mode(Mode.CLEAN)
    assert _exchange(proxy.port, payload) == payload
    c = proxy.counts
    assert c["cut_answer"] == c["cut_request"] == c["reset"] == c["swallowed"] == 1


@pytest.mark.slow
def test_chaos_run_of_real_processes_keeps_money_whole(tmp_path: Path) -> None:
    """Two real agents and a real server for 15 s of faults: every kind of fault happens, sales
    are approved online and offline, and every invariant holds after the heal."""
    out = run_chaos(ChaosConfig(seconds=15, terminals=2, seed=13, dir=tmp_path / "run"))
    assert out["violations"] == [], json.dumps(out, ensure_ascii=False, indent=1)
    chaos = out["chaos"]
    assert chaos["kill_pos"] >= 1 and chaos["kill_server"] >= 1 and chaos["losses"] >= 1
    assert chaos["pos_restarts"] == chaos["kill_pos"]
    assert out["approved"] > out["offline_approved"] > 0, out
    assert out["proxy"]["connections"] > 0
    checked = out["checked"]
    # the ledger's sales: the journaled ones, and the reverse-scan payments refunded after a void
    assert checked["journal_sales"] + checked["refunded_reverse"] == checked["ledger_sales"]
    assert out["approved"] <= checked["journal_sales"] <= out["approved"] + out["in_doubt"]


def test_the_command_exits_with_usage_errors() -> None:
    got = ykt("sim", "chaos", "--seconds", "0", check=False)
    assert got.returncode == 2 and "must be above 0" in got.stderr
