"""The API's answers to errors: ``{"error": {"code": "...", "message": "..."}}`` with the status
of :mod:`sync.server.errors`, the same on every route (FastAPI's handlers and
:mod:`sync.server.hot` alike)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse

from sync.errors import StoreError, StoreRefused, YktError
from sync.server.errors import TooManyRequests

log = logging.getLogger(__name__)


def error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    """The API's error shape: ``{"error": {"code": …, "message": …}}``."""
    return JSONResponse(
        {"error": {"code": code, "message": message, **extra}}, status_code=status, headers=headers
    )


def error_response(exc: YktError, path: str) -> JSONResponse:
    """The answer to one of our errors (:mod:`sync.errors`), for every route: its own status
    and stable code; a database error says only that the database is unavailable."""
    if isinstance(exc, StoreRefused):
        log.warning("value refused by the database on %s: %s", path, exc)
        return error(
            exc.http_status,
            exc.code,
            "a value in the request cannot be stored (e.g. a NUL character)",
        )
    if isinstance(exc, StoreError):
        log.error("store error on %s: %s", path, exc)
        return error(exc.http_status, exc.code, "the database is unavailable; retry later")
    if isinstance(exc, TooManyRequests):
        resp = error(exc.http_status, exc.code, str(exc), retry_after_s=exc.retry_after_s)
        resp.headers["Retry-After"] = str(exc.retry_after_s)
        return resp
    if exc.http_status >= 500:
        log.error("%s on %s: %s", type(exc).__name__, path, exc)
    return error(exc.http_status, exc.code, str(exc))
