"""The simulated CRT-591 as a process of its own: ``python -m sim.dispenser.process --dir R
--name NAME --blanks N --encoder-slot K``, started detached by ``ykt sim dispenser start``.

- It speaks the CRT-591 protocol (:mod:`sim.dispenser.crt591`) on the master side of a
  pseudo-terminal; the kiosk opens the slave, ``/dev/pts/…``, with pyserial
  (``serial:///dev/pts/…``).  The process keeps the slave open itself, so a kiosk that dies
  (SIGKILL) and comes back finds the same line and the same unit.
- A blank moved to the encoder is a simulated MIFARE Classic 1K (random UID, transport keys)
  put on vpcd slot K of the private pcscd in R (``ykt sim reader start --dir R``), served from
  this process (:class:`sim.vicc.VirtualCard`); the move is answered once pcscd has the card.
  Moved to the mouth or the reject bin, it leaves the slot.  Card images live in
  ``R/dispenser-NAME/`` (every write the kiosk makes lands there).
- The physical state is ``R/dispenser-NAME.json`` (replaced atomically at every change;
  also pid, device, socket).  ``R/dispenser-NAME.sock`` takes one JSON request a connection
  (``{"op": "summary" | "take" | "fault" | "stop", …}``): :func:`request` is the client.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import signal
import socket
import threading
import time
import tty
from pathlib import Path
from typing import Any

from sim import cardimage
from sim.dispenser.crt591 import Crt591Device
from sim.dispenser.mechanism import Mechanism, State, Stop, blank_uids
from sim.errors import SimError, SimUsageError
from sim.harness import pcscd
from sim.harness.procs import recv_line
from sim.vicc import VirtualCard

log = logging.getLogger(__name__)


def paths(where: Path, name: str) -> tuple[Path, Path, Path]:
    """(state file, control socket, card image folder) of dispenser ``name`` in ``where``."""
    d = Path(os.path.abspath(where))
    return d / f"dispenser-{name}.json", d / f"dispenser-{name}.sock", d / f"dispenser-{name}"


def read_state(where: Path, name: str) -> dict[str, Any]:
    state_path = paths(where, name)[0]
    try:
        return dict(json.loads(state_path.read_text()))
    except FileNotFoundError:
        raise SimUsageError(
            f"no simulated dispenser {name!r} in {where} (ykt sim dispenser start …)"
        ) from None
    except ValueError as exc:
        raise SimError(f"{state_path} is damaged: {exc}") from exc


def request(where: Path, name: str, op: str, timeout: float = 10.0, **args: Any) -> dict[str, Any]:
    """Send one request to the running dispenser process; its answer."""
    sock_path = paths(where, name)[1]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(sock_path))
        except OSError as exc:
            raise SimUsageError(
                f"the simulated dispenser {name!r} in {where} is not running"
            ) from exc
        s.sendall(json.dumps({"op": op, **args}).encode() + b"\n")
        data = recv_line(s, 65536)
    try:
        answer = dict(json.loads(data))
    except ValueError as exc:
        raise SimError(f"the simulated dispenser {name!r} answered {data[:200]!r}") from exc
    if not answer.get("ok"):
        raise SimUsageError(str(answer.get("error", "refused")))
    return answer


class Encoder:
    """The encoder's reader: vpcd slot K of the private pcscd in R, with the card on it served
    from this process.  A move to the encoder is answered once pcscd shows the card to its
    clients (this process is a PC/SC client of that pcscd: ``PCSCLITE_CSOCK_NAME`` is set at
    its start)."""

    def __init__(self, readers: pcscd.VirtualReaders, slot: int, images: Path) -> None:
        info = readers.slot(slot)
        self.port = int(info["port"])
        self.reader = str(info["name"])
        self.socket = Path(readers.state()["socket"])
        self.images = images
        self.card: VirtualCard | None = None
        self._ctx: Any = None

    def image(self, uid: str) -> Path:
        path = self.images / f"{uid}.img"
        if not path.exists():
            cardimage.save(cardimage.new_card(bytes.fromhex(uid)), path)
        return path

    def _wait_pcscd(self, present: bool, timeout: float) -> bool:
        """Wait until pcscd shows the slot with (``present``) or without a card."""
        from smartcard import scard as s

        if self._ctx is None:
            rv, ctx = s.SCardEstablishContext(s.SCARD_SCOPE_USER)
            if rv:
                return False
            self._ctx = ctx
        deadline = time.monotonic() + timeout
        state = s.SCARD_STATE_UNAWARE
        while (left := deadline - time.monotonic()) > 0:
            rv, got = s.SCardGetStatusChange(
                self._ctx, int(left * 1000) + 1, [(self.reader, state)]
            )
            if rv == s.SCARD_E_TIMEOUT:
                return False
            if rv:  # pcscd went away or restarted: a new context next time
                self._ctx = None
                return False
            state = got[0][1] & ~s.SCARD_STATE_CHANGED
            if present and state & s.SCARD_STATE_PRESENT and not state & s.SCARD_STATE_MUTE:
                return True
            if not present and state & s.SCARD_STATE_EMPTY:
                return True
        return False

    def arrive(self, uid: str) -> None:
        path = self.image(uid)
        if self.card is not None:
            self.leave(uid)
        # the last card must be gone for pcscd, or it sees neither the removal nor this arrival
        self._wait_pcscd(False, 2.0)
        emu = cardimage.load(path)
        emu.on_write = lambda c: cardimage.save(c, path)
        self.card = VirtualCard(emu, self.port).start()
        if not self._wait_pcscd(True, 5.0):
            log.warning("pcscd does not show card %s on %s (is it running?)", uid, self.reader)

    def leave(self, uid: str) -> None:
        if self.card is not None:
            self.card.remove()
            self.card = None


class DispenserProcess:
    def __init__(self, args: argparse.Namespace) -> None:
        self.dir = Path(os.path.abspath(args.dir))
        self.name = args.name
        self.state_path, self.sock_path, self.images = paths(self.dir, self.name)
        self.images.mkdir(parents=True, exist_ok=True)
        self.encoder = Encoder(pcscd.VirtualReaders(self.dir), args.encoder_slot, self.images)
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.device = os.ttyname(self.slave)
        state = State(
            blank_uids(args.blanks, args.seed),
            low_at=args.low_at,
            reject_capacity=args.reject_capacity,
        )
        self.meta = {
            "pid": os.getpid(),
            "device": self.device,
            "socket": str(self.sock_path),
            "encoder_slot": args.encoder_slot,
            "encoder_reader": self.encoder.reader,
            "running": True,
        }
        self.mech = Mechanism(state, self.encoder.arrive, self.encoder.leave, self._save)
        self.unit = Crt591Device(self.mech, self._write)
        self.stopping = threading.Event()

    def _save(self, state: State) -> None:
        """Replace the state file atomically (no fsync: a simulation survives its own crash,
        not the machine's)."""
        tmp = self.state_path.with_name(f".{self.state_path.name}.tmp")
        tmp.write_text(json.dumps({**self.meta, **state.to_json()}, indent=1))
        os.replace(tmp, self.state_path)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.master, view)
            view = view[n:]

    # -- the control socket ---------------------------------------------------------------------
    def _serve_control(self, server: socket.socket) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.settimeout(5.0)
                    data = b""
                    while not data.endswith(b"\n"):
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    answer = self._control(json.loads(data))
                except (ValueError, OSError, SimError) as exc:
                    answer = {"ok": False, "error": str(exc)}
                try:
                    conn.sendall(json.dumps(answer).encode() + b"\n")
                except OSError:
                    pass

    def _control(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "summary":
            return {"ok": True, **self.mech.summary()}
        if op == "take":
            uid = self.mech.take()
            return {"ok": True, "uid": uid, "image": self.encoder.image(uid).read_text()}
        if op == "fault":
            where = req.get("jam_at")
            if where not in ("encoder", "mouth", None):
                raise SimUsageError("jam_at is encoder, mouth or null")
            jam: Stop | None = where
            self.mech.arm_jam(jam)
            return {"ok": True, **self.mech.summary()}
        if op == "stop":
            self.stopping.set()
            return {"ok": True}
        raise SimUsageError(f"unknown request {op!r}")

    # -- the line -----------------------------------------------------------------------------------
    def run(self) -> int:
        self.sock_path.unlink(missing_ok=True)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(self.sock_path))
        server.listen(8)
        threading.Thread(target=self._serve_control, args=(server,), daemon=True).start()
        signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())
        self._save(self.mech.state)
        log.info(
            "simulated CRT-591 %s on %s, encoder %s", self.name, self.device, self.encoder.reader
        )
        try:
            while not self.stopping.is_set():
                ready, _, _ = select.select([self.master], [], [], 0.1)
                if ready:
                    self.unit.feed(os.read(self.master, 4096))
                else:
                    self.unit.tick()
        finally:
            server.close()
            self.sock_path.unlink(missing_ok=True)
            with self.mech.lock:
                self.encoder.leave("")
                self.meta["running"] = False
                self._save(self.mech.state)
        return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sim.dispenser.process", description=__doc__)
    ap.add_argument("--dir", type=Path, required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--blanks", type=int, default=20)
    ap.add_argument("--encoder-slot", type=int, required=True)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--low-at", type=int, default=5)
    ap.add_argument("--reject-capacity", type=int, default=50)
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    readers = pcscd.VirtualReaders(args.dir)
    os.environ["PCSCLITE_CSOCK_NAME"] = str(readers.socket_path)  # before libpcsclite loads
    logging.basicConfig(
        level=getattr(logging, args.log_level), format="%(asctime)s %(name)s: %(message)s"
    )
    return DispenserProcess(args).run()


if __name__ == "__main__":
    raise SystemExit(main())
