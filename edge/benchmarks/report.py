"""Text rendering of the benchmark figures (``ykt bench`` without ``--json``)."""

from __future__ import annotations

import json
from typing import Any


def render(name: str, figures: dict[str, Any]) -> str:
    return f"== {name}\n" + json.dumps(figures, indent=2, ensure_ascii=False)


def render_machine(out: dict[str, Any]) -> str:
    return "machine: " + json.dumps(out["machine"], ensure_ascii=False)
