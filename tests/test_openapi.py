"""API quality (issue 5 part 4): the OpenAPI document describes every endpoint with its
response and error shapes; every field is validated with a stable error shape."""

from __future__ import annotations

import pytest

from sync.money import MAX_AMOUNT_FEN
from sync.server.api_auth import ApiAuth
from sync.server.app import FIELD_CODES, create_app
from sync.server.routes_business import create_router
from sync.server.routes_merchants import create_merchant_router
from sync.server.routes_topups import create_router as create_topups_router
from tests.live import Live

#: operations whose answer is a free-form object by design (terminal protocol, policy)
FREE_FORM = {
    ("post", "/v1/pos/authorize"),
    ("post", "/v1/journal"),
    ("get", "/v1/feed"),
    ("get", "/v1/admin/policy"),
    ("put", "/v1/admin/policy"),
}


def test_openapi_describes_every_endpoint(live: Live) -> None:
    spec = live.call("GET", "/openapi.json").json()
    auth = ApiAuth(live.ctx)
    every = [
        *create_app(live.ctx).routes,
        *create_router(live.ctx, auth).routes,
        *create_merchant_router(live.ctx, auth).routes,
        *create_topups_router(live.ctx, auth).routes,
    ]
    routes = {
        (m.lower(), r.path)
        for r in every
        if getattr(r, "include_in_schema", False)
        for m in getattr(r, "methods", ())
    }
    documented = {(m, p) for p, ops in spec["paths"].items() for m in ops}
    assert routes == documented
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            ok = next(v for k, v in op["responses"].items() if k.startswith("2"))
            schema = ok["content"]["application/json"]["schema"]
            if (method, path) not in FREE_FORM:
                assert "$ref" in schema, (method, path)
            for status in ("401", "403", "404", "409", "422", "429"):
                ref = op["responses"][status]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorOut"), (method, path, status)
    assert {"/v1/app/bills", "/v1/kiosk/reissue", "/v1/admin/refunds"} <= set(spec["paths"])
    assert {"/v1/app/topups/{order_id}", "/v1/paygate/{channel}/notify"} <= set(spec["paths"])


@pytest.mark.parametrize(
    ("path", "body", "where"),
    [
        (
            "/v1/admin/accounts",
            {"number": "V1", "name": "x", "type": "student", "id_card": "510102200401010021"},
            "id_card",
        ),
        (
            "/v1/admin/accounts",
            {"number": "V1", "name": "x", "type": "alien", "id_card": "x"},
            "type",
        ),
        ("/v1/admin/accounts/V0/topups", {"amount_fen": 0, "channel": "cash"}, "amount_fen"),
        ("/v1/admin/accounts/V0/topups", {"amount_fen": -5, "channel": "cash"}, "amount_fen"),
        (
            "/v1/admin/accounts/V0/topups",
            {"amount_fen": MAX_AMOUNT_FEN + 1, "channel": "cash"},
            "amount_fen",
        ),
        ("/v1/admin/accounts/V0/topups", {"amount_fen": 1.5, "channel": "cash"}, "amount_fen"),
        ("/v1/admin/accounts/V0/topups", {"amount_fen": 100, "channel": "cash", "x": 1}, "x"),
        ("/v1/holder/report-loss", {"number": "V0", "password": "12345"}, "password"),
        ("/v1/holder/report-loss", {"number": "V0", "password": "12345a"}, "password"),
        ("/v1/admin/accounts/V0/extend", {"expires": "next year"}, "expires"),
    ],
)
def test_every_field_is_validated_with_a_stable_error(
    live: Live, path: str, body: dict[str, object], where: str
) -> None:
    r = live.call("POST", path, body, token=live.token)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] in ("invalid", FIELD_CODES.get(where)) and where in err["message"]
