"""Exceptions of the shared core and the wire (both ends raise these).

The root, :class:`YktError`, lives in :mod:`drivers.errors` (the lowest layer) and is
re-exported here.  Every class carries its own ``exit_code``, ``http_status`` and ``code``;
:func:`exit_code` is the one place a command turns an error into its exit status, and the HTTP
apps answer ``{"error": {"code", "message"}}`` with ``http_status`` (sync.server.app,
edge.pos.control).

::

    YktError                        (drivers.errors) base of every ykt error
    ├── DriverError                 (drivers.errors) a device failed: the tree drawn there
    ├── ConfigError                 a configuration file or option that cannot be used (exit 2)
    ├── MoneyError                  an amount that is not a valid number of fen
    ├── RuleError                   input that breaks a rule of the card system (R1-R20)
    │   ├── IdCardError                 an ID-card number malformed or failing GB 11643
    │   └── ReverseRefused              (edge.errors) a reverse-scan request the POS will not show
    ├── StoreError                  the database failed (wraps sqlite3 and psycopg errors)
    │   ├── StoreConflict               a uniqueness or foreign-key constraint refused a write
    │   ├── StoreRefused                a value the database cannot hold (PostgreSQL: NUL in text)
    │   └── SqlError                    SQL that one of the databases cannot run
    ├── CardRefused                 a campus card whose data may not be used (``code`` says why)
    │   └── BadSignature                (sync.card.app) card data the issuer did not sign
    ├── DeskError                   encoding or reading a card at the desk failed (sync.card.desk)
    ├── SyncError                   talking to the other end failed
    │   ├── ProtocolError               bytes that are not a valid record, request or response
    │   │   └── CodeError                   a phone code, payment request or proof refused
    │   ├── SignatureError              a signature that does not verify
    │   ├── ServerUnavailable           the server could not decide: unreachable, a timeout, a
    │   │                               5xx, an answer that is not what was asked for
    │   └── ServerRefused               the server said no: a 4xx (status, code, message)
    │       └── AuthError                   401/403: unknown terminal, bad or stale signature
    ├── ServiceError                (sync.server.errors) the server's answers, one per status
    ├── SsoError                    (sync.server.sso) single sign-on failed (drawn in
    │                               sync.server.errors)
    ├── EdgeError                   (edge.errors) the terminal's own failures
    └── SimError                    (sim.errors) the simulator's
"""

from __future__ import annotations

from drivers.errors import DriverError, YktError

__all__ = [
    "AuthError",
    "CardRefused",
    "CodeError",
    "ConfigError",
    "DeskError",
    "DriverError",
    "IdCardError",
    "MoneyError",
    "ProtocolError",
    "RuleError",
    "ServerRefused",
    "ServerUnavailable",
    "SignatureError",
    "SqlError",
    "StoreConflict",
    "StoreError",
    "StoreRefused",
    "SyncError",
    "YktError",
    "exit_code",
]


class ConfigError(YktError):
    exit_code = 2
    http_status = 422
    code = "bad_config"


class MoneyError(YktError, ValueError):
    http_status = 422
    code = "invalid"


class RuleError(YktError, ValueError):
    http_status = 422
    code = "invalid"


class IdCardError(RuleError):
    pass


class StoreError(YktError):
    http_status = 503
    code = "store_unavailable"


class StoreConflict(StoreError):
    """A constraint refused a write the code did not expect to be refused (the services turn
    the expected ones into their own answers)."""


class StoreRefused(StoreError):
    """The database cannot hold a value it was given (PostgreSQL: a NUL character in text, a
    number out of range): bad input, not an unavailable database."""

    http_status = 422
    code = "invalid"


class SqlError(StoreError, ValueError):
    """A statement that one of the databases cannot run as written."""

    http_status = 500
    code = "sql_error"


class CardRefused(YktError):
    http_status = 422

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class DeskError(YktError):
    pass


class SyncError(YktError):
    """Base of the errors of talking to the other end."""

    http_status = 502
    code = "sync_error"


class ProtocolError(SyncError, ValueError):
    http_status = 422
    code = "invalid"


class CodeError(ProtocolError):
    """A QR code (payment/authentication code, payment request, proof) that is refused.

    ``reason`` is a stable machine-readable code (``forged``, ``expired``, ``replayed`` …, listed
    in docs/codes.md); the message says the same for people."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class SignatureError(SyncError):
    http_status = 401
    code = "bad_signature"


class ServerUnavailable(SyncError):
    """The server could not decide: it was not reached or did not answer in time (``status``
    0), answered 5xx, or answered something that is not what was asked for.  A terminal
    decides offline and tries again later (:class:`sync.client.ServerClient` decides which
    failure is which, once)."""

    http_status = 503

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}" if status else message)
        self.status = status
        self.code = code
        self.message = message


class ServerRefused(SyncError):
    """The server answered and refused (a 4xx with its error ``code`` and ``message``): asking
    again unchanged gets the same answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class AuthError(ServerRefused):
    """401/403: the server does not know or does not trust this terminal (or session)."""


def exit_code(exc: BaseException) -> int:
    """The exit status of a command that ``exc`` ended: the error's own ``exit_code`` (1 the
    operation failed, 2 bad usage or configuration), 130 for Ctrl-C."""
    if isinstance(exc, KeyboardInterrupt):
        return 130
    if isinstance(exc, YktError):
        return exc.exit_code
    raise TypeError(f"not an error of ykt: {exc!r}") from exc
