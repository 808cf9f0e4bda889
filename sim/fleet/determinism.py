"""One seeded RNG for every random choice the product makes while the simulator runs.

The product draws nonces, tokens and salts from :mod:`secrets` and :func:`os.urandom`
(``sync.protocol.sign_request``'s nonce, ``sync.paygate.sign``, session and grant tokens in
``sync.server.holders``, enroll tokens, password salts, card keys); :func:`seeded` replaces
those functions, for the length of a run, with draws from one :class:`random.Random`, so the
same seed makes the same bytes.  Time comes from the run's clock (injected everywhere), and
``time.monotonic``/``time_ns`` are read only for timings that no decision depends on.
"""

from __future__ import annotations

import base64
import os
import random
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: (module, attribute) the run replaces
PATCHED = (
    (secrets, "token_bytes"),
    (secrets, "token_hex"),
    (secrets, "token_urlsafe"),
    (os, "urandom"),
)


@contextmanager
def seeded(rng: random.Random) -> Iterator[None]:
    def token_bytes(n: int | None = None) -> bytes:
        return rng.randbytes(32 if n is None else n)

    def token_hex(n: int | None = None) -> str:
        return token_bytes(n).hex()

    def token_urlsafe(n: int | None = None) -> str:
        return base64.urlsafe_b64encode(token_bytes(n)).rstrip(b"=").decode()

    fakes: dict[str, Any] = {
        "token_bytes": token_bytes,
        "token_hex": token_hex,
        "token_urlsafe": token_urlsafe,
        "urandom": token_bytes,
    }
    saved = [(mod, name, getattr(mod, name)) for mod, name in PATCHED]
    for mod, name in PATCHED:
        setattr(mod, name, fakes[name])
    try:
        yield
    finally:
        for mod, name, real in saved:
            setattr(mod, name, real)
