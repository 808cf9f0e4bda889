"""``ykt pos``: run a canteen POS agent."""

from __future__ import annotations

import argparse
import logging
import socket
import tomllib
from pathlib import Path
from typing import Any

from edge.pos import controltoken
from edge.pos.agent import PosAgent, PosConfig
from edge.pos.control import create_control_app
from sync.errors import ConfigError
from sync.service import serve

log = logging.getLogger(__name__)

CONFIG_KEYS = {
    "server": str,
    "enroll": str,
    "data": str,
    "reader": str,
    "keystore": str,
    "camera": str,
    "decoder": str,
    "control_host": str,
    "control_port": int,
    "operator": str,
}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "pos",
        help="run a canteen POS agent (card reader, journal, sync, control API and screens)",
        description="Run a POS agent.  The first start enrolls the terminal with a one-time "
        "token; later starts reuse DATA/terminal.json and DATA/terminal.key.  Options may also "
        "come from a TOML file (--config); options on the command line win.",
    )
    p.add_argument("--config", type=Path, help="TOML file with any of the options below")
    p.add_argument("--server", help="central server URL, e.g. http://127.0.0.1:8700")
    p.add_argument("--enroll", metavar="TOKEN", help="one-time enrollment token (first start)")
    p.add_argument("--data", type=Path, help="state directory (identity, key, journal, caches)")
    p.add_argument(
        "--reader",
        help="card reader URL: pcsc:// (first PC/SC reader), pcsc://NAME, or sim://NAME "
        "(in-process simulator; the default is sim://r1)",
    )
    p.add_argument(
        "--keystore",
        help="card keystore file (ykt admin keys export --role pos); default: fetched from "
        "the server into DATA/card-keys.json",
    )
    p.add_argument(
        "--camera",
        help="QR source for phone codes: camera:///dev/video0, camera://file/PATH (video, "
        "image or image folder), serial:///dev/ttyACM0?baud=9600, or sim://NAME (default: none)",
    )
    p.add_argument(
        "--decoder", choices=["zxing", "zbar"], help="QR decoder for cameras (default zxing)"
    )
    p.add_argument("--control-host", help="control API address (default 127.0.0.1)")
    p.add_argument("--control-port", type=int, help="control API port (default 8701)")
    p.add_argument("--operator", help="cashier id recorded in the journal")
    p.add_argument("--seed", type=int, help="seed for backoff jitter (tests)")
    p.set_defaults(func=run)


def load_config(args: argparse.Namespace) -> PosConfig:
    values: dict[str, Any] = {}
    if args.config:
        try:
            raw = tomllib.loads(args.config.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config {args.config}: {exc}") from exc
        for key, val in raw.items():
            if key not in CONFIG_KEYS:
                raise ConfigError(
                    f"{args.config}: unknown key {key!r} (known: {', '.join(sorted(CONFIG_KEYS))})"
                )
            if not isinstance(val, CONFIG_KEYS[key]) or isinstance(val, bool):
                kind = "an integer" if CONFIG_KEYS[key] is int else "a string"
                raise ConfigError(f"{args.config}: {key} must be {kind}, got {val!r}")
            values[key] = val
    for key in CONFIG_KEYS:
        cli_val = getattr(args, key, None)
        if cli_val is not None:
            values[key] = cli_val
    if "data" not in values:
        raise ConfigError('--data DIR is required (or data = "DIR" in the config file)')
    if values.get("decoder", "zxing") not in ("zxing", "zbar"):
        raise ConfigError(f"decoder must be zxing or zbar, not {values['decoder']!r}")
    port = values.get("control_port", 8701)
    if not 1 <= port <= 65535:
        raise ConfigError(f"control port {port} is not a port number")
    return PosConfig(
        data=Path(values["data"]),
        server=values.get("server"),
        enroll=values.get("enroll"),
        reader=values.get("reader", "sim://r1"),
        keystore=Path(values["keystore"]) if values.get("keystore") else None,
        camera=values.get("camera"),
        decoder=values.get("decoder", "zxing"),
        control_host=values.get("control_host", "127.0.0.1"),
        control_port=port,
        operator=values.get("operator", ""),
        seed=args.seed,
    )


def listen(host: str, port: int) -> socket.socket:
    """Take the control API's address before anything else starts, so a busy port is a clear
    configuration error (exit 2) rather than an agent that enrolls and then dies."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        # the protocol must say TCP, or asyncio does not set TCP_NODELAY on accepted
        # connections and every control call waits out a delayed ACK (~40 ms)
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port} for the control API: {exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
        return sock
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} for the control API: {exc}") from exc


def run(args: argparse.Namespace) -> int:

    cfg = load_config(args)
    sock = listen(cfg.control_host, cfg.control_port)
    try:
        agent = PosAgent(cfg)
    except BaseException:
        sock.close()
        raise
    token = controltoken.new_token()
    controltoken.publish(cfg.data, cfg.control_port, token)
    agent.start()
    base = f"http://{cfg.control_host}:{cfg.control_port}"

    def banner() -> str:
        return (
            f"ykt pos {agent.ident.terminal_id} ({agent.ident.name}) ready; reader "
            f"{cfg.reader}; camera {cfg.camera or 'none'}; cashier {base}/cashier; "
            f"customer {base}/customer"
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
