"""Exceptions of the sync package.

::

    SyncError
    ├── ProtocolError       bytes that are not a valid record, request or response
    │   └── CodeError       a phone code, payment request or proof that is refused (reason code)
    ├── SignatureError      a signature that does not verify (forged, altered, wrong key)
    ├── NetworkError        the server could not be reached (connection refused, timeout)
    └── ApiError            the server answered with an error (status, code, message)
        └── AuthError       401/403: unknown terminal, bad signature, stale or replayed request
"""

from __future__ import annotations


class SyncError(Exception):
    """Base of every error raised by the sync package."""


class ProtocolError(SyncError, ValueError):
    pass


class CodeError(ProtocolError):
    """A QR code (payment/authentication code, payment request, proof) that is refused.

    ``reason`` is a stable machine-readable code (``forged``, ``expired``, ``replayed`` …, listed
    in docs/codes.md); the message says the same for people."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class SignatureError(SyncError):
    pass


class NetworkError(SyncError):
    pass


class ApiError(SyncError):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class AuthError(ApiError):
    pass
