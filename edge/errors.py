"""Exceptions of the terminal (edge/), in the tree :mod:`sync.errors` draws.

::

    YktError                        (drivers.errors)
    ├── RuleError                   (sync.errors)
    │   └── ReverseRefused              reverse scan cannot start (online, or no code keys yet)
    └── EdgeError                   the terminal's own failures
        ├── JournalError                the journal is damaged or cannot take a record
        ├── EngineError                 an action the engine's state does not allow (HTTP 409)
        │   ├── HolderError                 (edge.kiosk.common) the holder's input or card does not allow it (422)
        │   └── KioskFault                  (edge.kiosk.common) a kiosk device or the server cannot now (503)
        ├── TillError                   a till action refused (HTTP 409; edge.pos.till)
        │   ├── TillForbidden               unknown/disabled operator, wrong PIN (403)
        │   ├── TillLocked                  too many wrong PINs of an operator (423)
        │   ├── TillNotFound                no such sale on this terminal (404)
        │   └── TillInvalid                 not a sequence number (422)
        └── VerifyError                 ``ykt verify`` could not read or check a code
"""

from __future__ import annotations

from sync.errors import RuleError, YktError


class EdgeError(YktError):
    """Base of the terminal's own errors."""


class JournalError(EdgeError):
    http_status = 500
    code = "journal_error"


class EngineError(EdgeError):
    """An action that the current state does not allow (the control API answers 409)."""

    http_status = 409
    code = "bad_state"


class TillError(EdgeError):
    """A till action the state does not allow (the control API answers 409 with ``code``)."""

    http_status = 409

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class TillForbidden(TillError):
    """An unknown or disabled operator, a wrong PIN, not a supervisor (403)."""

    http_status = 403


class TillLocked(TillError):
    """Too many wrong PINs of an operator on this terminal (423)."""

    http_status = 423


class TillNotFound(TillError):
    http_status = 404


class TillInvalid(TillError):
    http_status = 422


class VerifyError(EdgeError):
    pass


class ReverseRefused(RuleError):
    """Reverse scan cannot start (online, or no code keys yet)."""

    http_status = 409
    code = "reverse_refused"
