"""The terminal side of the wire: an HTTP client that signs every request (requests).

One :class:`ServerClient` per thread (a ``requests.Session`` is not meant to be shared).
``requests`` errors are converted here: unreachable → :class:`NetworkError`, an error answer →
:class:`ApiError` (or :class:`AuthError` for 401/403) carrying the server's error code.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import urlencode

import requests

from sync import protocol
from sync.clock import Clock, SystemClock
from sync.crypto import SigningKey
from sync.errors import ApiError, AuthError, NetworkError, ProtocolError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = (2.0, 10.0)


def _raise_for(resp: requests.Response) -> None:
    if resp.status_code < 400:
        return
    try:
        err = resp.json()["error"]
        code, message = str(err["code"]), str(err["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "http_error", resp.text[:200]
    cls = AuthError if resp.status_code in (401, 403) else ApiError
    raise cls(resp.status_code, code, message)


class ServerClient:
    def __init__(
        self,
        base_url: str,
        *,
        terminal_id: str | None = None,
        key: SigningKey | None = None,
        clock: Clock | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.terminal_id = terminal_id
        self.key = key
        self.clock = clock or SystemClock()
        self.timeout = timeout
        self.session = requests.Session()

    def close(self) -> None:
        self.session.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
        signed: bool = True,
        timeout: tuple[float, float] | float | None = None,
    ) -> dict[str, Any]:
        target = path + (f"?{urlencode(params)}" if params else "")
        data = b"" if body is None else json.dumps(body, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if signed:
            if self.key is None or self.terminal_id is None:
                raise ProtocolError("this client is not enrolled: no terminal id or key")
            headers.update(
                protocol.sign_request(
                    self.key, self.terminal_id, method, target, data, self.clock.now_ms()
                )
            )
        try:
            resp = self.session.request(
                method,
                self.base_url + target,
                data=data or None,
                headers=headers,
                timeout=timeout or self.timeout,
            )
        except requests.RequestException as exc:
            raise NetworkError(f"{method} {path}: {exc.__class__.__name__}: {exc}") from exc
        _raise_for(resp)
        try:
            out = resp.json()
        except ValueError as exc:
            raise ProtocolError(f"{method} {path}: the server did not answer JSON") from exc
        if not isinstance(out, dict):
            raise ProtocolError(f"{method} {path}: the server did not answer a JSON object")
        return out

    # -- the terminal API ------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return self.request("GET", "/v1/health", signed=False, timeout=(1.0, 2.0))

    def enroll(self, token: str, public_key: str, role: str | None = None) -> dict[str, Any]:
        body = {"token": token, "public_key": public_key}
        if role is not None:
            body["role"] = role
        return self.request("POST", "/v1/terminals/enroll", body=body, signed=False)

    def authorize(self, req: dict[str, Any], timeout: float = 1.5) -> dict[str, Any]:
        return self.request("POST", "/v1/pos/authorize", body=req, timeout=(0.5, timeout))

    def keystore(self) -> dict[str, Any]:
        """The card keystore for this terminal's role (signed request)."""
        return self.request("GET", "/v1/terminals/keystore", timeout=(2.0, 10.0))

    def push(self, records: list[dict[str, str]]) -> dict[str, Any]:
        return self.request("POST", "/v1/journal", body={"records": records}, timeout=(2.0, 30.0))

    def feed(self, since: int, wait: float = 0) -> dict[str, Any]:
        return self.request(
            "GET",
            "/v1/feed",
            params={"since": since, "wait": wait},
            timeout=(2.0, wait + 15.0),
        )
