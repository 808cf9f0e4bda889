"""Slow password hashes (scrypt, from the standard library) for the query and consumption
passwords (R4, R5).  Only hashes are stored; the cost is part of the stored string, so a
server can raise the cost for new hashes while old ones still verify.

Format: ``scrypt$<log2 N>$<r>$<p>$<salt b64>$<hash b64>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

DEFAULT_LOG2_N = 15  # about 75 ms on the 2-core build machines
#: The costs :func:`verify_password` accepts; :func:`hash_password` refuses to make others.
MIN_LOG2_N, MAX_LOG2_N = 10, 20


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def hash_password(pw: str, *, log2_n: int = DEFAULT_LOG2_N, salt: bytes | None = None) -> str:
    if not MIN_LOG2_N <= log2_n <= MAX_LOG2_N:
        raise ValueError(f"scrypt cost log2 N must be {MIN_LOG2_N} to {MAX_LOG2_N}, got {log2_n}")
    salt = salt if salt is not None else os.urandom(16)
    r, p = 8, 1
    dk = hashlib.scrypt(
        pw.encode(), salt=salt, n=1 << log2_n, r=r, p=p, maxmem=512 * 1024 * 1024, dklen=32
    )
    return f"scrypt${log2_n}${r}${p}${_b64(salt)}${_b64(dk)}"


def verify_password(pw: str, stored: str) -> bool:
    """True when ``pw`` matches ``stored``; False for a mismatch or a malformed hash."""
    try:
        scheme, log2_n, r, p, salt, dk = stored.split("$")
        if scheme != "scrypt" or not MIN_LOG2_N <= int(log2_n) <= MAX_LOG2_N:
            return False
        want = base64.b64decode(dk)
        got = hashlib.scrypt(
            pw.encode(),
            salt=base64.b64decode(salt),
            n=1 << int(log2_n),
            r=int(r),
            p=int(p),
            maxmem=512 * 1024 * 1024,
            dklen=len(want),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)
