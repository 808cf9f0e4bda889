"""The physical state of a simulated card dispenser, shared by the two simulations: the
CRT-591 on a pseudo-terminal (:mod:`sim.dispenser.crt591`, in its own process) and the
in-process ``sim://`` dispenser (:mod:`sim.dispenser.local`).

A hopper of blank MIFARE Classic 1K cards (random UIDs from an injectable seed), one channel
with two stops (the encoder and the mouth), a reject bin.  At most one card is in the channel.
Each operation answers ``None`` (done) or the CRT-591 error code of what went wrong (``"B0"``
not initialised since power-on, ``"10"`` card jam, ``"A0"`` hopper empty, ``"A1"`` reject bin
full, ``"02"`` nothing to move), so the device answers it on the line and the ``sim://``
dispenser turns it into the driver's exception.

Faults: :meth:`Mechanism.arm_jam` makes the next move to the encoder or to the mouth jam; the
card then sticks in the channel (out of the encoder's field) and every command but INIT
answers ``"10"``; INIT frees it to the encoder.  ``arm_jam(None)`` clears an armed fault and a
jam (a technician opened the unit).

The owner attaches the card to the encoder's reader (``on_arrive``/``on_leave``) and keeps the
state (``on_change``: the process writes it to its state file after every change).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from sim.errors import SimUsageError

Stop = Literal["encoder", "mouth"]


def blank_uids(count: int, seed: int | None) -> list[str]:
    """``count`` distinct random 4-byte UIDs (hex), from ``seed`` when given."""
    rng = random.Random(seed)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < count:
        uid = rng.randbytes(4)
        if uid[0] == 0x88:  # a cascade tag, never the first byte of a 4-byte UID
            continue
        text = uid.hex().upper()
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


@dataclass
class State:
    blanks: list[str]  # UIDs of the blanks in the hopper, the next one first
    encoder: str | None = None  # the card at the encoder
    mouth: str | None = None  # the card held at the mouth
    jammed: str | None = None  # the card stuck in the channel
    armed: Stop | None = None  # the next move there jams
    rejected: list[str] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)  # reached the mouth (and not captured)
    taken: list[str] = field(default_factory=list)  # taken from the mouth by a holder
    initialized: bool = False  # INIT since power-on
    low_at: int = 5  # the hopper reads "few" at or below this
    reject_capacity: int = 50

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> State:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


class Mechanism:
    def __init__(
        self,
        state: State,
        on_arrive: Callable[[str], None] = lambda uid: None,
        on_leave: Callable[[str], None] = lambda uid: None,
        on_change: Callable[[State], None] = lambda st: None,
    ) -> None:
        self.state = state
        self.on_arrive = on_arrive
        self.on_leave = on_leave
        self.on_change = on_change
        self.lock = threading.RLock()

    def _changed(self) -> None:
        self.on_change(self.state)

    def _ready(self) -> str | None:
        if not self.state.initialized:
            return "B0"
        if self.state.jammed:
            return "10"
        return None

    # -- what the device reports -----------------------------------------------------------------
    def status(self) -> tuple[str | None, bytes]:
        """(error, ``st0 st1 st2``): card position (0 none, 1 mouth, 2 encoder), hopper (0
        empty, 1 few, 2 enough), reject bin (0 room, 1 full)."""
        with self.lock:
            s = self.state
            error = self._ready()
            st0 = "1" if s.mouth else "2" if s.encoder else "0"
            n = len(s.blanks)
            st1 = "0" if n == 0 else "1" if n <= s.low_at else "2"
            st2 = "1" if len(s.rejected) >= s.reject_capacity else "0"
            return error, (st0 + st1 + st2).encode()

    # -- commands -----------------------------------------------------------------------------
    def init(self, then: Literal["leave", "mouth", "capture"] = "leave") -> str | None:
        """INIT: a jammed card is freed to the encoder; then a card in the channel stays, goes
        to the mouth, or into the reject bin."""
        with self.lock:
            s = self.state
            s.initialized = True
            if s.jammed:
                uid, s.jammed = s.jammed, None
                s.encoder = uid
                self.on_arrive(uid)
            self._changed()
            if then == "mouth" and s.encoder:
                return self.to_mouth()
            if then == "capture":
                return self.capture()
            return None

    def to_encoder(self) -> str | None:
        """A blank from the hopper to the encoder; nothing with a card there already; a card
        held at the mouth is pulled back (as a real unit does: the driver never asks that)."""
        with self.lock:
            s = self.state
            if err := self._ready():
                return err
            if s.encoder:
                return None
            if s.mouth:
                uid, s.mouth = s.mouth, None
                if uid in s.issued:
                    s.issued.remove(uid)
                s.encoder = uid
                self._changed()
                self.on_arrive(uid)
                return None
            if not s.blanks:
                return "A0"
            uid = s.blanks.pop(0)
            if s.armed == "encoder":
                s.armed, s.jammed = None, uid
                self._changed()
                return "10"
            s.encoder = uid
            self._changed()
            self.on_arrive(uid)
            return None

    def to_mouth(self) -> str | None:
        with self.lock:
            s = self.state
            if err := self._ready():
                return err
            if s.mouth and not s.encoder:
                return None
            if not s.encoder:
                return "02"
            uid, s.encoder = s.encoder, None
            self.on_leave(uid)
            if s.armed == "mouth":
                s.armed, s.jammed = None, uid
                self._changed()
                return "10"
            s.mouth = uid
            s.issued.append(uid)
            self._changed()
            return None

    def capture(self) -> str | None:
        with self.lock:
            s = self.state
            if err := self._ready():
                return err
            uid = s.encoder or s.mouth
            if uid is None:
                return None
            if len(s.rejected) >= s.reject_capacity:
                return "A1"
            if s.encoder:
                s.encoder = None
                self.on_leave(uid)
            else:
                s.mouth = None
                if uid in s.issued:
                    s.issued.remove(uid)
            s.rejected.append(uid)
            self._changed()
            return None

    def power_off(self) -> None:
        """The unit loses power: INIT is needed again (the cards stay where they are)."""
        with self.lock:
            self.state.initialized = False
            self._changed()

    # -- what people do ------------------------------------------------------------------------
    def take(self) -> str:
        """The holder takes the card at the mouth: its UID."""
        with self.lock:
            s = self.state
            if s.mouth is None:
                raise SimUsageError("no card waits at the dispenser's mouth")
            uid, s.mouth = s.mouth, None
            s.taken.append(uid)
            self._changed()
            return uid

    def arm_jam(self, where: Stop | None) -> None:
        """The next move to ``where`` jams; None clears an armed fault and a jam (the jammed
        card is freed to the encoder, as INIT would)."""
        with self.lock:
            s = self.state
            s.armed = where
            if where is None and s.jammed:
                uid, s.jammed = s.jammed, None
                s.encoder = uid
                self.on_arrive(uid)
            self._changed()

    def summary(self) -> dict[str, Any]:
        """What ``ykt sim dispenser status`` prints."""
        with self.lock:
            s = self.state
            return {
                "hopper": len(s.blanks),
                "rejected": list(s.rejected),
                "issued": list(s.issued),
                "at_mouth": s.mouth,
                "at_encoder": s.encoder,
                "jammed": s.jammed is not None,
                "jam_armed": s.armed,
                "taken": list(s.taken),
            }
