"""The one way to start ``ykt server`` and ``ykt pos`` as child processes on loopback, for the
tests (``tests/helpers.py``), the benchmarks (``sim/bench``) and the demo (``sim/demo.py``).

``start()`` returns once the child answers HTTP (the server ``/v1/health``, the agent
``/control/status``); :class:`sim.harness.procs.StartFailed` (with the end of its log) when it
exits or does not answer first, and the child is stopped.  Output goes to ``log_path``
(default: ``DATA.log`` next to the data directory), appended, so a restarted child keeps one
log.
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar, Self

import requests

from edge.pos import controltoken
from sim.harness import procs
from sim.harness.procs import StartFailed, free_port, ykt_cmd
from sync.admin.common import AdminClient
from sync.client import ServerClient
from sync.crypto import SigningKey

__all__ = [
    "AdminApi",
    "PaygateProcess",
    "PosProcess",
    "ServerProcess",
    "StartFailed",
    "YktProcess",
]


class AdminApi:
    """Driving a running server as the desk does, whichever way it was started (a
    :class:`ServerProcess`, or the tests' in-thread server, ``tests/live.py``): its ``url`` and
    the admin token in ``token_file``."""

    @property
    def url(self) -> str:
        raise NotImplementedError

    @property
    def token_file(self) -> Path:
        raise NotImplementedError

    def admin_client(self, keep_alive: bool = False) -> AdminClient:
        """An admin client with the server's own token; without ``keep_alive`` every call has
        its own connection (no socket outlives the call)."""
        client = AdminClient(self.url, self.token_file.read_text().strip())
        if not keep_alive:
            client.headers["Connection"] = "close"
        return client

    def admin_call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        """One admin request; :class:`sync.errors.ServerRefused` when it is refused."""
        client = self.admin_client()
        try:
            return client.call(method, path, body)
        finally:
            client.close()

    def enroll_token(self, name: str, role: str = "pos", simulated: bool = True) -> str:
        """A one-time enrolment token for a terminal called ``name``; ``simulated`` (the
        harness's default: its agents use sim:// readers) lets the feed send it the cards'
        signed identities to make simulated cards from."""
        body = {"role": role, "name": name, "simulated": simulated}
        got = self.admin_call("POST", "/v1/admin/terminals/tokens", body)
        return str(got["token"])

    def register_paygate(self, channel: str, url: str, public_key: str) -> dict[str, Any]:
        """Register a payment provider for a top-up channel (R7), as
        ``ykt admin paygate set`` does."""
        notify = f"{self.url}/v1/paygate/{channel}/notify"
        body = {"url": url, "public_key": public_key, "notify_url": notify}
        return self.admin_call("PUT", f"/v1/admin/paygates/{channel}", body)

    def enroll(self, name: str, key: SigningKey, role: str = "pos") -> str:
        """Enroll a (simulated) terminal with ``key`` as the agent would; its terminal id."""
        client = ServerClient(self.url)
        try:
            got = client.enroll(self.enroll_token(name, role), key.public.to_b64())
        finally:
            client.close()
        return str(got["terminal_id"])


@dataclass
class YktProcess:
    """What a ``ykt`` child answering HTTP on a loopback port needs: its data directory, port,
    environment (added to ours), log, whether it gets its own session (the demo's children
    outlive a Ctrl-C sent to the terminal's process group until the demo stops them), and its
    CPU priority (``nice``: run under ``nice -n``, as systemd's ``Nice=`` would)."""

    data: Path
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    extra: tuple[str, ...] = ()
    log_path: Path | None = None
    new_session: bool = False
    nice: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None

    HEALTH: ClassVar[str] = "/"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    @property
    def logfile(self) -> Path:
        return self.log_path or self.data.parent / f"{self.data.name}.log"

    def args(self) -> list[str]:
        """The ``ykt`` command line of the child."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Before the child starts (the server makes its data directory)."""

    def start(self, timeout: float = 30.0) -> Self:
        """Start the child and wait until it answers; returns ``self``."""
        self.data.parent.mkdir(parents=True, exist_ok=True)
        self.prepare()
        if self.log is None:
            self.log = open(self.logfile, "ab")  # noqa: SIM115 - closed in stop()
        cmd = ykt_cmd(*self.args())
        if self.nice:
            cmd = ["nice", "-n", str(self.nice), *cmd]  # execs the command: the same pid
        self.proc = subprocess.Popen(
            cmd,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            start_new_session=self.new_session,
        )
        try:
            procs.wait_http(self.url + self.HEALTH, timeout, self.proc, self.logfile)
        except StartFailed:
            self.stop()
            raise
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, grace: float = 15) -> None:
        """Send ``sig`` (default SIGTERM) and wait; killed after ``grace`` seconds."""
        if self.proc is not None:
            procs.stop([self.proc], sig, grace)
        if self.log is not None and (self.proc is None or self.proc.poll() is not None):
            self.log.close()
            self.log = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class ServerProcess(YktProcess, AdminApi):
    """``ykt server`` on SQLite in ``data`` (or PostgreSQL at ``db_url``).  ``password_cost``:
    ``--password-cost`` (scrypt log2 N; 10 keeps tests and benchmarks fast), None for the
    server's default."""

    db_url: str | None = None
    password_cost: int | None = 10

    HEALTH: ClassVar[str] = "/v1/health"

    def prepare(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)

    def args(self) -> list[str]:
        out = ["server", "--data", str(self.data), "--port", str(self.port)]
        if self.password_cost is not None:
            out += ["--password-cost", str(self.password_cost)]
        if self.db_url:
            out += ["--db", self.db_url]
        return [*out, *self.extra]

    @property
    def token_file(self) -> Path:
        return self.data / "admin.token"

    def admin(self, keep_alive: bool = False) -> AdminClient:
        """:meth:`AdminApi.admin_client`."""
        return self.admin_client(keep_alive)


@dataclass
class PosProcess(YktProcess):
    """``ykt pos`` talking to ``server_url``, its control API on ``port``.  ``token``: enroll
    with it on first start; ``seed``, ``log_level``, ``operator``: the options of the same
    name, left out when None."""

    server_url: str = ""
    token: str | None = None
    reader: str = "sim://r1"
    camera: str | None = None
    seed: int | None = None
    log_level: str | None = None
    operator: str | None = None

    HEALTH: ClassVar[str] = "/control/status"

    def upstream(self) -> str:
        """The server URL the agent is started with."""
        return self.server_url

    def args(self) -> list[str]:
        out = ["--log-level", self.log_level] if self.log_level else []
        out += ["pos", "--server", self.upstream(), "--data", str(self.data)]
        out += ["--reader", self.reader, "--control-port", str(self.port)]
        if self.seed is not None:
            out += ["--seed", str(self.seed)]
        if self.token:
            out += ["--enroll", self.token]
        if self.camera:
            out += ["--camera", self.camera]
        if self.operator:
            out += ["--operator", self.operator]
        return [*out, *self.extra]

    def status(self) -> dict[str, Any]:
        return dict(requests.get(self.url + "/control/status", timeout=5).json())

    def control_headers(self) -> dict[str, str]:
        """The header a request that changes the agent's state carries: its per-boot control
        token, from DATA/control.token (edge/pos/controltoken.py)."""
        token = (self.data / controltoken.FILE).read_text().strip()
        return {controltoken.HEADER: token}


@dataclass
class KioskProcess(YktProcess):
    """``ykt kiosk`` talking to ``server_url``, its control API on ``port``: the holder's
    ``reader``, the ``encoder`` and the ``dispenser`` by URL (pcsc:// readers need the
    environment's ``PCSCLITE_CSOCK_NAME`` of a private pcscd)."""

    server_url: str = ""
    token: str | None = None
    reader: str = "sim://kiosk"
    encoder: str = "sim://encoder"
    dispenser: str = "sim://dispenser?encoder=encoder"
    camera: str | None = None
    log_level: str | None = "INFO"

    HEALTH: ClassVar[str] = "/control/status"

    def args(self) -> list[str]:
        out = ["--log-level", self.log_level] if self.log_level else []
        out += ["kiosk", "--server", self.server_url, "--data", str(self.data)]
        out += ["--reader", self.reader, "--encoder", self.encoder]
        out += ["--dispenser", self.dispenser, "--control-port", str(self.port)]
        if self.token:
            out += ["--enroll", self.token]
        if self.camera:
            out += ["--camera", self.camera]
        return [*out, *self.extra]

    def status(self) -> dict[str, Any]:
        return dict(requests.get(self.url + "/control/status", timeout=5).json())

    def control_headers(self) -> dict[str, str]:
        """The header a request that changes the kiosk's state carries (its control token)."""
        token = (self.data / controltoken.FILE).read_text().strip()
        return {controltoken.HEADER: token}


@dataclass
class PaygateProcess(YktProcess):
    """``ykt sim paygate``: the stand-in payment provider (R7), its state and key in ``data``
    (``data/provider.pub``: the public key to register at the server).  ``retry_s``: its
    first redelivery delay."""

    retry_s: float = 0.2

    HEALTH: ClassVar[str] = "/v1/health"

    def args(self) -> list[str]:
        return [
            "sim",
            "paygate",
            "--dir",
            str(self.data),
            "--port",
            str(self.port),
            "--retry-s",
            str(self.retry_s),
            *self.extra,
        ]

    @property
    def public_key(self) -> str:
        return (self.data / "provider.pub").read_text().strip()
