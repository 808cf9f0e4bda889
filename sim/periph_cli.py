"""``ykt sim printer|display|pinpad``: start, drive, look at and stop the simulated counter
peripherals (:mod:`sim.periph`).  Each runs as its own process; ``start`` prints where the POS
finds it (``{"device": "/dev/pts/N"}`` or, for a network printer, ``{"url": …}``)."""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import segno

from sim.errors import SimError, SimUsageError
from sim.escpos_stream import render
from sim.harness.procs import pid_alive, recv_line
from sim.spawn import spawn_detached
from sync.cmdline import Run, Sub, command

FONTS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
)


def _info_path(folder: Path, name: str) -> Path:
    return folder / f"{name}.json"


def running(folder: Path, name: str) -> dict[str, Any] | None:
    """The device NAME's record when its process runs, else None."""
    try:
        info: dict[str, Any] = json.loads(_info_path(folder, name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if pid_alive(int(info.get("pid", 0))) else None


def start(kind: str, folder: Path, name: str, net: bool = False, port: int = 0) -> dict[str, Any]:
    if not folder.is_dir():
        raise SimUsageError(f"{folder} is not a directory")
    if running(folder, name):
        raise SimUsageError(f"a simulated device named {name} already runs in {folder}")
    _info_path(folder, name).unlink(missing_ok=True)
    args = [sys.executable, "-m", "sim.periph", kind, "--dir", str(folder), "--name", name]
    if net:
        args += ["--net", "--port", str(port)]
    pid = spawn_detached(args, folder / f"{name}.log")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        info = running(folder, name)
        if info is not None and info.get("pid") == pid:
            return info
        if not pid_alive(pid):
            break
        time.sleep(0.02)  # the process writes NAME.json when its device is there
    log = (folder / f"{name}.log").read_text(encoding="utf-8", errors="replace")[-800:]
    raise SimError(f"the simulated {kind} {name} did not start: {log}")


def control(folder: Path, name: str, req: dict[str, Any]) -> dict[str, Any]:
    info = running(folder, name)
    if info is None:
        raise SimUsageError(f"no simulated device named {name} runs in {folder}")
    try:
        with socket.create_connection(("127.0.0.1", int(info["control"])), timeout=5) as s:
            s.sendall(json.dumps(req).encode() + b"\n")
            raw = recv_line(s)
    except OSError as exc:
        raise SimError(f"simulated device {name}: {exc}") from exc
    answer: dict[str, Any] = json.loads(raw)
    return answer


def stop(folder: Path, name: str) -> bool:
    info = running(folder, name)
    if info is None:
        return False
    pid = int(info["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return True


def printed(folder: Path, name: str) -> bytes:
    try:
        return (folder / f"{name}.escpos").read_bytes()
    except FileNotFoundError:
        return b""


def receipt_png(lines: list[str], qrs: list[str], out: Path) -> None:
    """Draw a receipt as a 58 mm printer prints it (384 dots wide): text, then its QR."""
    from PIL import Image, ImageDraw, ImageFont

    font_path = next((f for f in FONTS if Path(f).exists()), None)
    font: Any = ImageFont.truetype(font_path, 22) if font_path else ImageFont.load_default()
    text_lines = [line for line in lines if not line.startswith("[QR] ")]
    codes = []
    for text in qrs:
        buf = io.BytesIO()
        segno.make(text, error="m", micro=False).save(buf, kind="png", scale=4, border=4)
        buf.seek(0)
        codes.append(Image.open(buf).convert("L"))
    height = 20 + 30 * len(text_lines) + sum(c.height + 10 for c in codes) + 20
    img = Image.new("L", (384, height), 255)
    draw = ImageDraw.Draw(img)
    y = 10
    for line in text_lines:
        draw.text((8, y), line, fill=0, font=font)
        y += 30
    for code in codes:
        img.paste(code, ((384 - code.width) // 2, y))
        y += code.height + 10
    img.save(out)


# -- commands -------------------------------------------------------------------------------
def _print(args: argparse.Namespace, out: dict[str, Any], text: str) -> None:
    print(json.dumps(out, ensure_ascii=False) if args.json else text)


def _start(kind: str) -> Run:
    def run(args: argparse.Namespace) -> int:
        info = start(
            kind, args.dir, args.name, getattr(args, "net", False), getattr(args, "port", 0)
        )
        out: dict[str, Any] = {k: info[k] for k in ("device", "url") if k in info}
        _print(args, out, out.get("device") or out.get("url", ""))
        return 0

    return run


def _stop(args: argparse.Namespace) -> int:
    stopped = stop(args.dir, args.name)
    _print(args, {"stopped": stopped}, "stopped" if stopped else "not running")
    return 0


def printer_show(args: argparse.Namespace) -> int:
    data = printed(args.dir, args.name)
    page = render(data)
    if args.png:
        if not page.receipts:
            raise SimUsageError(f"{args.name} printed nothing yet")
        receipt_png(page.receipts[-1], page.qrs[-1], args.png)
    out = {"bytes": len(data), "receipts": page.receipts, "qrs": page.qrs}
    text = "\n".join("\n".join(r) + "\n" + "-" * 32 for r in page.receipts)
    _print(args, out, text or "(nothing printed)")
    return 0


def printer_fault(args: argparse.Namespace) -> int:
    out: dict[str, Any] = {}
    if args.paper:
        req: dict[str, Any] = {"cmd": "paper", "value": args.paper}
        if args.after_bytes is not None:
            req["after"] = args.after_bytes
        out = control(args.dir, args.name, req)
    if args.cover:
        out = control(args.dir, args.name, {"cmd": "cover", "value": args.cover})
    if args.power:
        out = control(args.dir, args.name, {"cmd": "power", "value": args.power})
    if not out:
        out = control(args.dir, args.name, {"cmd": "status"})
    _print(
        args, out, f"paper {out.get('paper')}, cover {out.get('cover')}, power {out.get('power')}"
    )
    return 0


def display_show(args: argparse.Namespace) -> int:
    if running(args.dir, args.name) is None:
        raise SimUsageError(f"no simulated display named {args.name} runs in {args.dir}")
    lines = json.loads((args.dir / f"{args.name}.screen").read_text(encoding="utf-8"))["lines"]
    _print(args, {"lines": lines}, "\n".join(lines))
    return 0


def pinpad_type(args: argparse.Namespace) -> int:
    if args.noise:
        naks = control(args.dir, args.name, {"cmd": "status"}).get("naks", 0)
        control(args.dir, args.name, {"cmd": "raw", "hex": args.noise})
        deadline = time.monotonic() + 5
        while control(args.dir, args.name, {"cmd": "status"}).get("naks", 0) <= naks:
            if time.monotonic() >= deadline:
                raise SimError(f"PIN pad {args.name}: the POS did not refuse the noise")
            time.sleep(0.05)  # the POS refuses noise once its inter-byte timeout passes
    deadline = time.monotonic() + args.wait
    while True:
        out = control(args.dir, args.name, {"cmd": "type", "keys": args.digits})
        if "error" not in out:
            break
        if not out.get("waiting") or time.monotonic() >= deadline:
            raise SimUsageError(f"PIN pad {args.name}: {out['error']}")
        time.sleep(0.05)  # the POS asks when a sale needs the password
    _print(args, {"typed": len(args.digits)}, f"{len(args.digits)} digits and Enter keyed")
    return 0


def pinpad_noise(args: argparse.Namespace) -> int:
    out = control(args.dir, args.name, {"cmd": "raw", "hex": args.hex})
    _print(args, out, "sent")
    return 0


def add_parsers(cmds: Sub) -> None:
    def group(name: str, text: str) -> Sub:
        return cmds.add_parser(name, help=text, description=text).add_subparsers(
            dest=f"{name}_command", metavar="ACTION", required=True
        )

    def cmd(parent: Sub, name: str, fn: Run, text: str) -> argparse.ArgumentParser:
        c = command(parent, name, fn, text)
        c.add_argument("--dir", type=Path, required=True, help="the devices' folder")
        c.add_argument("--name", required=True, help="the device's name")
        return c

    g = group("printer", "a simulated ESC/POS receipt printer (a pty or a loopback TCP port)")
    c = cmd(g, "start", _start("printer"), "start a printer; print its device (or URL with --net)")
    c.add_argument("--net", action="store_true", help="a network printer on a loopback port")
    c.add_argument("--port", type=int, default=0, help="with --net: the port (default: any)")
    c = cmd(g, "show", printer_show, "what the printer printed (GB18030 text, QR codes)")
    c.add_argument("--png", type=Path, help="draw the last receipt into this PNG")
    c = cmd(g, "fault", printer_fault, "paper out or back, cover open, power off (or the state)")
    c.add_argument("--paper", choices=["out", "ok"])
    c.add_argument(
        "--after-bytes",
        type=int,
        metavar="N",
        help="with --paper out: the paper runs out after N more bytes (mid-receipt)",
    )
    c.add_argument("--cover", choices=["open", "closed"])
    c.add_argument("--power", choices=["on", "off"])
    cmd(g, "stop", _stop, "stop the printer (as if unplugged)")

    g = group("display", "a simulated customer pole display (Epson DM-D commands on a pty)")
    cmd(g, "start", _start("display"), "start a display; print its device")
    cmd(g, "show", display_show, "what the display shows now: {lines}")
    cmd(g, "stop", _stop, "stop the display (as if unplugged)")

    g = group("pinpad", "a simulated PIN pad (STX/ETX/LRC frames on a pty)")
    cmd(g, "start", _start("pinpad"), "start a PIN pad; print its device")
    c = cmd(g, "type", pinpad_type, "key digits and Enter (waits for the POS to ask)")
    c.add_argument("digits", help="the digits, e.g. 013052")
    c.add_argument("--wait", type=float, default=15.0, help="seconds to wait for the prompt")
    c.add_argument("--noise", metavar="HEX", help="send these bytes on the line first")
    c = cmd(g, "noise", pinpad_noise, "send raw bytes on the line (noise)")
    c.add_argument("hex", help="the bytes in hex, e.g. 02ff0399")
    cmd(g, "stop", _stop, "stop the PIN pad (as if unplugged)")
