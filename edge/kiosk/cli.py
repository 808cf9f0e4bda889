"""``ykt kiosk``: run a self-service kiosk (自助补卡机) agent."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from edge.kiosk.agent import KioskAgent, KioskConfig
from edge.kiosk.control import create_control_app
from edge.pos import controltoken
from edge.pos.cli import listen
from sync.errors import ConfigError
from sync.service import serve

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "kiosk",
        help="run a self-service kiosk agent (holder's reader, encoder, card dispenser, "
        "touch screen)",
        description="Run a self-service kiosk.  The first start enrolls the terminal with a "
        "one-time token of role kiosk (ykt admin terminal enroll --role kiosk); later starts "
        "reuse DATA/terminal.json and DATA/terminal.key.  The screen is at "
        "http://HOST:PORT/kiosk (systemd/ykt-kiosk-screen.service shows it full screen).",
    )
    p.add_argument("--server", help="central server URL, e.g. http://127.0.0.1:8700")
    p.add_argument("--enroll", metavar="TOKEN", help="one-time enrollment token (first start)")
    p.add_argument(
        "--data", type=Path, required=True, help="state directory (identity, keys, journal)"
    )
    p.add_argument(
        "--reader",
        default="sim://kiosk",
        help="the holder's card reader: pcsc://NAME or sim://NAME (default sim://kiosk)",
    )
    p.add_argument(
        "--encoder",
        default="sim://encoder",
        help="the PC/SC reader at the dispenser's encoder position: pcsc://NAME or sim://NAME "
        "(default sim://encoder)",
    )
    p.add_argument(
        "--dispenser",
        default="sim://dispenser?encoder=encoder",
        help="the card dispenser: serial:///dev/ttyS0?baud=9600 (CRT-591) or sim://NAME"
        "?encoder=ENC (default sim://dispenser?encoder=encoder)",
    )
    p.add_argument(
        "--camera",
        help="QR source for the app's authentication code (camera:///dev/video0, sim://NAME); "
        "default none: identification by number + ID-card number only",
    )
    p.add_argument(
        "--keystore",
        type=Path,
        help="card keystore file (ykt admin keys export --role kiosk); default: fetched from "
        "the server into DATA/card-keys.json",
    )
    p.add_argument("--control-host", default="127.0.0.1", help="control API address")
    p.add_argument("--control-port", type=int, default=8702, help="control API port (8702)")
    p.add_argument(
        "--idle", type=float, default=60.0, help="seconds without a touch before the screen "
        "goes back to the start and forgets the visit (default 60)"
    )  # fmt: skip
    p.add_argument("--seed", type=int, help="seed for order ids (tests)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.control_port <= 65535:
        raise ConfigError(f"control port {args.control_port} is not a port number")
    if not 1 <= args.idle <= 3600:
        raise ConfigError("--idle: 1 to 3600 seconds")
    cfg = KioskConfig(
        data=args.data,
        server=args.server,
        enroll=args.enroll,
        reader=args.reader,
        encoder=args.encoder,
        dispenser=args.dispenser,
        camera=args.camera,
        keystore=args.keystore,
        control_host=args.control_host,
        control_port=args.control_port,
        idle_s=args.idle,
        seed=args.seed,
    )
    sock = listen(cfg.control_host, cfg.control_port)
    try:
        agent = KioskAgent(cfg)
    except BaseException:
        sock.close()
        raise
    token = controltoken.new_token()
    controltoken.publish(cfg.data, cfg.control_port, token)
    agent.start()
    base = f"http://{cfg.control_host}:{cfg.control_port}"

    def banner() -> str:
        return (
            f"ykt kiosk {agent.ident.terminal_id} ({agent.ident.name}) ready; reader "
            f"{cfg.reader}; encoder {cfg.encoder}; dispenser {cfg.dispenser}; screen {base}/kiosk"
        )

    try:
        serve(
            create_control_app(agent, token),
            cfg.control_host,
            cfg.control_port,
            banner=banner,
            alive=agent.alive,
            sock=sock,
        )
    finally:
        agent.stop()
        controltoken.withdraw(cfg.control_port, token)
    return 0
