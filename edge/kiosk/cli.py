"""``ykt kiosk``: run a self-service kiosk (自助补卡机) agent."""

from __future__ import annotations

import argparse
import logging
import tomllib
from pathlib import Path
from typing import Any

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
    p.add_argument(
        "--config",
        type=Path,
        help="TOML file with any of the options below (systemd/kiosk.toml.example); options "
        "on the command line win",
    )
    p.add_argument("--server", help="central server URL, e.g. http://127.0.0.1:8700")
    p.add_argument("--enroll", metavar="TOKEN", help="one-time enrollment token (first start)")
    p.add_argument("--data", type=Path, help="state directory (identity, keys, journal)")
    p.add_argument(
        "--reader",
        help="the holder's card reader: pcsc://NAME or sim://NAME (default sim://kiosk)",
    )
    p.add_argument(
        "--encoder",
        help="the PC/SC reader at the dispenser's encoder position: pcsc://NAME or sim://NAME "
        "(default sim://encoder)",
    )
    p.add_argument(
        "--dispenser",
        help="the card dispenser: serial:///dev/ttyS0?baud=9600 (CRT-591) or sim://NAME"
        "?encoder=ENC (default sim://dispenser?encoder=encoder)",
    )
    p.add_argument(
        "--camera",
        help="QR source for the app's authentication code (camera:///dev/video0, sim://NAME); "
        "default none: identification by number + ID-card number only",
    )
    p.add_argument(
        "--printer",
        help="receipt printer for reissues and electricity transfers, as the POS's: "
        "escpos+serial:///dev/ttyS1?baud=9600, escpos+usb://VID:PID, escpos+net://HOST:9100, "
        "sim://NAME?dir=D; default none (a printer problem never blocks a reissue)",
    )
    p.add_argument(
        "--keystore",
        type=Path,
        help="card keystore file (ykt admin keys export --role kiosk); default: fetched from "
        "the server into DATA/card-keys.json",
    )
    p.add_argument("--control-host", help="control API address (default 127.0.0.1)")
    p.add_argument("--control-port", type=int, help="control API port (default 8702)")
    p.add_argument(
        "--idle", type=float, help="seconds without a touch before the screen goes back to "
        "the start and forgets the visit (default 60)"
    )  # fmt: skip
    p.add_argument("--seed", type=int, help="seed for order ids (tests)")
    p.set_defaults(func=run)


#: the options a config file may give, with their type and default
CONFIG_KEYS: dict[str, tuple[type, object]] = {
    "server": (str, None),
    "enroll": (str, None),
    "data": (str, None),
    "reader": (str, "sim://kiosk"),
    "encoder": (str, "sim://encoder"),
    "dispenser": (str, "sim://dispenser?encoder=encoder"),
    "camera": (str, None),
    "printer": (str, None),
    "keystore": (str, None),
    "control_host": (str, "127.0.0.1"),
    "control_port": (int, 8702),
    "idle": (float, 60.0),
}


def load_config(args: argparse.Namespace) -> KioskConfig:
    values: dict[str, Any] = {k: d for k, (_t, d) in CONFIG_KEYS.items()}
    if args.config:
        try:
            raw = tomllib.loads(args.config.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config {args.config}: {exc}") from exc
        for key, val in raw.items():
            if key not in CONFIG_KEYS:
                known = ", ".join(sorted(CONFIG_KEYS))
                raise ConfigError(f"{args.config}: unknown key {key!r} (known: {known})")
            kind = CONFIG_KEYS[key][0]
            ok = (int, float) if kind is float else kind
            if isinstance(val, bool) or not isinstance(val, ok):
                raise ConfigError(f"{args.config}: {key} must be a {kind.__name__}")
            values[key] = val
    for key in CONFIG_KEYS:
        given = getattr(args, key, None)
        if given is not None:
            values[key] = given
    if not values["data"]:
        raise ConfigError('--data DIR is required (or data = "DIR" in the config file)')
    if not 1 <= int(values["control_port"]) <= 65535:
        raise ConfigError(f"control port {values['control_port']} is not a port number")
    if not 1 <= float(values["idle"]) <= 3600:
        raise ConfigError("idle: 1 to 3600 seconds")
    return KioskConfig(
        data=Path(values["data"]),
        server=values["server"],
        enroll=values["enroll"],
        reader=values["reader"],
        encoder=values["encoder"],
        dispenser=values["dispenser"],
        camera=values["camera"],
        printer=values["printer"],
        keystore=Path(values["keystore"]) if values["keystore"] else None,
        control_host=values["control_host"],
        control_port=int(values["control_port"]),
        idle_s=float(values["idle"]),
        seed=args.seed,
    )


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args)
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
            f"{cfg.reader}; encoder {cfg.encoder}; dispenser {cfg.dispenser}; printer "
            f"{cfg.printer or 'none'}; screen {base}/kiosk"
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
