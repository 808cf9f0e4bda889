"""The card-dispenser interface every dispenser implements (the simulated one included).

A self-service kiosk's dispenser holds a hopper of blank cards and moves one card at a time
along its channel: from the hopper to the *encoder* position (where the kiosk's encoder, a
PC/SC contactless reader, reaches it), from there to the *mouth* (held in the bezel for the
holder to take), or into the *reject bin* (a card that must never be handed out).  At most one
card is in the channel.

Every call is bounded in time and the moves are idempotent where the hardware allows: asking
for a position the card is already at moves nothing (in particular :meth:`to_encoder` with a
card at the encoder feeds no second blank), so a kiosk that crashed mid-order may simply ask
again after :meth:`reset` and :meth:`status`.

Errors (:mod:`drivers.errors`): :class:`~drivers.errors.HopperEmpty`,
:class:`~drivers.errors.DispenserJammed` (call :meth:`reset`),
:class:`~drivers.errors.RejectBinFull`, :class:`~drivers.errors.DispenserLineError` (the outcome
of the command is unknown: ask :meth:`status`), any other
:class:`~drivers.errors.DispenserError`, and :class:`~drivers.errors.DeviceUnavailable` when the
port is gone or the device does not answer at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

HopperLevel = Literal["ok", "low", "empty"]
CardPosition = Literal["none", "encoder", "mouth"]


@dataclass(frozen=True)
class DispenserStatus:
    hopper: HopperLevel  # blanks left: enough, few, none
    card_at: CardPosition  # where the one card in the channel is
    jammed: bool  # a card is stuck: reset() before anything else
    reject_bin_full: bool  # capture() would fail
    detail: str  # a short human-readable summary (for logs and the service screen)


@runtime_checkable
class CardDispenser(Protocol):
    def status(self) -> DispenserStatus:
        """Where the card is, the hopper level, a jam, the reject bin.  Moves nothing."""
        ...

    def to_encoder(self) -> None:
        """Take one blank from the hopper to the encoder position.  Idempotent: when a card
        already sits at the encoder nothing moves and no second blank is fed.  A card waiting
        at the mouth is refused (:class:`~drivers.errors.DispenserError`): it is a holder's
        card; it is taken, or :meth:`capture` puts it in the reject bin.
        :class:`~drivers.errors.HopperEmpty` when no blank is left."""
        ...

    def to_mouth(self) -> None:
        """Move the card at the encoder to the mouth, held there for the holder to take.
        Idempotent: with the card already at the mouth nothing moves.  No card in the channel
        is an error (:class:`~drivers.errors.DispenserError`)."""
        ...

    def capture(self) -> None:
        """Move the card at the encoder or the mouth into the reject bin.  Idempotent: with
        no card in the channel nothing moves.  :class:`~drivers.errors.RejectBinFull` when the
        bin cannot take it."""
        ...

    def reset(self) -> None:
        """Recover after power-up or a cleared jam (the device re-initialises; a card in the
        channel is brought to a known position and left there): :meth:`status` then reports
        where a card is.  :class:`~drivers.errors.DispenserJammed` when the jam persists."""
        ...

    def close(self) -> None:
        """Let go of the device (the port); the card stays where it is."""
        ...
