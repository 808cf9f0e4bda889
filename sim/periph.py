"""Simulated counter peripherals as separate processes, each under its real lower layer: a
receipt printer on a pseudo-terminal or a loopback TCP port (a network printer), a pole display
and a PIN pad on pseudo-terminals.  ``python -m sim.periph KIND --dir D --name NAME``; the
``ykt sim printer|display|pinpad`` commands (:mod:`sim.periph_cli`) start, drive and stop them.

Files in D:

================== ==========================================================================
``NAME.json``      the running device: kind, pid, ``device`` (the pty) or ``url``, control port
``NAME.escpos``    printer: the ESC/POS bytes it printed, appended unchanged
``NAME.screen``    display: what it shows now (JSON ``{"lines": [...]}``)
``NAME.pad``       PIN pad: its prompt and frame counts (JSON; never the digits)
``NAME.log``       the process's own log
================== ==========================================================================

Each device answers one JSON line per connection on its control port (loopback): ``paper``,
``cover``, ``power`` (printer faults), ``type`` (PIN pad keys), ``raw`` (bytes on the line, for
noise), ``status``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import selectors
import signal
import socket
import sys
import tty
from pathlib import Path
from typing import Any

from drivers.display.dmd import CLR
from drivers.pinpad.framed import ACK, NAK, FrameReader, frame
from sim.escpos_stream import PrinterModel, Tokenizer
from sim.harness.procs import recv_line

log = logging.getLogger(__name__)


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


class DisplayModel:
    """A 2x20 pole display with the DM-D commands :mod:`drivers.display.dmd` sends."""

    def __init__(self, columns: int = 20, rows: int = 2) -> None:
        self.columns, self.rows = columns, rows
        self.tok = Tokenizer()
        self.clear()
        self.x = self.y = 0
        self._pending = b""

    def clear(self) -> None:
        self.cells = [[" "] * self.columns for _ in range(self.rows)]
        self.x = self.y = 0

    def feed(self, data: bytes) -> None:
        buf = self._pending + data
        i = 0
        while i < len(buf):
            b = buf[i]
            if b == 0x1B:  # ESC @ (and ESC x n: one argument)
                if i + 1 >= len(buf):
                    break
                if buf[i + 1] == 0x40:
                    self.clear()
                    i += 2
                    continue
                i += 3
                continue
            if b == 0x1F:  # US $ x y, US MDn, US x n
                if i + 1 >= len(buf):
                    break
                c = buf[i + 1]
                if c == 0x24:
                    if i + 3 >= len(buf):
                        break
                    self.x = min(max(buf[i + 2], 1), self.columns) - 1
                    self.y = min(max(buf[i + 3], 1), self.rows) - 1
                    i += 4
                elif c in (0x01, 0x02, 0x03, 0x0A, 0x0D, 0x42):
                    i += 2
                else:
                    i += 3
                continue
            if b == CLR[0]:
                self.clear()
            elif b == 0x18:  # CAN: clear the cursor line
                self.cells[self.y] = [" "] * self.columns
                self.x = 0
            elif b == 0x0D:
                self.x = 0
            elif b == 0x0A:
                self.y = min(self.y + 1, self.rows - 1)
            elif b == 0x0B:
                self.x = self.y = 0
            elif 0x20 <= b < 0x7F and self.x < self.columns:
                self.cells[self.y][self.x] = chr(b)
                self.x += 1
            i += 1
        self._pending = buf[i:]

    @property
    def lines(self) -> list[str]:
        return ["".join(row).rstrip() for row in self.cells]


class Device:
    def __init__(self, kind: str, folder: Path, name: str) -> None:
        self.kind, self.dir, self.name = kind, folder, name
        self.sel = selectors.DefaultSelector()
        self.printer = PrinterModel()
        self.display = DisplayModel()
        self.frames = FrameReader()
        self.pad: dict[str, Any] = {"prompt": None, "acks": 0, "naks": 0, "sent": 0}
        self.master: int | None = None
        self.conns: list[socket.socket] = []

    # -- the line -------------------------------------------------------------------------
    def open_pty(self) -> str:
        master, slave = os.openpty()
        tty.setraw(slave)
        self._slave = slave  # kept open: reads on the master never see a hang-up
        os.set_blocking(master, False)
        self.master = master
        self.sel.register(master, selectors.EVENT_READ, self.on_line)
        return os.ttyname(slave)

    def listen_net(self, port: int) -> str:
        srv = socket.create_server(("127.0.0.1", port))
        srv.setblocking(False)
        self.sel.register(srv, selectors.EVENT_READ, self.on_accept)
        return f"escpos+net://127.0.0.1:{srv.getsockname()[1]}"

    def on_accept(self, srv: socket.socket) -> None:
        conn, _ = srv.accept()
        conn.setblocking(False)
        self.printer.tok = Tokenizer()  # a new job stream
        self.conns.append(conn)
        self.sel.register(conn, selectors.EVENT_READ, self.on_conn)

    def on_conn(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(65536)
        except OSError:
            data = b""
        if not data:
            self.sel.unregister(conn)
            self.conns.remove(conn)
            conn.close()
            return
        answer = self.received(data)
        if answer:
            try:
                conn.sendall(answer)
            except OSError:
                pass

    def on_line(self, fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            return
        answer = self.received(data)
        if answer:
            self.send_line(answer)

    def send_line(self, data: bytes) -> None:
        if self.master is not None:
            os.set_blocking(self.master, True)
            try:
                os.write(self.master, data)
            finally:
                os.set_blocking(self.master, False)
        for conn in self.conns:
            conn.sendall(data)

    def received(self, data: bytes) -> bytes:
        if self.kind == "printer":
            printed, answers = self.printer.receive(data)
            if printed:
                with open(self.dir / f"{self.name}.escpos", "ab") as f:
                    f.write(printed)
            return answers
        if self.kind == "display":
            self.display.feed(data)
            _write_json(self.dir / f"{self.name}.screen", {"lines": self.display.lines})
            return b""
        out = bytearray()
        for byte in data:  # the POS's ACK/NAK of our frames
            if byte == ACK:
                self.pad["acks"] += 1
            elif byte == NAK:
                self.pad["naks"] += 1
        for good, body in self.frames.feed(bytes(b for b in data if b not in (ACK, NAK))):
            if not good:
                out.append(NAK)
                continue
            out.append(ACK)
            if body[:1] == b"P":
                self.pad["prompt"] = body[1:].decode("ascii", errors="replace")
            elif body[:1] == b"I":
                self.pad["prompt"] = None
        self.save_pad()
        return bytes(out)

    def save_pad(self) -> None:
        _write_json(self.dir / f"{self.name}.pad", {**self.pad, "noise": self.frames.noise})

    # -- control --------------------------------------------------------------------------
    def listen_control(self) -> int:
        srv = socket.create_server(("127.0.0.1", 0))
        srv.setblocking(False)
        self.sel.register(srv, selectors.EVENT_READ, self.on_control)
        return int(srv.getsockname()[1])

    def on_control(self, srv: socket.socket) -> None:
        conn, _ = srv.accept()
        conn.settimeout(5)
        with conn:
            raw = recv_line(conn)
            try:
                answer = self.command(json.loads(raw))
            except (ValueError, KeyError, TypeError) as exc:
                answer = {"error": str(exc)}
            conn.sendall(json.dumps(answer).encode() + b"\n")

    def command(self, req: dict[str, Any]) -> dict[str, Any]:
        cmd = req["cmd"]
        p = self.printer
        if cmd == "paper":
            after = req.get("after")
            if req["value"] == "out" and after is not None:
                p.paper_after = int(after)
            else:
                p.paper, p.paper_after = req["value"] == "ok", None
        elif cmd == "cover":
            p.cover_open = req["value"] == "open"
        elif cmd == "power":
            p.power = req["value"] == "on"
        elif cmd == "type":
            if self.pad["prompt"] is None:
                return {"error": "the PIN pad is not asking for a password", "waiting": True}
            keys = str(req["keys"])
            if not keys.isdigit():
                raise ValueError("keys are digits")
            self.send_line(frame("K", keys))
            self.pad["sent"] += 1
            self.pad["prompt"] = None  # Enter ends the entry
            self.save_pad()
        elif cmd == "cancel":
            self.send_line(frame("X"))
        elif cmd == "raw":
            self.send_line(bytes.fromhex(req["hex"]))
        elif cmd != "status":
            raise ValueError(f"unknown command {cmd}")
        return {"ok": True, **self.state()}

    def state(self) -> dict[str, Any]:
        if self.kind == "printer":
            p = self.printer
            return {
                "paper": "ok" if p.paper else "out",
                "cover": "open" if p.cover_open else "closed",
                "power": "on" if p.power else "off",
                "received": p.received,
                "dropped": p.dropped,
            }
        if self.kind == "display":
            return {"lines": self.display.lines}
        return {"prompt": self.pad["prompt"], "noise": self.frames.noise, "naks": self.pad["naks"]}

    def run(self) -> None:
        while True:
            for key, _ in self.sel.select():
                key.data(key.fileobj)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m sim.periph")
    ap.add_argument("kind", choices=["printer", "display", "pinpad"])
    ap.add_argument("--dir", type=Path, required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--net", action="store_true")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    dev = Device(args.kind, args.dir, args.name)
    info: dict[str, Any] = {"kind": args.kind, "pid": os.getpid()}
    if args.net:
        info["url"] = dev.listen_net(args.port)
    else:
        info["device"] = dev.open_pty()
    info["control"] = dev.listen_control()
    if args.kind == "display":
        _write_json(args.dir / f"{args.name}.screen", {"lines": dev.display.lines})
    if args.kind == "pinpad":
        dev.save_pad()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    _write_json(args.dir / f"{args.name}.json", info)
    log.info("simulated %s %s ready: %s", args.kind, args.name, info)
    dev.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
