"""Injectable time.  Code asks a :class:`Clock` for the time, never ``time.time()`` directly,
so tests can move the clock (midnight rollover for R6, stale requests, code expiry).

``Clock.now()`` is epoch milliseconds (UTC); :func:`campus_date` turns it into the campus
calendar day ("today" in docs/rules.md is in the campus time zone, default Asia/Shanghai).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Protocol
from zoneinfo import ZoneInfo

DEFAULT_TZ = "Asia/Shanghai"


class Clock(Protocol):
    def now_ms(self) -> int: ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that moves only when told to (tests)."""

    def __init__(self, start_ms: int = 1_780_000_000_000) -> None:
        self._ms = start_ms
        self._lock = threading.Lock()

    def now_ms(self) -> int:
        with self._lock:
            return self._ms

    def advance(self, ms: int) -> None:
        with self._lock:
            self._ms += ms

    def set(self, ms: int) -> None:
        with self._lock:
            self._ms = ms


def campus_date(ms: int, tz: str = DEFAULT_TZ) -> str:
    """The campus calendar day of an epoch-ms instant, as ``YYYY-MM-DD``."""
    return dt.datetime.fromtimestamp(ms / 1000, ZoneInfo(tz)).date().isoformat()


def campus_midnight_ms(day: str, tz: str = DEFAULT_TZ) -> int:
    """The epoch-ms instant a campus day (``YYYY-MM-DD``) begins; ValueError for a bad date."""
    d = dt.date.fromisoformat(day)
    return round(dt.datetime.combine(d, dt.time(), ZoneInfo(tz)).timestamp() * 1000)


def iso(ms: int, tz: str = DEFAULT_TZ) -> str:
    """An epoch-ms instant as an ISO 8601 timestamp in the campus time zone."""
    return dt.datetime.fromtimestamp(ms / 1000, ZoneInfo(tz)).isoformat(timespec="seconds")


class CampusDays:
    """:func:`campus_date` for many instants close together (a batch of journal records): it
    remembers the bounds of the last day it computed and answers from them while it can."""

    def __init__(self, tz: str = DEFAULT_TZ) -> None:
        self.tz = tz
        self._zone = ZoneInfo(tz)
        self._lo, self._hi, self._day = 1, 0, ""

    def __call__(self, ms: int) -> str:
        if self._lo <= ms < self._hi:
            return self._day
        day = dt.datetime.fromtimestamp(ms / 1000, self._zone).date()
        lo = round(dt.datetime.combine(day, dt.time(), self._zone).timestamp() * 1000)
        nxt = day + dt.timedelta(days=1)
        hi = round(dt.datetime.combine(nxt, dt.time(), self._zone).timestamp() * 1000)
        text = day.isoformat()
        # keep the bounds only where they check out (a zone may skip or repeat a midnight)
        if lo <= ms < hi and campus_date(lo, self.tz) == text == campus_date(hi - 1, self.tz):
            self._lo, self._hi, self._day = lo, hi, text
        return text
