"""Errors of the central server's services; each maps to one HTTP status and a stable code
(the tree of :mod:`sync.errors`; the app answers every :class:`YktError` with its
``http_status`` and ``code``).

::

    YktError                (drivers.errors)
    ├── ServiceError        400 (message, code): the error shape of the API; ``code`` defaults
    │   │                   to the class's own
    │   ├── BadRequest          400 a request the server cannot have asked for (a forged
    │   │                       paging cursor)
    │   ├── Invalid             422 a field that breaks a rule or a format
    │   ├── Unauthorized        401 missing or bad credentials, bad request signature
    │   ├── Forbidden           403 authenticated, but not allowed (revoked terminal, wrong role)
    │   ├── NotFound            404 no such account, card, terminal
    │   ├── Conflict            409 a duplicate, or a state that does not allow the operation
    │   ├── TooManyRequests     429 a rate limit (card-less operations, R10); ``retry_after_s``
    │   └── Recovering          (sync.server.recovery) 503 an online approval while the server
    │                           recovers from a restore: the terminal decides offline
    └── SsoError            (sync.server.sso) 401 the identity provider could not be reached
                            or answered something we cannot accept (the sign-in answers
                            Unauthorized ``sso_failed``)
"""

from __future__ import annotations

from sync.errors import YktError


class ServiceError(YktError):
    http_status = 400
    code = "bad_request"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


class BadRequest(ServiceError):
    http_status = 400
    code = "bad_request"


class Invalid(ServiceError):
    http_status = 422
    code = "invalid"


class Unauthorized(ServiceError):
    http_status = 401
    code = "unauthorized"


class Forbidden(ServiceError):
    http_status = 403
    code = "forbidden"


class NotFound(ServiceError):
    http_status = 404
    code = "not_found"


class Conflict(ServiceError):
    http_status = 409
    code = "conflict"


class TooManyRequests(ServiceError):
    http_status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after_s: int, code: str | None = None) -> None:
        super().__init__(message, code)
        self.retry_after_s = retry_after_s
