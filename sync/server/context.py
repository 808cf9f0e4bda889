"""Everything a server operation needs: the database, the clock, randomness, configuration,
the policy terminals receive, and the notifier that wakes long-polling terminals."""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.card.keys import MASTERS, Keystore
from edge.clock import DEFAULT_TZ, Clock, SystemClock, campus_date
from edge.db import Database, Tx
from edge.passwords import DEFAULT_LOG2_N
from edge.rules import DEFAULT_CHANNELS, DEFAULT_PIN_MAX_TRIES
from sync.server.schema import MIGRATIONS

#: The policy the server sends to terminals (SPEC §3 offline risk limits, R7 channels, R11 fee,
#: R12 automatic freeze rules).  Operators change it with ``ykt admin policy set``.
DEFAULT_POLICY: dict[str, Any] = {
    "offline_max_purchase_fen": 5000,
    "offline_max_card_day_fen": 10000,
    "offline_max_total_fen": 500000,
    "pin_max_tries": DEFAULT_PIN_MAX_TRIES,
    "reissue_fee_fen": 2000,
    "channels": dict(DEFAULT_CHANNELS),
    "auto_freeze_negative_balance": True,
    "auto_freeze_pin_lockout": False,
    "auto_freeze_query_lockout": False,
    "hold_ttl_s": 600,
    # phone codes (docs/codes.md): validity window and clock-skew tolerance of payment and
    # authentication codes, how long a reverse-scan payment request can be paid, how long a
    # query-password confirmation (R6) covers one over-limit reverse-scan payment, and the R12
    # rule for a code used twice (found at sync)
    "code_valid_s": 300,
    "code_skew_s": 60,
    "reverse_valid_s": 600,
    "confirm_ttl_s": 600,
    "auto_freeze_double_spend": True,
}


@dataclass
class ServerConfig:
    data_dir: Path
    db_url: str | None = None
    campus_id: str = "ynart"
    tz: str = DEFAULT_TZ
    password_log2_n: int = DEFAULT_LOG2_N
    max_skew_ms: int = 120_000
    seed: int | None = None
    #: campus single sign-on (R16), an OpenID Connect provider; None: off
    sso_issuer: str | None = None
    sso_client_id: str = ""
    sso_client_secret: str = ""
    sso_claim: str = "preferred_username"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "ykt.db"


class Notifier:
    """Wakes long-polling requests when the feed version moves (thread-safe ``notify``)."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._lock = threading.Lock()
        self.closing = False  # the server is stopping: long-polls answer at once

    def close(self) -> None:
        self.closing = True
        self.notify()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._loop = loop
            self._event = asyncio.Event()

    def notify(self) -> None:
        with self._lock:
            loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._fire)

    def _fire(self) -> None:
        ev = self._event
        self._event = asyncio.Event()
        if ev is not None:
            ev.set()

    async def wait(self, timeout: float) -> None:
        ev = self._event
        if ev is None:
            await asyncio.sleep(timeout)
            return
        try:
            await asyncio.wait_for(ev.wait(), timeout)
        except TimeoutError:
            pass


@dataclass
class Context:
    config: ServerConfig
    db: Database
    clock: Clock = field(default_factory=SystemClock)
    rng: random.Random = field(default_factory=secrets.SystemRandom)
    notifier: Notifier = field(default_factory=Notifier)
    _card_keys: Keystore | None = None
    _keys_lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, config: ServerConfig, clock: Clock | None = None) -> Context:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(config.db_path, synchronous="FULL", migrations=MIGRATIONS)
        rng: random.Random = (
            random.Random(config.seed) if config.seed is not None else secrets.SystemRandom()
        )
        return cls(config=config, db=db, clock=clock or SystemClock(), rng=rng)

    @property
    def card_keys(self) -> Keystore:
        """The campus card keys (master keys and the issuer key), in DATA/card-keys.json
        (mode 0600), made on first use: the server is the card issuer."""
        with self._keys_lock:
            if self._card_keys is None:
                path = self.config.data_dir / "card-keys.json"
                if not path.exists():
                    Keystore.generate(self.config.campus_id).save(path)
                keys = Keystore.load(path)
                missing = [m for m in MASTERS if m not in keys.masters]
                if missing:  # keys added by a later version: made once, kept
                    keys.masters.update({m: os.urandom(16) for m in missing})
                    keys.save(path)
                self._card_keys = keys
            return self._card_keys

    def now_ms(self) -> int:
        return self.clock.now_ms()

    def today(self) -> str:
        return campus_date(self.now_ms(), self.config.tz)

    def date_of(self, ms: int) -> str:
        return campus_date(ms, self.config.tz)

    # -- settings and policy -------------------------------------------------------------------
    def setting(self, key: str, default: Any = None) -> Any:
        raw = self.db.scalar("SELECT value FROM settings WHERE key = ?", (key,))
        return default if raw is None else json.loads(raw)

    @staticmethod
    def put_setting(tx: Tx, key: str, value: Any) -> None:
        tx.execute(
            "INSERT INTO settings (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, json.dumps(value, ensure_ascii=False)),
        )

    def policy(self) -> dict[str, Any]:
        stored = self.setting("policy", {}) or {}
        merged = dict(DEFAULT_POLICY)
        merged.update(stored)
        merged["channels"] = {**DEFAULT_POLICY["channels"], **stored.get("channels", {})}
        return merged


def next_version(tx: Tx) -> int:
    """Take the next feed version; every row a transaction changes gets the same one.

    The UPDATE also takes the write lock on the counter, so versions become visible in order."""
    tx.execute("UPDATE versions SET value = value + 1 WHERE name = 'feed'")
    return int(tx.scalar("SELECT value FROM versions WHERE name = 'feed'"))


def current_version(db: Database) -> int:
    return int(db.scalar("SELECT value FROM versions WHERE name = 'feed'"))
