"""A limit on the size of HTTP request bodies, for ykt's HTTP apps (an ASGI middleware).

A request whose body is larger than the limit gets **413** with the error shape of the API
(``{"error": {"code": "too_large", "message": …}}``) and is never buffered or parsed:

- with a ``Content-Length`` over the limit, the app is not called at all;
- a body sent in chunks (no ``Content-Length``) is counted as it arrives, and refused the moment
  it passes the limit, so no more than the limit is ever held in memory.

Before answering, the rest of a moderately large body (up to :data:`DRAIN_BYTES`) is read and
thrown away: a client that sends its whole body before it reads the answer (``requests``,
``curl`` without ``Expect: 100-continue``) then gets the 413 instead of a reset connection.  A
body larger still is not read: the 413 goes out and the connection closes.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: the largest request body the central server reads (1 MiB)
MAX_BODY_BYTES = 1 << 20
#: how much of a body over the limit is read and dropped so the client sees the 413
DRAIN_BYTES = 16 << 20


class TooLarge(HTTPException):
    """A body passed the limit while the app was reading it: an HTTP error (413), so that a
    framework that turns other errors met while reading a body into a 400 passes it on, and
    the app's own handler answers it in the app's error shape."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, _message(max_bytes))


class BodyLimit:
    """``app.add_middleware(BodyLimit, max_bytes=…)``."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = content_length(scope)
        if declared is not None and declared > self.max_bytes:
            if declared <= DRAIN_BYTES:
                await _drain(receive, DRAIN_BYTES)
            await self._refuse(send)
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    if message.get("more_body", False):
                        await _drain(receive, DRAIN_BYTES - seen)
                    raise TooLarge(self.max_bytes)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except TooLarge:
            if started:  # the app answered before it read all of the body
                return
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"error": {"code": "too_large", "message": _message(self.max_bytes)}})
        await send_json(send, 413, body.encode(), close=True)


async def send_json(send: Send, status: int, raw: bytes, *, close: bool = False) -> None:
    """Answer with ``raw`` JSON (an ASGI ``send``), closing the connection after if ``close``."""
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": raw})


def _message(max_bytes: int) -> str:
    return f"the request body is larger than {max_bytes} bytes (the limit of this API)"


def content_length(scope: Scope) -> int | None:
    """The declared ``Content-Length`` of a request, or None (none, or not a number)."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP server refuses such a request itself
    return None


async def _drain(receive: Receive, budget: int) -> None:
    """Read and drop the rest of a request body, at most ``budget`` bytes of it."""
    while budget > 0:
        message: Any = await receive()
        if message["type"] != "http.request":
            return
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return
