"""``ykt demo``: the whole system on one machine with embedded defaults.

Starts the central server on SQLite, one POS agent on a simulated reader with a simulated receipt
printer (``ykt sim printer``, on a pseudo-terminal), one self-service kiosk with a simulated
card dispenser and a stand-in payment provider (``ykt sim paygate``, registered for the app,
WeChat and Alipay top-ups, R7), creates one demo account per card type (R1) with a card and
¥100.00, and prints how to sell and how to reissue a card at the kiosk.  State lives in
``--data`` (default ``.demo``) so a second start continues where the first stopped.
``ykt demo server stop|start`` stops and restarts the demo's server from another shell, to
watch the POS sell offline and drain its queue.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from sim import periph_cli
from sim.harness import procs
from sim.harness.procs import StartFailed
from sim.harness.ykt import KioskProcess, PaygateProcess, PosProcess, ServerProcess, YktProcess
from sync import rules
from sync.errors import ConfigError, SyncError
from sync.files import private_dir, write_private

DEMO_ACCOUNTS = [
    # number, name, type, ID-card number (valid GB 11643; R3 gives the initial passwords)
    ("S2023001", "张三", "student", "510102199901013052"),
    ("E1001", "李老师", "staff", "51011919990101305X"),
    ("T90001", "王临时", "temporary", "11010519491231002X"),
    ("C3001", "赵家属", "consumer", "440524188001010014"),
]


SERVER_PORT, CONTROL_PORT, PAYGATE_PORT, KIOSK_PORT = 8700, 8701, 8702, 8703  # the defaults
PRINTER = "printer1"  # the simulated receipt printer, in DATA/devices
#: the top-up channels the demo's payment provider is registered for (R7; bank is off)
PAYGATE_CHANNELS = ("app", "wechat", "alipay")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _require_free(port: int, what: str, option: str) -> None:
    if not _port_free(port):
        raise ConfigError(
            f"port {port} for the demo's {what} is in use (another demo running?); "
            f"stop it or pick another with {option}"
        )


def _started(child: YktProcess) -> YktProcess:
    """Start a demo child (its own session: Ctrl-C reaches the demo, which stops it); a child
    that does not come up is a configuration problem (exit status 2), as before."""
    try:
        return child.start()
    except StartFailed as exc:
        raise ConfigError(str(exc)) from exc


def _start_server(data: Path, port: int) -> ServerProcess:
    _require_free(port, "server", "--server-port")
    server = ServerProcess(
        data / "server",
        port=port,
        password_cost=None,  # the server's default cost: the demo is what a campus would run
        log_path=data / "server.log",
        new_session=True,
    )
    _started(server)
    (data / "server.pid").write_text(str(server.pid))
    return server


def _setup(data: Path, server: ServerProcess) -> dict[str, Any]:
    state_path = data / "demo.json"
    if state_path.exists():
        return dict(json.loads(state_path.read_text()))

    def admin(method: str, path: str, body: Any) -> dict[str, Any]:
        try:
            return server.admin_call(method, path, body)
        except SyncError as exc:
            raise ConfigError(f"demo setup: {method} {path}: {exc}") from exc

    cards = []
    for number, name, kind, idc in DEMO_ACCOUNTS:
        admin(
            "POST",
            "/v1/admin/accounts",
            {"number": number, "name": name, "type": kind, "id_card": idc},
        )
        admin(
            "POST",
            f"/v1/admin/accounts/{number}/topups",
            {"amount_fen": 10000, "channel": "cash", "request_id": f"demo-{number}"},
        )
        card = admin("POST", f"/v1/admin/accounts/{number}/cards", {})
        cards.append({**card, "name": name, "type": kind, "password": rules.initial_password(idc)})
    enroll = admin(  # the demo's POS reads simulated cards (sim://r1)
        "POST",
        "/v1/admin/terminals/tokens",
        {"role": "pos", "name": "canteen-1", "simulated": True},
    )
    kiosk = admin("POST", "/v1/admin/terminals/tokens", {"role": "kiosk", "name": "kiosk-1"})
    state = {"cards": cards, "pos_token": enroll["token"], "kiosk_token": kiosk["token"]}
    # the demo holders' passwords and a terminal enrollment token: private, as the data is
    write_private(state_path, json.dumps(state, ensure_ascii=False, indent=2).encode())
    return state


def run(args: argparse.Namespace) -> int:
    if getattr(args, "demo_command", None) == "server":
        return server_ctl(args)
    data: Path = args.data.resolve()
    private_dir(data)
    server = f"http://127.0.0.1:{args.server_port}"
    agent = f"http://127.0.0.1:{args.control_port}"
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the children as Ctrl-C does
    _require_free(args.control_port, "POS control API", "--control-port")
    _require_free(args.paygate_port, "payment provider", "--paygate-port")
    _require_free(args.kiosk_port, "kiosk control API", "--kiosk-port")
    kiosk_url = f"http://127.0.0.1:{args.kiosk_port}"
    started = _start_server(data, args.server_port)
    children: list[YktProcess] = [started]
    try:
        state = _setup(data, started)
        gate = PaygateProcess(
            data / "paygate",
            port=args.paygate_port,
            log_path=data / "paygate.log",
            new_session=True,
        )
        gate.data.mkdir(parents=True, exist_ok=True)
        children.append(gate)
        _started(gate)
        for channel in PAYGATE_CHANNELS:  # again at every start: the port may have changed
            try:
                started.register_paygate(channel, gate.url, gate.public_key)
            except SyncError as exc:
                raise ConfigError(f"demo setup: registering the payment provider: {exc}") from exc
        devices = data / "devices"
        devices.mkdir(exist_ok=True)
        periph_cli.stop(devices, PRINTER)  # a printer left by a demo that was killed
        printer = periph_cli.start("printer", devices, PRINTER)
        pos = PosProcess(
            data / "pos1",
            server_url=server,
            token=state["pos_token"],
            reader="sim://r1",
            camera="sim://cam1",
            port=args.control_port,
            operator="demo",
            log_path=data / "pos.log",
            new_session=True,
            extra=("--printer", f"escpos+serial://{printer['device']}"),
        )
        children.append(pos)
        _started(pos)
        kiosk = KioskProcess(
            data / "kiosk1",
            server_url=server,
            token=state.get("kiosk_token"),
            reader="sim://kiosk",
            encoder="sim://encoder",
            dispenser="sim://dispenser?encoder=encoder&blanks=20",
            port=args.kiosk_port,
            log_path=data / "kiosk.log",
            new_session=True,
        )
        children.append(kiosk)
        _started(kiosk)
        _print_instructions(data, server, agent, kiosk_url, state, args.server_port)
        assert pos.proc is not None
        code = pos.proc.wait()  # until the agent ends, or Ctrl-C / SIGTERM ends the demo
        print(f"the POS agent exited with {code}; see {data / 'pos.log'}")
        return 1
    except KeyboardInterrupt:
        print("\nstopping the demo…")
        return 0
    finally:
        running = [c.proc for c in children if c.proc is not None]
        for p in running:
            if p.poll() is None:
                p.terminate()
        _stop_pidfile(data)  # the server, also when `ykt demo server start` restarted it
        procs.stop(running, grace=10)
        for c in children:
            c.stop()
        periph_cli.stop(data / "devices", PRINTER)


def _print_instructions(
    data: Path, server: str, agent: str, kiosk: str, state: dict[str, Any], port: int
) -> None:
    token = data / "server" / "admin.token"
    port_opt = "" if port == SERVER_PORT else f" --server-port {port}"
    stop, start = (f"ykt demo server {a} --data {data}{port_opt}" for a in ("stop", "start"))
    a = f"ykt admin --server {server} --token-file {token}"
    first, second = state["cards"][0], state["cards"][1]
    print(f"""
