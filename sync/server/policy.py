"""Changing the policy terminals receive (risk limits, channels R7, fee R11, freeze rules R12)."""

from __future__ import annotations

import json
from typing import Any

from sync.card import layout
from sync.server.context import DEFAULT_POLICY, Context, next_version
from sync.server.errors import Invalid

#: The largest value of an integer policy key (fen or seconds); it keeps every computation
#: with it (e.g. a hold's expiry in ms) inside a 64-bit database integer.
MAX_VALUE = 10**12
#: Keys with narrower bounds: what a card's counter record can hold (docs/card-format.md), so a
#: limit the card cannot count to is never set.
BOUNDS = {
    "pin_max_tries": (1, layout.MAX_CARD_TRIES),
    "offline_max_card_fen": (0, layout.MAX_CARD_OFFLINE_FEN),
}


def set_policy(ctx: Context, values: dict[str, Any]) -> dict[str, Any]:
    """Change some policy keys; the others keep their value.  The stored policy is read and
    written in one write transaction, so two changes made at once both stay (each sees the
    other's, never a copy read before it committed)."""
    changes = _checked(values)
    with ctx.db.tx() as tx:
        raw = tx.scalar("SELECT value FROM settings WHERE key = 'policy'")
        stored = dict(json.loads(raw) if raw is not None else {})
        for key, val in changes.items():
            if key == "channels":
                stored["channels"] = {**stored.get("channels", {}), **val}
            else:
                stored[key] = val
        ctx.put_setting(tx, "policy", stored)
        ctx.put_setting(tx, "policy_version", next_version(tx))
    ctx.notifier.notify()
    return ctx.policy()


def _checked(values: dict[str, Any]) -> dict[str, Any]:
    """The changes, each checked against its default's type and bounds."""
    out: dict[str, Any] = {}
    for key, val in values.items():
        if key not in DEFAULT_POLICY:
            raise Invalid(f"unknown policy key {key!r}", "bad_policy")
        default = DEFAULT_POLICY[key]
        if key == "channels":
            if not isinstance(val, dict) or not all(
                k in default and isinstance(v, bool) for k, v in val.items()
            ):
                raise Invalid(
                    f"channels: an object of {sorted(default)} to true/false", "bad_policy"
                )
        elif isinstance(default, bool):
            if not isinstance(val, bool):
                raise Invalid(f"{key} must be true or false", "bad_policy")
        else:
            low, high = BOUNDS.get(key, (0, MAX_VALUE))
            if isinstance(val, bool) or not isinstance(val, int) or not low <= val <= high:
                raise Invalid(f"{key} must be an integer from {low} to {high}", "bad_policy")
        out[key] = val
    return out
