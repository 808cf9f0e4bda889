"""Issue 10 item 1, tried over HTTP against ``ykt server`` as a test engineer does (the contract
of docs/cli.md): ``ykt sim wallet topup`` changes no balance unless ``ykt sim paygate`` is
running and registered at the server (``ykt admin paygate set``), and then credits exactly once
even when the provider redelivers; a notification whose amount was altered is refused and
credits nothing; ``ykt admin report topups`` reconciles the day."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sim.harness.ykt import PaygateProcess
from sync.clock import SystemClock, campus_date
from tests.helpers import ServerProc, ykt
from tests.live import initial_pw


def _json(*args: str, code: int = 0) -> Any:
    out = ykt(*args, check=False, timeout=60)
    assert out.returncode == code, (args, out.returncode, out.stdout, out.stderr)
    return json.loads(out.stdout)


def test_a_top_up_needs_a_running_registered_provider_and_credits_once(
    server: ServerProc, tmp_path: Path
) -> None:
    admin = ("admin", "--server", server.url, "--token-file", str(server.token_file))
    server.add_account("S1", 1)
    w = str(tmp_path / "W.json")
    _json("sim", "wallet", "login", "--server", server.url, "--number", "S1",
          "--password", initial_pw(1), "--wallet", w, "--json")  # fmt: skip
    topup = ("sim", "wallet", "topup", "--wallet", w, "--channel", "wechat", "--amount", "25.00",
             "--password", initial_pw(1), "--timeout", "10", "--json")  # fmt: skip

    def balance() -> int:
        return int(server.account("S1")["balance_fen"])

    # no provider registered: refused at the server, no order, no money
    out = ykt(*topup, check=False)
    assert out.returncode != 0 and "no payment provider" in out.stderr, out
    assert balance() == 0

    gate = PaygateProcess(tmp_path / "gate")
    gate.data.mkdir(parents=True)
    gate.start()
    pub = str(gate.data / "provider.pub")
    reg = _json(*admin, "paygate", "set", "--channel", "wechat", "--url", gate.url,
                "--public-key", pub, "--json")  # fmt: skip
    assert reg["notify_url"] == f"{server.url}/v1/paygate/wechat/notify"

    # registered, but the provider is down: the order stays open, no money
    gate.stop()
    down = _json(*topup, code=1)
    assert down["status"] == "open" and "cannot be reached" in down["reason"], down
    assert balance() == 0

    # running and registered: credited once
    gate.start()
    try:
        paid = _json(*topup)
        assert paid["status"] == "credited" and paid["balance_fen"] == 2500, paid
        order = paid["order_id"]
        # the provider delivers again (as after a lost acknowledgement): acknowledged, not
        # credited twice
        again = _json("sim", "paygate", "redeliver", "--dir", str(gate.data), "--order", order,
                      "--json")  # fmt: skip
        assert again["acknowledged"] and again["answer"]["credited"] is False
        # the amount altered after signing: refused, nothing credited
        bad = _json("sim", "paygate", "redeliver", "--dir", str(gate.data), "--order", order,
                    "--tamper", "amount", "--json", code=1)  # fmt: skip
        assert bad["status"] == 401 and not bad["acknowledged"]
        assert balance() == 2500
        kinds = {a["kind"] for a in _json(*admin, "alarms", "--json")["alarms"]}
        assert "payment_forged" in kinds
        day = campus_date(SystemClock().now_ms())
        rep = _json(*admin, "report", "topups", "--date", day, "--json")
        assert rep["ok"] and rep["differences"] == 0, rep
        [line] = rep["orders"]
        assert (line["order_id"], line["problem"], line["credited"]["amount_fen"]) == (
            order,
            None,
            2500,
        )
        assert [(p["amount_fen"], p["txn_id"]) for p in line["paid"]] == [(2500, paid["txn_id"])]
        assert _json(*admin, "ledger", "check", "--json")["ok"]
    finally:
        gate.stop()
