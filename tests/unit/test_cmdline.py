"""The commands that take ``--request-id`` (an idempotency key) send it in their request body,
and send none without it (sync.cmdline.request_id), parsed by the ``ykt`` parser and run
in-process against a recording client."""

from __future__ import annotations

from typing import Any

import pytest

from edge.cli import build_parser
from sim import wallet_business_cli
from sync.admin import cli as admin_cli
from sync.admin import desk as admin_desk

ANSWER = {
    "balance_fen": 1,
    "transition_fen": 0,
    "amount_fen": 1,
    "building": "B1",
    "room": "1",
    # a top-up order (R7), as if credited already: the wallet pays nothing more
    "order_id": "T0000000000000000000a",
    "status": "credited",
    "channel": "app",
}


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Any]] = []

    def call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        self.sent.append((method, path, body))
        return ANSWER


ADMIN = "admin --server http://x --token-file t"
#: (the command line, the body it sends without --request-id)
CASES = {
    "admin topup": (
        f"{ADMIN} topup --number S1 --amount 1.00 --channel cash --json",
        {"amount_fen": 100, "channel": "cash"},
    ),
    "admin refund": (
        f"{ADMIN} refund --transfer sale:T1:1 --reason r --json",
        {"transfer_id": "sale:T1:1", "reason": "r"},
    ),
    "wallet topup": (
        "sim wallet topup --wallet w.json --amount 1.00 --channel app --password 123456",
        {"amount_fen": 100, "channel": "app", "password": "123456"},
    ),
    "wallet electricity": (
        "sim wallet electricity --wallet w.json --building B1 --room 1 --amount 1.00",
        {"building": "B1", "room": "1", "amount_fen": 100},
    ),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("rid", [None, "retry-00000001"])
def test_the_request_id_goes_in_the_body_only_when_given(
    case: str,
    rid: str | None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client = Recorder()
    for module in (admin_cli, admin_desk):
        monkeypatch.setattr(module, "client_for", lambda args: client)
    monkeypatch.setattr(wallet_business_cli, "_w", lambda args: client)
    line, body = CASES[case]
    args = build_parser().parse_args(line.split() + (["--request-id", rid] if rid else []))
    assert args.func(args) == 0
    capsys.readouterr()
    [(method, _path, sent)] = client.sent
    assert method == "POST"
    assert sent == (body | {"request_id": rid} if rid else body)
