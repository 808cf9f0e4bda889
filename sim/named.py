"""The simulated devices of one kind that this process opened, by name (``sim://NAME``), so
that the agent's control API finds the reader or camera the agent opened."""

from __future__ import annotations

import re
import threading
from typing import Generic, TypeVar
from urllib.parse import urlsplit

from drivers.errors import DeviceUrlError
from sim.errors import SimUsageError

T = TypeVar("T")

#: a simulated device's name
NAME_PATTERN = re.compile(r"^[\w.-]{1,64}$")


class Named(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind  # "reader", "camera": in the messages
        self._items: dict[str, T] = {}
        self._lock = threading.Lock()

    def name_in(self, url: str) -> str:
        """The NAME of ``sim://NAME`` (a query string may follow it)."""
        parts = urlsplit(url)
        name = parts.netloc or parts.path.lstrip("/")
        if not NAME_PATTERN.match(name):
            raise DeviceUrlError(f"sim:// {self.kind} needs a name: sim://NAME, got {url!r}")
        return name

    def put(self, name: str, item: T) -> T:
        """``item`` is the device named ``name`` from now on (it replaces an earlier one)."""
        with self._lock:
            self._items[name] = item
        return item

    def get(self, name: str) -> T:
        with self._lock:
            try:
                return self._items[name]
            except KeyError:
                raise SimUsageError(
                    f"no simulated {self.kind} named {name!r} in this process"
                ) from None

    def drop(self, name: str, item: T) -> None:
        """A closed device leaves the table (unless another one took its name since)."""
        with self._lock:
            if self._items.get(name) is item:
                del self._items[name]
