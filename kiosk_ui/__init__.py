"""Local web screens served by the agents and shown by Chromium in kiosk mode: the POS cashier
screen and customer screen (and, later, the kiosk)."""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def page(name: str) -> str:
    """The text of a screen in ``kiosk_ui/static``."""
    return (files("kiosk_ui") / "static" / name).read_text(encoding="utf-8")