ykt demo is running (state in {data}; Ctrl-C stops it).

  central server   {server}            (API docs {server}/docs)
  POS cashier      {agent}/cashier
  POS customer     {agent}/customer
  kiosk screen     {kiosk}/kiosk

Demo cards (each ¥100.00; passwords by R3 from the ID-card number):""")
    for c in state["cards"]:
        print(
            f"  {c['card_no']}  {c['number']:<9} {c['name']}  {c['type']:<9} "
            f"password {c['password']}"
        )
    print(
        f"""
From a second shell (with the virtualenv: . .venv/bin/activate):
  ykt sim sale --agent {agent} --card {first["card_no"]} --amount 12.50
  ykt sim sale --agent {agent} --card {first["card_no"]} --amount 45.00 --pin {first["password"]}
  ykt sim printer show --dir {data / "devices"} --name {PRINTER} --png RECEIPT.png   # the receipts
  ykt verify-receipt --server {server} --png RECEIPT.png   # GENUINE (the terminal signed it)
  {a} account show --number {first["number"]}
Phone payment code of {second["name"]} (the simulated phone signs in; its code goes to the POS camera):
  ykt sim wallet login --server {server} --number {second["number"]} --password {second["password"]} --wallet W.json
  ykt sim wallet pay-code --wallet W.json --png CODE.png
  ykt sim sale --agent {agent} --amount 9.00 --qr CODE.png
  (over the ¥50.00 daily limit the phone confirms first: pay-code --confirm-password {second["password"]})
