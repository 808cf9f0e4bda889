"""`ykt bench`: the structure of its figures (never their values: benchmarks do not fail on
timings); the large-journal fixture it builds: tests/unit/test_bench_fixture.py."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests

from sim.bench import peak
from tests.helpers import ROOT, ykt

LATENCY_KEYS = {"n", "p50_ms", "p99_ms", "max_ms", "mean_ms"}


def _bench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    work = ("--dir", str(tmp_path / "work"), "--cache-dir", str(tmp_path / "cache"))
    return ykt("bench", *work, *args, check=False, timeout=300, cwd=ROOT)


def _latency(s: dict, n: int) -> None:
    assert set(s) == LATENCY_KEYS and s["n"] == n
    assert 0 < s["p50_ms"] <= s["p99_ms"] <= s["max_ms"]


@pytest.mark.slow
@pytest.mark.timeout(420)  # every benchmark once, small: about two minutes on a busy machine
def test_quick_json_has_every_figure(tmp_path: Path) -> None:
    done = _bench(tmp_path, "--quick", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)  # one JSON object, nothing else on stdout
    assert out["quick"] is True and out["machine"]["cpus"] >= 1
    b = out["benchmarks"]
    assert list(b) == [
        *("sqlite", "journal", "ingest", "sale", "api", "qr", "card", "db", "hotlist"),
        *("printer", "kiosk"),
        *("peak", "peak_pg"),
    ]

    _latency(b["sqlite"]["commit"], 200)
    assert b["sqlite"]["batch_small_rows"]["rows_per_s"] > 0
    assert b["sqlite"]["batch_journal_rows"]["rows_per_s"] > 0

    j = b["journal"]
    _latency(j["floor"], j["appends"])
    for where in ("empty", "at_queue"):
        _latency(j[where]["append"], j["appends"])
        assert j[where]["ratio_p50"] > 0 and j[where]["ratio_p99"] > 0
    assert j["at_queue"]["queued"] == j["fixture"]["records"] == 20_000
    assert j["fixture"]["cached"] is False and "seal" in j["fixture"]["how"]

    ing = b["ingest"]
    h = ing["http"]
    assert h["records"] == h["batches"] * h["batch_size"] == ing["in_process"]["records"]
    assert h["batch_size"] == 500 and h["terminals"] >= 2
    _latency(h["ack"], h["batches"])
    _latency(ing["in_process"]["batch"], h["batches"])
    assert h["records_per_s"] > 0 and ing["in_process"]["records_per_s"] > 0
    assert h["verified"] == {
        "heads_ok": True,
        "alarms": 0,
        "ledger_ok": True,
        "transfers": h["verified"]["transfers"],
    }
    assert h["verified"]["transfers"] >= h["records"]

    s = b["sale"]
    for mode in ("online", "offline"):
        m = s[mode]
        for part in ("total", "decision", "card_io", "append", "cpu_thread", "cpu_process"):
            _latency(m[part], m["sales"])
        assert m["cpu_agent"]["n"] == m["sales"]
        assert m["rest"]["n"] == m["sales"]
    assert s["online"]["decided_offline"] == 0
    assert s["offline"]["decided_offline"] == s["offline"]["sales"]
    assert s["queued_after_offline"] >= s["offline"]["sales"]

    runs = b["api"]["runs"]
    assert [r["server_processes"] for r in runs] == [1, 2]
    for r in runs:
        assert r["db"] == "sqlite" and r["requests"] > 0 and r["requests_per_s"] > 0
        assert set(r["latency_ms"]) == {"me", "bills", "authorize", "topup"}
        assert isinstance(r["errors"], int)

    (zxing,) = b["qr"]["runs"]  # --quick: one presentation, zxing-cpp only
    assert zxing["decoder"] == "zxing" and zxing["presentations"] == 1
    assert set(zxing["sizes"]) == {"640x480", "1280x720"}
    for size in zxing["sizes"].values():
        assert 0 < size["frame_to_decision_p50_ms"] <= size["frame_to_decision_p99_ms"]

    card = b["card"]
    if card["modes"]:  # through pcscd + vpcd (pyscard installed)
        assert [m["mode"] for m in card["modes"]] == ["online", "offline"]
        for m in card["modes"]:
            assert m["taps"] >= 10 and 0 <= m["approved"] <= m["taps"]
            assert set(m["latency_ms"]) == {"present_to_shown", "card_io", "journal", "rest"}
    else:
        assert "skipped" in card["skipped"]

    (db,) = b["db"]["figures"]  # --quick: a short ingest on SQLite, one server process
    assert db["bench"] == "ingest" and db["db"] == "sqlite" and db["server_processes"] == 1
    assert db["records"] > 0 and db["errors"] == 0

    h = b["hotlist"]  # --quick: 100 long-polling terminals, 2 loss reports; every one reached
    assert (h["terminals"], h["reports"], h["missed"]) == (100, 2, 0)
    _latency(h["delivered"], 200)
    assert [r["terminals_reached"] for r in h["rounds"]] == [100, 100]
    assert h["idle_server_cpu"] >= 0 and h["poll_errors"] == 0

    p = b["printer"]  # --quick: 20 sales with the printer ready, 20 with the paper out
    for part in ("with_printer", "paper_out", "receipt"):
        assert p[part]["n"] == 20 and p[part]["p50_ms"] <= p[part]["p99_ms"]
    assert p["queued_with_paper_out"] == 20 and p["drain_s"] > 0

    k = b["kiosk"]  # --quick: 3 reissues through pcscd and the pty dispenser
    if "skipped" not in k:
        assert k["reissues"] == 3 and k["budget_p99_ms"] == 3000
        _latency(k["confirm_to_mouth"], 3)
        assert set(k["steps"]) == {"feed_ms", "order_ms", "encode_ms", "done_ms", "mouth_ms"}
        for step in k["steps"].values():
            _latency(step, 3)

    _peak(b["peak"], "sqlite", 1)
    if "skipped" not in b["peak_pg"]:  # without Debian's postgresql it says why
        _peak(b["peak_pg"], "postgresql", 2)


def _peak(p: dict[str, Any], db: str, processes: int) -> None:
    """--quick: 100 terminals, 20 of them POS; figures are never checked, only that the peak
    ran: sales were authorized and pushed, holders answered, every loss report reached every
    terminal."""
    assert (p["db"], p["server_processes"], p["terminals"], p["pos"]) == (db, processes, 100, 20)
    for part in ("authorize", "authorize_idle", "push_ack", "holder", "hotlist"):
        assert p[part]["n"] > 0 and 0 < p[part]["p50_ms"] <= p[part]["p99_ms"], part
    assert 1 <= p["authorize_idle"]["n"] <= 10
    assert p["hotlist"]["n"] == 200 and p["hotlist"]["missed"] == 0
    assert isinstance(p["errors"], int)  # a request timed out on a busy machine: a figure
    assert p["sales_per_s"] > 0 and p["server_cpu_per_s"] > 0 and p["client_cpu_per_s"] > 0
    slow = p["authorize_slow"]
    assert slow["n"] == slow["after_report"] + slow["first_second"] + slow["other"]
    assert slow["n"] <= p["authorize"]["n"]
    assert sum(w["over"] for w in slow["worst_seconds"]) <= slow["n"]
    assert p["client_processes"] == 4 and set(p["client_lag"]) == {"sales", "streams"}
    assert (p["routing"], p["feed_nice"]) == (
        ("one process", 0) if processes == 1 else ("by path", 10)
    )
    assert p["stream_clients_nice"] == 10
    for lag in p["client_lag"].values():
        assert lag["n"] == 0 or lag["max_ms"] > lag["over_ms"]


def test_the_peak_counts_its_slow_sales_by_when_they_were_sent() -> None:
    """Over 25 ms: within 1.5 s after a loss report (its wake), in the peak's first second,
    or elsewhere; the seconds with the most, the most first (then the earlier)."""
    sales = [(100.2, 5.0), (100.5, 30.0), (100.9, 27.0), (106.0, 40.0), (106.4, 10.0)]
    sales += [(107.2, 90.0), (110.0, 26.0)]
    got = peak._slow(sales, 100.0, [105.5])
    assert {k: got[k] for k in ("n", "after_report", "first_second", "other")} == {
        "n": 5,
        "after_report": 1,
        "first_second": 2,
        "other": 2,
    }
    assert got["worst_seconds"] == [
        {"second": 0, "sales": 3, "over": 2, "max_ms": 30.0},
        {"second": 6, "sales": 2, "over": 1, "max_ms": 40.0},
        {"second": 7, "sales": 1, "over": 1, "max_ms": 90.0},
        {"second": 10, "sales": 1, "over": 1, "max_ms": 26.0},
    ]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_peak_on_postgresql_with_a_slower_disk(tmp_path: Path) -> None:
    """``--pg-flush-delay-ms``: the benchmark's PostgreSQL runs with every WAL flush later
    (read back from the server) and the peak runs; the text report says so."""
    done = _bench(tmp_path, "--quick", "--only", "peak_pg", "--pg-flush-delay-ms", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "every WAL flush 2 ms later" in done.stdout, done.stdout
    bad = _bench(tmp_path, "--quick", "--only", "peak_pg", "--pg-flush-delay-ms", "500")
    assert bad.returncode != 0 and "0 to 100" in bad.stderr


def test_only_and_text_output(tmp_path: Path) -> None:
    done = _bench(tmp_path, "--quick", "--only", "sqlite")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "== sqlite" in done.stdout and "one-row commit" in done.stdout
    assert "== journal" not in done.stdout
    assert list((tmp_path / "work").iterdir()) == []  # each run's databases are removed
    bad = _bench(tmp_path, "--only", "nosuch")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_a_server_started_nice_runs_every_thread_at_that_priority(tmp_path: Path) -> None:
    """The peak's feed process (``start_servers(nice=…)``, as ``nice -n`` or systemd's
    ``Nice=`` would start it): every thread of it runs at that priority, those started later
    too (a nice value is a thread's own on Linux), and it serves as any other."""
    from sim.bench import api_load

    (server,) = api_load.start_servers(tmp_path / "server", 1, nice=7)
    try:
        assert requests.get(server.url + "/v1/health", timeout=10).json()["ok"] is True
        tasks = list(Path(f"/proc/{server.pid}/task").iterdir())
        assert len(tasks) > 1
        for task in tasks:
            stat = (task / "stat").read_text()
            assert int(stat.rsplit(")", 1)[1].split()[16]) == 7, task
    finally:
        api_load.stop_servers([server])
