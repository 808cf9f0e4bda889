"""A simulated card inside pcscd: the virtual-ICC side of vsmartcard's vpcd protocol.

vpcd (the pcscd driver ``libifdvpcd.so``) listens on a TCP port per slot; a card is *in the
reader* while a vicc is connected to that port.  Every message in either direction is a
2-byte big-endian length followed by that many bytes.  vpcd sends a one-byte control
message (``00`` power off, ``01`` power on, ``02`` reset, ``04`` get ATR: answered with the
ATR) or a command APDU (answered with the response APDU).

vpcd 0.8 writes the length and the payload in two writes, so with default TCP settings every
APDU waits ~44 ms for a delayed ACK; setting ``TCP_NODELAY`` once and ``TCP_QUICKACK`` before
each receive (Linux resets it) brings an APDU down to ~0.04 ms.

``python -m sim.vicc --port P --image C.img --state S.json`` is the card process behind
``ykt sim card present|tear``: it serves the image until SIGTERM (the card is removed) or a
tear, reconnects when pcscd restarts (the card is still lying on the reader), and writes every
change back to the image file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from sim import cardimage
from sim.errors import SimError
from sim.mifare import Torn

log = logging.getLogger(__name__)

POWER_OFF, POWER_ON, RESET, GET_ATR = 0x00, 0x01, 0x02, 0x04


class Responder(Protocol):
    """What sits in the virtual reader: the simulated MIFARE card, or a scripted test card."""

    atr: bytes

    def power_on(self) -> None: ...

    def apdu(self, cmd: bytes) -> bytes: ...


class Closed(SimError):
    pass


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        except OSError:
            pass
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise Closed("vpcd closed the connection")
        buf += chunk
    return buf


def _send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(struct.pack(">H", len(payload)) + payload)


class VirtualCard:
    """Connects a responder to a vpcd slot and serves it until stopped or torn."""

    def __init__(
        self,
        card: Responder,
        port: int,
        host: str = "127.0.0.1",
        on_inserted: Callable[[], None] | None = None,
    ) -> None:
        self.card = card
        self.host = host
        self.port = port
        self.stop_event = threading.Event()
        self.inserted = threading.Event()  # set once vpcd asked for the ATR (pcscd saw us)
        self.connected_ns = 0  # time.time_ns() of the last connection (benchmarks)
        self.result = ""
        self.on_inserted = on_inserted
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    # -- one connection -------------------------------------------------------------------
    def _serve_connection(self, sock: socket.socket) -> str:
        while not self.stop_event.is_set():
            (n,) = struct.unpack(">H", _recv_exact(sock, 2))
            msg = _recv_exact(sock, n)
            if n == 1:
                ctl = msg[0]
                if ctl == GET_ATR:
                    _send(sock, self.card.atr)
                    if not self.inserted.is_set():
                        self.inserted.set()
                        if self.on_inserted is not None:
                            self.on_inserted()
                elif ctl in (POWER_ON, RESET, POWER_OFF):
                    self.card.power_on()
                continue
            try:
                resp = self.card.apdu(msg)
            except Torn:
                return "torn"
            _send(sock, resp)
        return "stopped"

    def serve(self) -> str:
        """Serve until stopped ("stopped") or torn ("torn"); reconnects while pcscd is away."""
        while not self.stop_event.is_set():
            try:
                sock = socket.create_connection((self.host, self.port), timeout=1.0)
            except OSError:
                self.stop_event.wait(0.05)  # vpcd not listening (pcscd restarting)
                continue
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = sock
            self.connected_ns = time.time_ns()
            self.card.power_on()
            try:
                result = self._serve_connection(sock)
            except (Closed, OSError):
                result = ""
            finally:
                self._sock = None
                try:
                    sock.close()
                except OSError:
                    pass
            if result:
                self.result = result
                return result
            self.inserted.clear()
        self.result = "stopped"
        return "stopped"

    # -- in a thread ------------------------------------------------------------------------
    def start(self) -> VirtualCard:
        self._thread = threading.Thread(target=self.serve, name=f"vicc-{self.port}", daemon=True)
        self._thread.start()
        return self

    def wait_inserted(self, timeout: float = 5.0) -> None:
        if not self.inserted.wait(timeout):
            raise SimError(f"pcscd did not pick up the card on port {self.port} in {timeout}s")

    def leave(self) -> None:
        """Take the card away: close the connection and stop serving (signal-safe)."""
        self.stop_event.set()
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def remove(self) -> None:
        """Take the card away and wait for the serving thread to end."""
        self.leave()
        if self._thread is not None:
            self._thread.join(5)


# -- the card process (ykt sim card present / tear) -------------------------------------------
def _write_state(path: Path, **state: object) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sim.vicc", description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--image", type=Path, required=True)
    ap.add_argument("--state", type=Path, required=True)
    ap.add_argument("--tear-after", type=int)
    ap.add_argument("--tear-mode", default="partial")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    card = cardimage.load(args.image)
    card.on_write = lambda c: cardimage.save(c, args.image)
    if args.tear_after is not None:
        card.tear_after(args.tear_after, args.tear_mode)
    base = {"pid": os.getpid(), "image": str(args.image.resolve()), "port": args.port}
    uid = card.uid.hex().upper()
    vc = VirtualCard(
        card,
        args.port,
        args.host,
        on_inserted=lambda: _write_state(args.state, **base, status="in", uid=uid),
    )
    signal.signal(signal.SIGTERM, lambda *_: vc.leave())
    _write_state(args.state, **base, status="connecting", uid=uid)
    result = vc.serve()
    log.info("card %s left the reader (%s)", uid, result)
    _write_state(args.state, **base, status=result, uid=uid)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
