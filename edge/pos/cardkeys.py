"""Where a terminal gets its card keystore.

``--keystore FILE`` (or ``keystore = "FILE"`` in the config) names a keystore installed by
hand (``ykt admin keys export --role pos --out FILE``).  Otherwise the terminal keeps it in
``DATA/card-keys.json`` and, while that file does not exist, fetches it from the server with a
signed request (its role decides what it gets) and stores it with mode 0600.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sync.card.keys import Keystore
from sync.errors import CardRefused, ConfigError, SyncError

log = logging.getLogger(__name__)

RETRY_S = 5.0


class KeyProvider:
    def __init__(
        self,
        path: Path,
        fetch: Callable[[], Keystore] | None,
        role: str = "pos",
    ) -> None:
        self.path = path
        self.fetch = fetch
        self.role = role
        self._keys: Keystore | None = None
        self._lock = threading.Lock()
        self._last_try = -1e9
        self.error = ""
        if path.exists():
            self._keys = Keystore.load(path)  # a bad file is a configuration error at start
        elif fetch is None:
            raise ConfigError(f"no card keystore at {path} (ykt admin keys export --role pos)")

    def get(self) -> Keystore:
        with self._lock:
            if self._keys is not None:
                return self._keys
            if self.fetch is None:
                raise CardRefused("no_keys", f"no card keystore at {self.path}")
            if time.monotonic() - self._last_try < RETRY_S:
                raise CardRefused("no_keys", f"no card keys yet: {self.error}")
            self._last_try = time.monotonic()
            try:
                keys = self.fetch()
            except (SyncError, ConfigError) as exc:
                self.error = str(exc)
                log.warning("cannot fetch the card keystore: %s", exc)
                raise CardRefused("no_keys", f"no card keys yet (server: {exc})") from exc
            if keys.role != self.role:
                raise CardRefused("no_keys", f"the server sent a {keys.role} keystore")
            keys.save(self.path)
            log.info("card keystore for role %s stored in %s", keys.role, self.path)
            self._keys = keys
            self.error = ""
            return keys

    def loaded(self) -> bool:
        return self._keys is not None
