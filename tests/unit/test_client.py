"""sync.client: requests go through the transport signed, and what went wrong is decided once:
unavailable (no answer, 5xx, an answer that is not what was asked) or refused (4xx)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from sync import protocol
from sync.client import MockTransport, Request, Response, ServerClient
from sync.clock import ManualClock
from sync.crypto import SigningKey
from sync.errors import AuthError, ServerRefused, ServerUnavailable, SyncError
from sync.records import AuthorizeRequest, PushAck

KEY = SigningKey.from_seed(bytes(32))


def client(handler: Callable[[Request], Response]) -> tuple[ServerClient, MockTransport]:
    transport = MockTransport(handler)
    c = ServerClient(
        "http://server.invalid/",
        terminal_id="T00001",
        key=KEY,
        clock=ManualClock(1_780_000_000_000),
        transport=transport,
        headers={"Authorization": "Bearer tok"},
    )
    return c, transport


def answer(status: int, body: object) -> Callable[[Request], Response]:
    return lambda _req: Response(status, json.dumps(body).encode())


def test_a_request_is_signed_over_what_is_sent() -> None:
    c, t = client(answer(200, {"ack": 2}))
    ack = c.push([{"body": "{}", "sig": ""}])
    assert ack == PushAck(ack=2)
    (req,) = t.sent
    assert (req.method, req.url, req.target, req.path) == (
        "POST",
        "http://server.invalid/v1/journal",
        "/v1/journal",
        "/v1/journal",
    )
    assert req.json() == {"records": [{"body": "{}", "sig": ""}]}
    assert req.headers["Authorization"] == "Bearer tok"
    assert req.headers[protocol.H_TIME] == "1780000000000"
    protocol.verify_request(KEY.public, "POST", req.target, req.content, req.headers)


def test_a_query_is_part_of_what_is_signed() -> None:
    c, t = client(answer(200, {"version": 4, "more": True}))
    page = c.feed(3, wait=2.5)
    assert (page.version, page.more) == (4, True)
    assert t.sent[0].target == "/v1/feed?since=3&wait=2.5"
    assert t.sent[0].timeout == (2.0, 17.5)
    protocol.verify_request(
        KEY.public, "GET", t.sent[0].target, t.sent[0].content, t.sent[0].headers
    )


def test_typed_request_bodies_are_plain_json() -> None:
    c, t = client(answer(200, {"approved": False, "code": "declined", "reason": "unknown card"}))
    got = c.authorize(AuthorizeRequest(seq=4, card_no="7", amount_fen=100, method="card"))
    assert (got.approved, got.code, got.reason) == (False, "declined", "unknown card")
    assert t.sent[0].json() == {"seq": 4, "card_no": "7", "amount_fen": 100, "method": "card"}


def _refuse(exc: BaseException) -> Callable[[Request], Response]:
    def handler(_req: Request) -> Response:
        raise exc

    return handler


ERR = {"error": {"code": "seq_used", "message": "already journaled"}}
CASES: list[tuple[str, Callable[[Request], Response], type[SyncError], int, str]] = [
    ("refused", _refuse(ConnectionRefusedError("refused")), ServerUnavailable, 0, "unreachable"),
    ("timeout", _refuse(TimeoutError("timed out")), ServerUnavailable, 0, "unreachable"),
    (
        "503",
        answer(503, {"error": {"code": "store_unavailable", "message": "db"}}),
        ServerUnavailable,
        503,
        "store_unavailable",
    ),
    (
        "502 from a proxy",
        lambda _r: Response(502, b"<html>bad gateway</html>"),
        ServerUnavailable,
        502,
        "http_error",
    ),
    (
        "200 not JSON",
        lambda _r: Response(200, b"<html>captive portal</html>"),
        ServerUnavailable,
        200,
        "bad_answer",
    ),
    ("200 wrong shape", answer(200, {"ack": "three"}), ServerUnavailable, 200, "bad_answer"),
    ("409", answer(409, ERR), ServerRefused, 409, "seq_used"),
    ("422 without a body", lambda _r: Response(422, b""), ServerRefused, 422, "http_error"),
    (
        "401",
        answer(401, {"error": {"code": "bad_signature", "message": "m"}}),
        AuthError,
        401,
        "bad_signature",
    ),
    (
        "403",
        answer(403, {"error": {"code": "terminal_revoked", "message": "m"}}),
        AuthError,
        403,
        "terminal_revoked",
    ),
]


@pytest.mark.parametrize(
    ("why", "handler", "kind", "status", "code"), CASES, ids=[c[0] for c in CASES]
)
def test_unavailable_or_refused_is_decided_in_the_client(
    why: str,
    handler: Callable[[Request], Response],
    kind: type[SyncError],
    status: int,
    code: str,
) -> None:
    c, _t = client(handler)
    with pytest.raises(kind) as err:
        c.push([])
    assert type(err.value) is kind
    assert (err.value.status, err.value.code) == (status, code)  # type: ignore[attr-defined]
    # the pair never overlaps: a caller that tells them apart cannot be wrong
    assert isinstance(err.value, ServerUnavailable) != isinstance(err.value, ServerRefused)


def test_a_refusal_carries_the_servers_message() -> None:
    c, _t = client(answer(409, ERR))
    with pytest.raises(ServerRefused, match="409 seq_used: already journaled") as err:
        c.request("POST", "/v1/pos/authorize", body={})
    assert err.value.message == "already journaled"


def test_an_unenrolled_client_cannot_sign() -> None:
    c = ServerClient("http://x.invalid", transport=MockTransport(answer(200, {"ok": True})))
    assert c.health() == {"ok": True}  # unsigned requests work
    with pytest.raises(SyncError, match="not enrolled"):
        c.push([])


def test_close_closes_the_transport() -> None:
    c, t = client(answer(200, {}))
    c.close()
    assert t.closed
