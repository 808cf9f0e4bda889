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


class VerifyError(EdgeError):
    pass


class ReverseRefused(RuleError):
    """Reverse scan cannot start (online, or no code keys yet)."""

    http_status = 409
    code = "reverse_refused"
