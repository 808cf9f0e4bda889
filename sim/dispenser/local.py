"""An in-process simulated card dispenser (``sim://NAME``) implementing
:class:`drivers.dispenser.base.CardDispenser` over the same
:class:`~sim.dispenser.mechanism.Mechanism` as the CRT-591 on a pseudo-terminal.

``sim://NAME?encoder=ENC&blanks=20&seed=7&low=5&reject=50``: a blank moved to the encoder is
put on the in-process simulated reader ``sim://ENC`` (:mod:`sim.reader`), where it stays until
it is moved on (the kiosk opens that reader as its encoder).  Without ``encoder`` the cards are
only counted.  The state lives in this process: for a dispenser that outlives its kiosk use the
pseudo-terminal one (``ykt sim dispenser start``).  Dispensers are kept by name, so the agent's
control API (``/control/sim/dispenser…``, :mod:`sim.devices`) finds the one the agent opened.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

from drivers.dispenser.base import CardPosition, DispenserStatus, HopperLevel
from drivers.dispenser.crt591 import error_for
from drivers.errors import DeviceUrlError, DispenserError, DispenserJammed
from sim import cardimage
from sim import reader as sim_reader
from sim.dispenser.mechanism import Mechanism, State, blank_uids
from sim.errors import SimUsageError
from sim.mifare import MifareClassic1K
from sim.named import Named

log = logging.getLogger(__name__)

_DISPENSERS: Named[SimDispenser] = Named("dispenser")
_OPTIONS = {"encoder", "blanks", "seed", "low", "reject"}
_POSITION: dict[int, CardPosition] = {0x30: "none", 0x31: "mouth", 0x32: "encoder"}
_HOPPER: dict[int, HopperLevel] = {0x30: "empty", 0x31: "low", 0x32: "ok"}


class SimDispenser:
    def __init__(
        self,
        name: str,
        blanks: int = 20,
        encoder: str | None = None,
        seed: int | None = None,
        low_at: int = 5,
        reject_capacity: int = 50,
    ) -> None:
        self.name = name
        self.encoder = encoder
        self.cards: dict[str, MifareClassic1K] = {}
        state = State(blank_uids(blanks, seed), low_at=low_at, reject_capacity=reject_capacity)
        self.mech = Mechanism(state, self._arrive, self._leave)
        self._lock = threading.Lock()
        self._closed = False

    # -- the encoder's reader ----------------------------------------------------------------------
    def card(self, uid: str) -> MifareClassic1K:
        if uid not in self.cards:
            self.cards[uid] = cardimage.new_card(bytes.fromhex(uid))
        return self.cards[uid]

    def _reader(self) -> sim_reader.SimReader | None:
        if self.encoder is None:
            return None
        try:
            return sim_reader.get(self.encoder)
        except SimUsageError:
            log.warning(
                "%s: no simulated reader %r is open for the encoder", self.name, self.encoder
            )
            return None

    def _arrive(self, uid: str) -> None:
        reader = self._reader()
        if reader is not None:
            reader.present(self.card(uid), stays=True)

    def _leave(self, uid: str) -> None:
        reader = self._reader()
        if reader is not None:
            reader.remove()

    # -- CardDispenser -----------------------------------------------------------------------------
    def _do(self, move: Callable[[], str | None], what: str) -> None:
        """Run a move; after ``B0`` (powered up, not initialised) initialise and run it again,
        as the driver does."""
        error = move()
        if error == "B0":
            self.mech.init()
            error = move()
        if error:
            raise error_for(error, f"{self.name}: {what}")

    def _status(self) -> DispenserStatus:
        if self._closed:
            raise DispenserError(f"{self.name}: closed")
        error, st = self.mech.status()
        if error == "B0":
            self.mech.init()
            error, st = self.mech.status()
        card = _POSITION[st[0]]
        hopper = _HOPPER[st[1]]
        full = st[2] == ord("1")
        if error == "10":
            return DispenserStatus(hopper, "encoder", True, full, "card jam (10): reset()")
        words = [f"card at the {card}" if card != "none" else "no card in the channel"]
        words.append(f"hopper {hopper} ({len(self.mech.state.blanks)} blanks)")
        if full:
            words.append("reject bin full")
        return DispenserStatus(hopper, card, False, full, "; ".join(words))

    def status(self) -> DispenserStatus:
        with self._lock:
            return self._status()

    def to_encoder(self) -> None:
        """As :meth:`drivers.dispenser.crt591.Crt591Dispenser.to_encoder`: idempotent, no
        second blank with a card at the encoder; a card at the mouth is refused."""
        with self._lock:
            st = self._status()
            if st.jammed:
                raise DispenserJammed(f"{self.name}: a card is jammed: reset() first", "10")
            if st.card_at == "encoder":
                return
            if st.card_at == "mouth":
                raise DispenserError(
                    f"{self.name}: a card waits at the mouth: it is taken, or capture() it, "
                    "before a blank is fed"
                )
            self._do(self.mech.to_encoder, "feed a blank to the encoder")

    def to_mouth(self) -> None:
        with self._lock:
            st = self._status()
            if st.jammed:
                raise DispenserJammed(f"{self.name}: a card is jammed: reset() first", "10")
            if st.card_at == "mouth":
                return
            if st.card_at == "none":
                raise DispenserError(f"{self.name}: no card at the encoder to hand out")
            self._do(self.mech.to_mouth, "issue the card to the mouth")

    def capture(self) -> None:
        with self._lock:
            st = self._status()
            if st.jammed:
                raise DispenserJammed(f"{self.name}: a card is jammed: reset() first", "10")
            if st.card_at == "none":
                return
            self._do(self.mech.capture, "capture the card into the reject bin")

    def reset(self) -> None:
        with self._lock:
            self._do(self.mech.init, "reset")

    def close(self) -> None:
        self._closed = True
        _DISPENSERS.drop(self.name, self)

    # -- what people do (the control API, tests) ---------------------------------------------------
    def take(self) -> MifareClassic1K:
        """The holder takes the card at the mouth."""
        return self.card(self.mech.take())


def open_url(url: str) -> SimDispenser:
    name = _DISPENSERS.name_in(url)
    q = {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}
    unknown = set(q) - _OPTIONS
    if unknown:
        raise DeviceUrlError(f"{url}: unknown option(s) {', '.join(sorted(unknown))}")
    try:
        seed = int(q["seed"]) if "seed" in q else None
        blanks, low, reject = (
            int(q.get(k, d)) for k, d in (("blanks", "20"), ("low", "5"), ("reject", "50"))
        )
    except ValueError:
        raise DeviceUrlError(f"{url}: blanks, seed, low and reject are numbers") from None
    if not 0 <= blanks <= 10000:
        raise DeviceUrlError(f"{url}: blanks is 0-10000")
    disp = SimDispenser(name, blanks, q.get("encoder"), seed, low, reject)
    return _DISPENSERS.put(name, disp)


def get(name: str) -> SimDispenser:
    return _DISPENSERS.get(name)
