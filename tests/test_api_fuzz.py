"""Property-based fuzzing of the whole HTTP API from its own OpenAPI document (schemathesis):
every operation, valid and invalid inputs, with real credentials so requests get past the
authentication (staff token, holder session, signed kiosk and POS requests).  No answer may be
a 5xx, and every answer must match the documented status codes, content type and schema.

Under ``CI=true`` the examples are derandomized (tests/conftest.py); on a developer's machine
they are fresh each run.  A failure the fuzzing finds is kept in ``FOUND`` below and sent on
every run by ``test_api_fuzz_found``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.config._checks import NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from sync import protocol
from sync.client import ServerClient
from sync.db import Database
from sync.server.app import create_app
from sync.server.context import Context, ServerConfig
from sync.server.schema import MIGRATIONS
from tests.live import Live, open_live

not_a_server_error = schemathesis.checks.not_a_server_error  # type: ignore[attr-defined]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
EXAMPLES = 12
#: a negative body can be longer than the server reads at all (a string over its maxLength,
#: megabytes of it): 413 too_large is a refusal of it as good as a 422
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "negative_data_rejection": {
                "expected-statuses": [*NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES, "413"]
            }
        }
    }
)


def _authorize_with_card_facts(world: dict[str, Any], **facts: Any) -> dict[str, Any]:
    card = world["card"]
    world["seq"] = world.get("seq", 1000) + 1  # a fresh request sequence number each time
    return {
        "seq": world["seq"],
        "card_no": card["card_no"],
        "uid": card["uid"],
        "amount_fen": 1,
        "method": "card",
        "card": {"generation": card["generation"], "spent_fen": 0, "taps": 0, **facts},
    }


#: Requests the fuzzing found wrongly answered, kept as explicit cases: (method, path, a
#: function of the fuzz world that makes the body).  Each one violates the schema, so the API
#: must refuse it with a 4xx (what schemathesis' negative_data_rejection asserted when it found
#: it) and answer as documented.
FOUND = [
    pytest.param(
        "POST",
        "/v1/pos/authorize",
        lambda world: _authorize_with_card_facts(world, spent_fen=True),
        id="authorize-card-spent_fen-true",  # issue 10 item 20: strict types everywhere
    ),
]


class SigningSession(requests.Session):
    """Signs each request as the terminal would, over the exact bytes that are sent."""

    def __init__(self, terminal: ServerClient) -> None:
        super().__init__()
        self.terminal = terminal

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        body = request.body or b""
        data = body.encode() if isinstance(body, str) else bytes(body)
        assert self.terminal.key is not None and self.terminal.terminal_id is not None
        request.headers.update(
            protocol.sign_request(
                self.terminal.key,
                self.terminal.terminal_id,
                request.method or "GET",
                request.path_url,
                data,
                self.terminal.clock.now_ms(),
            )
        )
        return super().send(request, **kwargs)


@pytest.fixture(scope="module")
def fuzz_live(tmp_path_factory: pytest.TempPathFactory, db_kind: str) -> Iterator[dict[str, Any]]:
    live = open_live(Path(tmp_path_factory.mktemp("fuzz")))
    card = live.add_account("S2023002", 2, topup_fen=50_000)
    live.add_account("S2023003", 3, kind="temporary", topup_fen=1000)
    live.admin(
        "POST", "/v1/admin/electricity/buildings", {"code": "B1", "name": "一号", "rooms": ["101"]}
    )
    world = {
        "live": live,
        "card": card,
        "session": live.login("S2023002", card["password"]),
        "kiosk": SigningSession(live.terminal("kiosk", "fuzz-kiosk")),
        "pos": SigningSession(live.terminal("pos", "fuzz-pos")),
        "gate": SigningSession(live.terminal("gate", "fuzz-gate")),
    }
    yield world
    world["kiosk"].close()
    world["pos"].close()
    world["gate"].close()
    live.stop()


@pytest.fixture(scope="module")
def api_schema(fuzz_live: dict[str, Any]) -> Any:
    live: Live = fuzz_live["live"]
    return schemathesis.openapi.from_url(live.url + "/openapi.json", config=CONFIG)


def _operations() -> list[tuple[str, str]]:
    """Every operation of the API, read from the app's OpenAPI document."""
    ctx = Context(
        config=ServerConfig(data_dir=Path("/nonexistent")),
        db=Database(":memory:", migrations=MIGRATIONS),
    )
    spec = create_app(ctx).openapi()
    ctx.db.close()
    return [(m.upper(), p) for p, ops in spec["paths"].items() for m in ops]


def _credentials(fuzz_live: dict[str, Any], path: str) -> tuple[dict[str, str], Any]:
    live: Live = fuzz_live["live"]
    if path.startswith("/v1/admin/"):
        return {"Authorization": f"Bearer {live.token}"}, None
    if path == "/v1/app/logout":  # a throwaway session, so the others keep theirs
        return {
            "Authorization": "Bearer " + live.login("S2023002", fuzz_live["card"]["password"])
        }, None
    if path.startswith("/v1/app/") and "login" not in path and "/sso/" not in path:
        return {"Authorization": f"Bearer {fuzz_live['session']}"}, None
    if path.startswith("/v1/kiosk/"):
        return {}, fuzz_live["kiosk"]
    if path in ("/v1/pos/authorize", "/v1/journal"):
        return {}, fuzz_live["pos"]
    if path == "/v1/codes/verify":
        return {}, fuzz_live["gate"]
    return {}, None  # public, card-less, or signed feed (unsigned: it long-polls otherwise)


@pytest.mark.parametrize(("method", "path"), _operations())
def test_api_fuzz(method: str, path: str, api_schema: Any, fuzz_live: dict[str, Any]) -> None:
    live: Live = fuzz_live["live"]
    operation = api_schema[path][method]
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(cases)
    def run(case: Any) -> None:
        headers, session = _credentials(fuzz_live, path)
        case.call_and_validate(
            base_url=live.url, headers=headers, session=session, checks=CHECKS, timeout=10
        )

    run()


@pytest.mark.parametrize(("method", "path", "make_body"), FOUND)
def test_api_fuzz_found(
    method: str, path: str, make_body: Any, api_schema: Any, fuzz_live: dict[str, Any]
) -> None:
    live: Live = fuzz_live["live"]
    case = api_schema[path][method].Case(body=make_body(fuzz_live), media_type="application/json")
    headers, session = _credentials(fuzz_live, path)
    response = case.call_and_validate(
        base_url=live.url, headers=headers, session=session, checks=CHECKS, timeout=10
    )
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
