"""The device side of the CRT-591 protocol (:mod:`drivers.dispenser.crt591`) over a simulated
:class:`~sim.dispenser.mechanism.Mechanism`: what a real unit answers on its serial line.

:meth:`Crt591Device.feed` takes the bytes the host sent and writes the answers through
``write``: ``ACK`` for every well-formed command addressed to this unit, ``NAK`` for a damaged
one (wrong BCC, no ETX, cut short: see :meth:`Crt591Device.tick`), then the command's answer
(``P`` with ``st0 st1 st2``, or ``N`` with ``e1 e0``).  The host's ``NAK`` to an answer makes
the unit send it again (three times at most), ``EOT`` clears the line and is answered with
``EOT``.  Frames for another address are ignored, as on a shared RS-485 line.

Commands: INIT ``30`` (PM ``30`` card to the gate, ``31`` into the reject bin, ``33`` left
where it is; ``34``/``35``/``37`` the same), STATUS ``31``/``30``, MOVE ``32`` (PM ``30`` to
the gate, ``31``/``32`` to the read position = the encoder, ``33`` into the reject bin); others
answer ``00`` (undefined command), an unknown PM ``01``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal

from drivers.dispenser import crt591_frames as f
from sim.dispenser.mechanism import Mechanism

log = logging.getLogger(__name__)

FIRMWARE = b"CRT-591-M001 (ykt sim)"
GAP = 0.3  # a frame whose bytes stop this long is damaged
RESENDS = 3
#: INIT's PM: what happens to a card in the channel (34, 35, 37: the same, counting retracts)
_INIT_THEN: dict[int, Literal["leave", "mouth", "capture"]] = {
    0x30: "mouth",
    0x34: "mouth",
    0x31: "capture",
    0x35: "capture",
    0x33: "leave",
    0x37: "leave",
}


class Crt591Device:
    def __init__(
        self,
        mech: Mechanism,
        write: Callable[[bytes], None],
        addr: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.mech = mech
        self.addr = addr
        self.clock = clock
        self._write_raw = write
        self.parser = f.FrameParser()
        self._last_answer = b""
        self._resent = 0
        self._last_byte = 0.0
        self.commands = 0

    def _write(self, data: bytes) -> None:
        log.debug("dispenser >>> %s", data.hex())
        self._write_raw(data)

    def tick(self) -> None:
        """Call when no byte came for a while: a frame begun and not ended is damaged."""
        if self.parser.pending() and self.clock() - self._last_byte >= GAP:
            self.parser.cut_short()
            log.warning("dispenser: a short frame from the host: NAK")
            self._write(bytes([f.NAK]))

    def feed(self, data: bytes) -> None:
        if data:
            log.debug("dispenser <<< %s", data.hex())
            self._last_byte = self.clock()
        for ev in self.parser.feed(data):
            if ev.kind == "control":
                self._control(ev.byte)
            elif ev.kind == "bad":
                log.warning("dispenser: a damaged frame from the host (%s): NAK", ev.reason)
                self._write(bytes([f.NAK]))
            elif ev.kind == "garbage":
                log.warning("dispenser: garbage from the host: %s", ev.raw.hex())
            elif ev.frame is not None:
                self._frame(ev.frame)

    def _control(self, byte: int) -> None:
        if byte == f.ACK:
            self._last_answer = b""
        elif byte == f.NAK and self._last_answer and self._resent < RESENDS:
            self._resent += 1
            self._write(self._last_answer)
        elif byte == f.EOT:
            self.parser.reset()
            self._last_answer = b""
            self._write(bytes([f.EOT]))

    def _frame(self, fr: f.Frame) -> None:
        if fr.addr != self.addr:
            return  # another unit's
        if fr.head != f.COMMAND:
            log.warning("dispenser: the host sent an answer frame: ignored")
            return
        self._write(bytes([f.ACK]))
        self.commands += 1
        answer = self._execute(fr.cm, fr.pm)
        self._last_answer, self._resent = answer, 0
        self._write(answer)

    def _answer(self, cm: int, pm: int, error: str | None, data: bytes = b"") -> bytes:
        if error:
            return f.negative(cm, pm, error, addr=self.addr)
        _err, st = self.mech.status()
        return f.positive(cm, pm, st, data, addr=self.addr)

    def _execute(self, cm: int, pm: int) -> bytes:
        m = self.mech
        if cm == f.CM_INIT:
            then = _INIT_THEN.get(pm)
            if then is None:
                return self._answer(cm, pm, "01")
            return self._answer(cm, pm, m.init(then), FIRMWARE)
        if cm == f.CM_STATUS:
            if pm != f.STATUS_CARD:
                return self._answer(cm, pm, "01")
            error, _st = m.status()
            return self._answer(cm, pm, error)
        if cm == f.CM_MOVE:
            moves = {
                f.MOVE_GATE: m.to_mouth,
                f.MOVE_IC: m.to_encoder,
                f.MOVE_RF: m.to_encoder,
                f.MOVE_REJECT: m.capture,
            }
            move = moves.get(pm)
            if move is None:
                return self._answer(cm, pm, "01")
            return self._answer(cm, pm, move())
        return self._answer(cm, pm, "00")
