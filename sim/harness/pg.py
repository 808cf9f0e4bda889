"""A throwaway PostgreSQL cluster on loopback, for the test suite and the benchmarks: Debian's
PostgreSQL (``apt-get install postgresql``; its server binaries live under
``/usr/lib/postgresql/VERSION/bin``), ``initdb`` into a temporary directory, ``pg_ctl start`` on
a free port, trust authentication on 127.0.0.1 only, ``pg_ctl stop`` at the end.

PostgreSQL refuses to run as root; when we are root the cluster runs as the ``postgres`` system
user the Debian package creates (``runuser -u postgres``), or as ``$YKT_PG_USER``.
"""

from __future__ import annotations

import glob
import logging
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from sim.errors import SimError
from sim.harness.procs import free_port

log = logging.getLogger(__name__)


class PgUnavailable(SimError):
    """PostgreSQL's server programs are not installed, or cannot be run here."""


def bin_dir() -> Path:
    """Where ``initdb`` and ``pg_ctl`` are: ``$YKT_PG_BIN``, else the newest Debian version."""
    env = os.environ.get("YKT_PG_BIN")
    if env:
        return Path(env)
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: [int(x) if x.isdigit() else 0 for x in Path(p).parent.parent.name.split(".")],
    )
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).parent
    raise PgUnavailable(
        "PostgreSQL server programs not found: install Debian's postgresql (make sysdeps) "
        "or set YKT_PG_BIN"
    )


class TempCluster:
    """``with TempCluster() as pg: url = pg.create_database("t1")``."""

    def __init__(
        self,
        *,
        durable: bool = False,
        max_connections: int = 300,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.durable = durable
        self.max_connections = max_connections
        self.settings = dict(settings or {})  # more of the server's settings (-c name=value)
        self.port = free_port()
        self.base: Path | None = None
        self.user: str | None = None  # the OS user the server runs as (None: us)
        self._opts = ""  # the server's options (postgres -c …)
        self._bin = bin_dir()
        self._n = 0

    @property
    def data(self) -> Path:
        assert self.base is not None
        return self.base / "data"

    def _cmd(self, *args: str) -> list[str]:
        if self.user is None:
            return list(args)
        return ["runuser", "-u", self.user, "--", *args]

    def _run(self, *args: str) -> None:
        done = subprocess.run(self._cmd(*args), capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise PgUnavailable(
                f"{Path(args[0]).name} failed ({done.returncode}): {done.stderr or done.stdout}"
            )

    def start(self) -> TempCluster:
        if os.geteuid() == 0:
            self.user = os.environ.get("YKT_PG_USER", "postgres")
            try:
                pw = pwd.getpwnam(self.user)
            except KeyError:
                raise PgUnavailable(
                    f"PostgreSQL does not run as root and there is no {self.user!r} user "
                    "(Debian's postgresql package creates it; or set YKT_PG_USER)"
                ) from None
        self.base = Path(tempfile.mkdtemp(prefix="ykt-pg-"))
        os.chmod(self.base, 0o755)
        if self.user is not None:
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
        opts = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-k {self.base}",  # the Unix socket stays in our directory
            f"-c max_connections={self.max_connections}",
            "-c shared_buffers=64MB",
        ]
        if not self.durable:  # tests: durability across power loss is not what they check
            opts += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        opts += [f"-c {name}={value}" for name, value in self.settings.items()]
        self._opts = " ".join(opts)
        self._run(
            str(self._bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        try:
            self._pg_ctl_start()
        except PgUnavailable as exc:
            log_text = ""
            try:
                log_text = (self.base / "server.log").read_text()[-2000:]
            except OSError:
                pass
            self.cleanup()
            raise PgUnavailable(f"{exc}\n{log_text}") from None
        log.info("PostgreSQL on 127.0.0.1:%d (%s)", self.port, self.base)
        return self

    def _pg_ctl_start(self) -> None:
        assert self.base is not None
        self._run(
            str(self._bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.base / "server.log"),
            "-o",
            self._opts,
            "-w",
            "-t",
            "60",
            "start",
        )

    def crash(self) -> None:
        """Stop the server at once, as a crash would (``pg_ctl stop -m immediate``: no
        checkpoint, no flush; what never left its memory is lost, as in a power cut, which
        loses too what the system had not yet written), then start it again: it recovers
        from its WAL."""
        self._run(str(self._bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        self._pg_ctl_start()

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        if name is None:
            self._n += 1
            name = f"ykt{os.getpid()}_{self._n}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        if self.base is None:
            return
        if (self.data / "postmaster.pid").exists():
            try:
                self._run(
                    str(self._bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"
                )
            except PgUnavailable as exc:
                log.warning("stopping PostgreSQL: %s", exc)
        self.cleanup()

    def cleanup(self) -> None:
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None

    def __enter__(self) -> TempCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
