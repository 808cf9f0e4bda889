"""A small HTTP/1.1 client on asyncio streams, for benchmarks that hold hundreds of connections
open at once from one process (:mod:`sim.bench.hotlist`: 500 long-polling terminals).

The runtime dependencies offer no asyncio HTTP client (``requests`` blocks a thread per
request), and a benchmark must run on an install without the dev extras, so this speaks the
little of HTTP/1.1 the ykt server answers with: one keep-alive connection per client, a request
at a time, bodies with ``Content-Length`` or ``Transfer-Encoding: chunked``.  It is not a
general client (no TLS, no redirects, no proxies).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sim.bench.errors import BenchmarkError


class HttpError(BenchmarkError):
    """The connection failed, timed out, or the answer was not HTTP/1.1 we understand."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def raise_for_status(self) -> Response:
        if self.status >= 400:
            raise HttpError(f"HTTP {self.status}: {self.body[:200]!r}")
        return self


class Client:
    """One keep-alive connection to ``base_url`` (``http://host:port``); reconnects after a
    failure.  ``async with Client(url) as c: page = (await c.get("/v1/feed?…")).json()``."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"not an http:// URL: {base_url}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.headers = dict(headers or {})
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass

    async def get(
        self, target: str, headers: dict[str, str] | None = None, timeout: float = 30
    ) -> Response:
        return await self.request("GET", target, headers=headers, timeout=timeout)

    async def post(
        self,
        target: str,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> Response:
        body = json.dumps(json_body).encode()
        more = {"Content-Type": "application/json", **(headers or {})}
        return await self.request("POST", target, body, more, timeout)

    async def request(
        self,
        method: str,
        target: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> Response:
        try:
            async with asyncio.timeout(timeout):
                return await self._exchange(method, target, body, headers or {})
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            await self.close()  # the connection is in an unknown state: start afresh
            raise HttpError(f"{method} {target}: {exc!r}") from exc
        except HttpError:
            await self.close()
            raise

    async def lines(
        self, target: str, headers: dict[str, str] | None = None, timeout: float = 30
    ) -> AsyncIterator[bytes]:
        """The lines of a GET's chunked answer (a feed stream), each as soon as it arrived;
        ``timeout``: the longest wait for the next.  An answer of another status raises
        :class:`HttpError`, as does a failure on the way (the connection is then closed)."""
        try:
            async with asyncio.timeout(timeout):
                status, got = await self._head("GET", target, b"", headers or {})
            if status >= 400 or got.get("transfer-encoding", "").lower() != "chunked":
                async with asyncio.timeout(timeout):
                    data = await self._body(got)
                raise HttpError(f"GET {target}: HTTP {status}: {data[:200]!r}")
            assert self._reader is not None
            rest = b""
            while True:
                async with asyncio.timeout(timeout):
                    size = int((await self._reader.readline()).split(b";")[0], 16)
                    if not size:
                        await self._reader.readline()  # the empty trailer
                        break
                    rest += await self._reader.readexactly(size)
                    await self._reader.readexactly(2)
                *done, rest = rest.split(b"\n")
                for line in done:
                    yield line
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            await self.close()
            raise HttpError(f"GET {target}: {exc!r}") from exc
        except BaseException:
            await self.close()  # an error, or the caller stopped reading mid-stream
            raise

    async def _exchange(
        self, method: str, target: str, body: bytes, headers: dict[str, str]
    ) -> Response:
        status, got = await self._head(method, target, body, headers)
        data = await self._body(got)
        if got.get("connection", "").lower() == "close":
            await self.close()
        return Response(status, got, data)

    async def _head(
        self, method: str, target: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, dict[str, str]]:
        """Send a request; the answer's status and headers."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in {**self.headers, **headers}.items()]
        lines.append(f"Content-Length: {len(body)}")
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await self._writer.drain()
        status_line = await self._reader.readline()
        parts = status_line.decode("latin-1").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise HttpError(f"{method} {target}: not an HTTP answer: {status_line[:80]!r}")
        status = int(parts[1])
        got: dict[str, str] = {}
        while (line := await self._reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            got[name.strip().lower()] = value.strip()
        return status, got

    async def _body(self, got: dict[str, str]) -> bytes:
        assert self._reader is not None
        if got.get("transfer-encoding", "").lower() == "chunked":
            data = b""
            while size := int((await self._reader.readline()).split(b";")[0], 16):
                data += await self._reader.readexactly(size)
                await self._reader.readexactly(2)
            await self._reader.readline()  # the empty trailer
        else:
            data = await self._reader.readexactly(int(got.get("content-length", "0")))
        return data
