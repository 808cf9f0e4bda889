"""The terminal side of the wire: an HTTP client that signs every request, on a transport.

A :class:`ServerClient` sends :class:`Request` objects through a :class:`Transport` (the way
httpx takes ``transport=``): :class:`RequestsTransport` (``requests``, the default) on a
terminal, :class:`MockTransport` (a function from request to response) in tests, so engines,
deciders and the uplink run in-process without a server.

What went wrong is decided here, once, for every caller:

=====================================================  =====================================
the transport raised ``OSError`` (no answer: refused,  :class:`ServerUnavailable`, status 0
unreachable, timeout; every ``requests`` error is one)
a 5xx answer                                           :class:`ServerUnavailable`
a 2xx answer that is not the JSON asked for            :class:`ServerUnavailable`
a 401 or 403 answer                                    :class:`AuthError`
any other 4xx answer                                   :class:`ServerRefused`
=====================================================  =====================================

Errors carry the server's ``{"error": {"code", "message"}}`` when it sent one.  One client per
thread (a ``requests.Session`` is not meant to be shared).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import urlencode

import msgspec
import requests

from sync import protocol
from sync.card.keys import Keystore
from sync.clock import Clock, SystemClock
from sync.crypto import SigningKey
from sync.errors import (
    AuthError,
    ProtocolError,
    ServerRefused,
    ServerUnavailable,
)
from sync.records import AuthorizeAnswer, AuthorizeRequest, FeedPage, PushAck, answer

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = (2.0, 10.0)
T = TypeVar("T")


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    #: the path with its query string (what the signature covers)
    target: str
    headers: Mapping[str, str] = field(default_factory=dict)
    content: bytes = b""
    timeout: tuple[float, float] | float = DEFAULT_TIMEOUT

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def json(self) -> Any:
        return json.loads(self.content) if self.content else None


@dataclass(frozen=True)
class Response:
    status: int
    content: bytes = b""

    @classmethod
    def of(cls, status: int, obj: Any) -> Response:
        """An answer with ``obj`` as its JSON body (typed values as their JSON)."""
        return cls(status, msgspec.json.encode(obj))

    def json(self) -> Any:
        return json.loads(self.content)


@dataclass(frozen=True)
class Streamed:
    """An answer read as it arrives: its status, then the lines of its body (reading them may
    raise ``OSError``); ``close`` ends it early."""

    status: int
    lines: Iterator[bytes]
    close: Callable[[], None] = lambda: None

    @classmethod
    def of(cls, resp: Response) -> Streamed:
        """A whole answer, read as a stream (a transport that has no other way)."""
        return cls(resp.status, iter(resp.content.splitlines()))


class Transport(Protocol):
    """Sends one request and returns the server's answer, whatever its status; raises
    ``OSError`` (``ConnectionError``, ``TimeoutError`` …) when no answer came.  ``stream``:
    the same, the body read a line at a time as it arrives (the feed stream)."""

    def send(self, request: Request) -> Response: ...

    def stream(self, request: Request) -> Streamed: ...

    def close(self) -> None: ...


class RequestsTransport:
    """HTTP through a ``requests.Session`` (``requests``' errors are ``OSError``\\ s)."""

    def __init__(self, headers: Mapping[str, str] | None = None) -> None:
        self.session = requests.Session()
        self.session.headers.update(headers or {})

    def send(self, request: Request) -> Response:
        resp = self._call(request, stream=False)
        return Response(resp.status_code, resp.content)

    def stream(self, request: Request) -> Streamed:
        resp = self._call(request, stream=True)

        def lines() -> Iterator[bytes]:
            try:
                # each chunk as it arrives; the read timeout bounds the wait for the next
                yield from resp.iter_lines(chunk_size=None, delimiter=b"\n")
            finally:
                resp.close()

        return Streamed(resp.status_code, lines(), resp.close)

    def _call(self, request: Request, stream: bool) -> requests.Response:
        return self.session.request(
            request.method,
            request.url,
            data=request.content or None,
            headers=dict(request.headers),
            timeout=request.timeout,
            stream=stream,
        )

    def close(self) -> None:
        self.session.close()


class MockTransport:
    """Answers every request with ``handler(request)`` (tests): raise ``ConnectionError`` in
    the handler for a server that cannot be reached.  Remembers the requests it was sent."""

    def __init__(self, handler: Callable[[Request], Response]) -> None:
        self.handler = handler
        self.sent: list[Request] = []
        self.closed = False

    def send(self, request: Request) -> Response:
        self.sent.append(request)
        return self.handler(request)

    def stream(self, request: Request) -> Streamed:
        return Streamed.of(self.send(request))

    def close(self) -> None:
        self.closed = True


def _feed_params(since: int, wait: float, head: int | None, acked: int | None) -> dict[str, Any]:
    """The query of a feed request (``acked`` goes only with ``head``)."""
    params: dict[str, Any] = {"since": since, "wait": wait}
    if head is not None:
        params["head"] = head
        if acked is not None:
            params["acked"] = acked
    return params


def _unreachable(method: str, path: str, exc: OSError) -> ServerUnavailable:
    return ServerUnavailable(0, "unreachable", f"{method} {path}: {exc.__class__.__name__}: {exc}")


def _failure(method: str, path: str, resp: Response) -> ServerRefused | ServerUnavailable:
    try:
        err = json.loads(resp.content)["error"]
        code, message = str(err["code"]), str(err["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "http_error", resp.content[:200].decode("utf-8", "replace")
    if resp.status >= 500 or resp.status < 400:
        return ServerUnavailable(resp.status, code, message)
    if resp.status in (401, 403):
        return AuthError(resp.status, code, message)
    return ServerRefused(resp.status, code, message)


class ServerClient:
    def __init__(
        self,
        base_url: str,
        *,
        terminal_id: str | None = None,
        key: SigningKey | None = None,
        clock: Clock | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        transport: Transport | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """``headers`` go with every request (a bearer token); ``transport`` defaults to
        :class:`RequestsTransport`."""
        self.base_url = base_url.rstrip("/")
        self.terminal_id = terminal_id
        self.key = key
        self.clock = clock or SystemClock()
        self.timeout = timeout
        self.headers = dict(headers or {})
        self.transport: Transport = transport or RequestsTransport()

    def close(self) -> None:
        self.transport.close()

    def send(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        signed: bool = True,
        timeout: tuple[float, float] | float | None = None,
    ) -> bytes:
        """Send a request; the body of a 2xx answer, or the error the failure is."""
        req = self._request(method, path, body, params, signed, timeout)
        try:
            resp = self.transport.send(req)
        except OSError as exc:
            raise _unreachable(method, path, exc) from exc
        if not 200 <= resp.status < 300:
            raise _failure(method, path, resp)
        return resp.content

    def _request(
        self,
        method: str,
        path: str,
        body: Any,
        params: Mapping[str, Any] | None,
        signed: bool,
        timeout: tuple[float, float] | float | None,
    ) -> Request:
        """The request :meth:`send` sends (signed if ``signed``)."""
        target = path + (f"?{urlencode(params)}" if params else "")
        if isinstance(body, msgspec.Struct):
            body = msgspec.to_builtins(body)
        data = b"" if body is None else json.dumps(body, ensure_ascii=False).encode()
        headers = dict(self.headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        if signed:
            if self.key is None or self.terminal_id is None:
                raise ProtocolError("this client is not enrolled: no terminal id or key")
            headers.update(
                protocol.sign_request(
                    self.key, self.terminal_id, method, target, data, self.clock.now_ms()
                )
            )
        return Request(
            method, self.base_url + target, target, headers, data, timeout or self.timeout
        )

    def request(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        """A request (the arguments of :meth:`send`) whose answer is a JSON object."""
        content = self.send(method, path, **kw)
        try:
            out = json.loads(content)
        except ValueError:
            out = None
        if not isinstance(out, dict):
            raise ServerUnavailable(
                200, "bad_answer", f"{method} {path}: the server did not answer a JSON object"
            )
        return out

    def _typed(self, kind: type[T], method: str, path: str, **kw: Any) -> T:
        content = self.send(method, path, **kw)
        try:
            return answer(content, kind)
        except ProtocolError as exc:
            raise ServerUnavailable(200, "bad_answer", f"{method} {path}: {exc}") from None

    # -- the terminal API ------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return self.request("GET", "/v1/health", signed=False, timeout=(1.0, 2.0))

    def enroll(self, token: str, public_key: str, role: str | None = None) -> dict[str, Any]:
        body = {"token": token, "public_key": public_key}
        if role is not None:
            body["role"] = role
        return self.request("POST", "/v1/terminals/enroll", body=body, signed=False)

    def authorize(self, req: AuthorizeRequest, timeout: float = 1.5) -> AuthorizeAnswer:
        return self._typed(
            AuthorizeAnswer, "POST", "/v1/pos/authorize", body=req, timeout=(0.5, timeout)
        )

    def keystore(self) -> Keystore:
        """The card keystore for this terminal's role (signed request); a keystore the
        terminal cannot use is :class:`sync.errors.ConfigError`."""
        got = self.request("GET", "/v1/terminals/keystore", timeout=(2.0, 10.0))
        return Keystore.from_dict(got, "the server's keystore")

    def push(self, records: list[dict[str, str]], acked: int | None = None) -> PushAck:
        """Push a batch; ``acked``: the head the server acked before (a server that holds
        less was restored from a backup and stops paying out until the terminals pushed again,
        docs/operations.md)."""
        body: dict[str, Any] = {"records": records}
        if acked is not None:
            body["acked"] = acked
        return self._typed(PushAck, "POST", "/v1/journal", body=body, timeout=(2.0, 30.0))

    def feed(
        self, since: int, wait: float = 0, head: int | None = None, acked: int | None = None
    ) -> FeedPage:
        """A feed page; ``head``: this terminal's journal head, reported to the server (its
        settlement report shows the records not synced yet); ``acked``: the head the server
        acked (a server that holds less was restored from a backup: it stops paying out until
        every terminal has pushed again, docs/operations.md)."""
        return self._typed(
            FeedPage,
            "GET",
            "/v1/feed",
            params=_feed_params(since, wait, head, acked),
            timeout=(2.0, wait + 15.0),
        )

    def feed_stream(
        self, since: int, wait: float, head: int | None = None, acked: int | None = None
    ) -> Generator[FeedPage, None, None]:
        """The feed as a stream (``stream=1``, docs/api.md): each page after ``since`` as the
        server sends it, news or, every ``wait`` seconds, none (with ``wait`` 0, one page),
        until the server ends it (after 90–120 s; the arguments of :meth:`feed`).  A wake
        then costs the server a page on the open request, not a new signed request from
        every terminal.  Raises as :meth:`send` does, also midway (the pages before were
        whole)."""
        params = {**_feed_params(since, wait, head, acked), "stream": 1}
        method, path = "GET", "/v1/feed"
        req = self._request(method, path, None, params, True, (2.0, wait + 15.0))
        try:
            got = self.transport.stream(req)
        except OSError as exc:
            raise _unreachable(method, path, exc) from exc
        try:
            if not 200 <= got.status < 300:
                try:
                    content = b"\n".join(got.lines)
                except OSError:
                    content = b""
                raise _failure(method, path, Response(got.status, content))
            while True:
                try:
                    line = next(got.lines, None)
                except OSError as exc:
                    raise _unreachable(method, path, exc) from exc
                if line is None:
                    return
                if not line.strip():
                    continue
                try:
                    page = answer(line, FeedPage)
                except ProtocolError as exc:
                    raise ServerUnavailable(200, "bad_answer", f"{method} {path}: {exc}") from None
                yield page
        finally:
            got.close()