Top-up by WeChat (R7: an order, paid at the stand-in payment provider, credited by its signed notification):
  ykt sim wallet topup --wallet W.json --channel wechat --amount 20.00 --password {second["password"]}
Self-service kiosk: {second["name"]} reissues the card (fee from the balance; the old card stops working):
  ykt sim kiosk --agent {kiosk} reissue --number {second["number"]} --id-card {DEMO_ACCOUNTS[1][3]}
Network outage:
  {stop}     # the POS keeps selling offline
  ykt sim sale --agent {agent} --card {first["card_no"]} --amount 3.00
  {start}    # the queue drains within seconds
  {a} ledger check
""",
        flush=True,
    )


def _stop_pidfile(data: Path, port: int | None = None) -> bool:
    """Stop the demo's server; with ``port``, wait until it has let go of the port."""
    pidfile = data / "server.pid"
    if not pidfile.exists():
        return False
    try:
        os.kill(int(pidfile.read_text()), signal.SIGTERM)
        stopped = True
    except (ProcessLookupError, ValueError):
        stopped = False
    pidfile.unlink(missing_ok=True)
    if stopped and port is not None:
        procs.poll(lambda: _port_free(port), 15, 0.1)
    return stopped


def server_ctl(args: argparse.Namespace) -> int:
    data: Path = args.data.resolve()
    if args.action == "stop":
        stopped = _stop_pidfile(data, args.server_port)
        print("demo server stopped" if stopped else "the demo server was not running")
        return 0
    pidfile = data / "server.pid"
    if pidfile.exists():
        try:
            os.kill(int(pidfile.read_text()), 0)
            print("the demo server is already running")
            return 0
        except (ProcessLookupError, ValueError):
            pass
    _start_server(data, args.server_port)
    print(f"demo server started on http://127.0.0.1:{args.server_port}")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="run the server and a POS agent on simulated hardware, with demo accounts",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--data", type=Path, default=Path(".demo"), help="state directory (default .demo)"
    )
    p.add_argument("--server-port", type=int, default=SERVER_PORT)
    p.add_argument("--control-port", type=int, default=CONTROL_PORT)
    p.add_argument(
        "--paygate-port",
        type=int,
        default=PAYGATE_PORT,
        help=f"port of the stand-in payment provider (default {PAYGATE_PORT})",
    )
    p.add_argument(
        "--kiosk-port",
        type=int,
        default=KIOSK_PORT,
        help=f"the kiosk's control API and screen (default {KIOSK_PORT})",
    )
    p.set_defaults(func=run)
    ds = p.add_subparsers(dest="demo_command", metavar="ACTION")
    s = ds.add_parser("server", help="stop or start the demo's server (from another shell)")
    s.add_argument("action", choices=["stop", "start"])
    s.add_argument("--data", type=Path, default=Path(".demo"))
    s.add_argument("--server-port", type=int, default=SERVER_PORT)
    s.set_defaults(func=server_ctl)
