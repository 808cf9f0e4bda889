"""Devices from providers outside the terminal (the simulator's ``sim://``) may add routes to
an agent's control API; this module is the terminal's side of that seam.

An agent opens its devices by URL (:func:`drivers.registry.open_device`).  When a device's
scheme comes from a provider (an entry point of :data:`drivers.registry.GROUP`) that also has
``control_router(kind, url, host)``, the agent mounts the router it returns: this is how
``POST /control/sim/card`` exists on an agent with a ``sim://`` reader and on no other.  The
provider sees the terminal only through :class:`TerminalHost`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from drivers.registry import provider
from sync.card.keys import Keystore
from sync.records import CardRow

if TYPE_CHECKING:  # only named here: the engine imports this module, the web app stays out
    from fastapi import APIRouter


class TerminalHost(Protocol):
    """What a terminal shows a device provider."""

    @property
    def data_dir(self) -> Path:
        """The terminal's data directory (a provider keeps its own files under it)."""
        ...

    def card_record(self, card_no: str) -> CardRow | None:
        """The server's record of a card as the terminal caches it (fetched when missing and
        the server is reachable), or None."""
        ...

    def card_keys(self) -> Keystore:
        """The terminal's card keys (:class:`sync.errors.CardRefused` when it has none)."""
        ...


def control_routers(devices: dict[str, str | None], host: TerminalHost) -> list[APIRouter]:
    """The routers the providers of ``devices`` (kind -> URL) add to the control API."""
    out = []
    for kind, url in devices.items():
        if not url:
            continue
        found = provider(url)
        make = getattr(found, "control_router", None)
        if make is not None:
            out.append(make(kind, url, host))
    return out
