"""``ykt server``: run the central server."""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import logging
import secrets
import sys
from pathlib import Path

import requests

from sync.db import Database, is_postgres_url
from sync.errors import ConfigError
from sync.files import private_dir, write_private
from sync.passwords import MAX_LOG2_N, MIN_LOG2_N
from sync.server import recovery, sso
from sync.server.app import create_app
from sync.server.context import SSO_ALGORITHMS, Context, ServerConfig
from sync.server.schema import MIGRATIONS
from sync.service import serve

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "server",
        help="run the central server (API, ledger, journal ingest, delta feed)",
        description="Run the central server.  On first start it writes an admin token to "
        "DATA/admin.token (mode 0600) for `ykt admin --token-file`.  With --db postgresql://… "
        "the data lives in PostgreSQL, and several server processes (behind a load balancer) "
        "may share it.",
    )
    p.add_argument(
        "--data", type=Path, help="state directory (SQLite database, admin token); required"
    )
    p.add_argument(
        "--db",
        metavar="URL",
        help="keep the data in PostgreSQL: postgresql://USER[:PASSWORD]@HOST[:PORT]/DB "
        "(libpq's PGPASSWORD and ~/.pgpass work too); default: SQLite DATA/ykt.db",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8700, help="port to listen on (default 8700)")
    p.add_argument("--campus", default="ynart", help="campus id (default ynart)")
    p.add_argument("--tz", default="Asia/Shanghai", help="campus time zone (default Asia/Shanghai)")
    p.add_argument(
        "--password-cost",
        type=int,
        choices=range(MIN_LOG2_N, MAX_LOG2_N + 1),
        default=15,
        metavar="LOG2N",
        help="scrypt cost for new password hashes, log2 N (default 15; the tests and "
        "benchmarks use 10)",
    )
    p.add_argument("--seed", type=int, default=None, help="seed for generated ids (tests)")
    p.add_argument(
        "--sso-issuer", help="campus single sign-on (R16): the OpenID Connect issuer URL"
    )
    p.add_argument("--sso-client-id", default="ykt", help="client id at the issuer")
    p.add_argument(
        "--sso-client-secret-file", type=Path, help="file holding the client secret (0600)"
    )
    p.add_argument(
        "--sso-claim",
        default="preferred_username",
        help="ID-token claim that holds the staff/student number",
    )
    p.add_argument(
        "--sso-algorithms",
        default=",".join(SSO_ALGORITHMS),
        metavar="ALGS",
        help="the ID-token signature algorithms the provider may use, comma-separated (default "
        f"{','.join(SSO_ALGORITHMS)}: public keys from its JWKS; HS256, the client secret as "
        "the key, only alone)",
    )
    p.set_defaults(func=run)
    actions = p.add_subparsers(title="actions", metavar="[ACTION]")
    r = actions.add_parser(
        "restore",
        help="restore the database from a backup (the server stopped); the server then "
        "refuses pay-outs and online approvals until every terminal has pushed again",
        description="Restore the server's database from a backup, with the server stopped.  "
        "SQLite: --from BACKUP puts the backup in place of DATA/ykt.db (the replaced database "
        "is kept as DATA/ykt.db.replaced-N).  PostgreSQL: restore with pg_restore first, then "
        "run this with --db and no --from.  Either way the restored database is marked "
        "*recovering*: until every enrolled terminal has pushed its journal again (the sales "
        "it synced since the backup), the server refuses cancellation pay-outs, refunds out "
        "of a balance, transfers out and online approvals (terminals decide offline).  "
        "`ykt admin server status` shows the terminals still to push (docs/operations.md).",
    )
    r.add_argument("--data", type=Path, required=True, help="the server's state directory")
    r.add_argument("--db", metavar="URL", help="the PostgreSQL database pg_restore filled")
    r.add_argument(
        "--from",
        dest="backup",
        type=Path,
        metavar="BACKUP",
        help="SQLite: the backup file (sqlite3 .backup, or a copy of a stopped server's ykt.db)",
    )
    r.add_argument("--reason", default="", help="kept in the alarm (default: the backup's name)")
    r.set_defaults(func=restore)


def _secret(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the SSO client secret: {exc}") from exc


def ensure_admin_token(ctx: Context) -> tuple[Path, bool]:
    """Create the admin credential on first start; returns its path and whether it is new.

    Decided inside a write transaction, so server processes starting together on one database
    agree on one credential.  On SQLite a lost token file is replaced by a new credential; on
    PostgreSQL, where other server processes (with other data directories) share the database,
    the credential is never replaced behind their back: copy the file from the first server."""
    path = ctx.config.data_dir / "admin.token"
    with ctx.db.tx() as tx:
        raw = tx.scalar("SELECT value FROM settings WHERE key = 'admin_token_sha256'")
        known = json.loads(raw) if raw else None
        if known and path.exists():
            return path, False
        if known and ctx.db.dialect != "sqlite":
            raise ConfigError(
                f"the database {ctx.db.name} already has an admin credential and {path} does "
                "not exist: copy admin.token from the server that created it"
            )
        token = secrets.token_urlsafe(32)
        write_private(path, (token + "\n").encode())
        ctx.put_setting(tx, "admin_token_sha256", hashlib.sha256(token.encode()).hexdigest())
    return path, True


#: how long a thread holds the GIL while another waits for it (Python's default: 5 ms).  The
#: server's threads give the GIL up around every database statement and then wait for it again
#: up to this long behind the event loop: with 5 ms, a write transaction of a dozen statements
#: held the database's writer turn for tens of milliseconds at a lunch peak, and every other
#: writer queued behind it (docs/benchmarks.md, peak)
SWITCH_INTERVAL_S = 0.0001


def restore(args: argparse.Namespace) -> int:
    """``ykt server restore``: put a SQLite backup in place, or mark a database pg_restore
    filled, and enter the recovering state (:mod:`sync.server.recovery`)."""
    if args.db is not None:
        if not is_postgres_url(args.db):
            raise ConfigError(f"--db takes a postgresql://USER@HOST/DB URL, not {args.db!r}")
        if args.backup is not None:
            raise ConfigError("--from is for SQLite; restore PostgreSQL with pg_restore first")
    elif args.backup is None:
        raise ConfigError("--from BACKUP: the SQLite backup to restore (or --db URL)")
    config = ServerConfig(data_dir=args.data, db_url=args.db)
    kept = None
    if args.backup is not None:
        if not args.backup.is_file():
            raise ConfigError(f"no backup file {args.backup}")
        private_dir(args.data)
        kept = recovery.put_back(config.db_path, args.backup)
    db = Database(config.db_target, synchronous="FULL", migrations=MIGRATIONS)
    try:
        ctx = Context(config=config, db=db)
        reason = args.reason or (
            f"restored from {args.backup.name}" if args.backup else "restored with pg_restore"
        )
        state = recovery.enter(ctx, reason, "ykt server restore")
    finally:
        db.close()
    where = f"{config.db_path} (the replaced one kept as {kept.name})" if kept else db.name
    print(
        f"restored: {where}; the server is recovering until {len(state['waiting'])} terminals "
        "have pushed again (ykt admin server status)",
        flush=True,
    )
    return 0


def run(args: argparse.Namespace) -> int:
    if args.data is None:
        raise ConfigError("ykt server: --data DIR is required")
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    if args.db is not None and not is_postgres_url(args.db):
        raise ConfigError(f"--db takes a postgresql://USER@HOST/DB URL, not {args.db!r}")
    config = ServerConfig(
        data_dir=args.data,
        db_url=args.db,
        campus_id=args.campus,
        tz=args.tz,
        password_log2_n=args.password_cost,
        seed=args.seed,
        sso_issuer=args.sso_issuer,
        sso_client_id=args.sso_client_id,
        sso_client_secret=_secret(args.sso_client_secret_file),
        sso_claim=args.sso_claim,
        sso_algorithms=sso.check_algorithms(args.sso_algorithms.split(",")),
    )
    ctx = Context.open(config)
    token_path, created = ensure_admin_token(ctx)
    if created:
        print(f"admin credential created: {token_path}", flush=True)
    else:
        print(f"admin credential: {token_path}", flush=True)

    def alive() -> bool:
        """The watchdog is fed only while the server answers its own health check."""

        host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
        try:
            return requests.get(f"http://{host}:{args.port}/v1/health", timeout=5).ok
        except requests.RequestException:
            return False

    app = create_app(ctx)
    # what is made by now (the code, the app, the context: ~86,000 objects) lives as long as
    # the process: out of the collector's way (gc.freeze), else every full collection walks
    # it again with every thread of the server stopped: 85–160 ms at a lunch peak
    # (docs/benchmarks.md, peak)
    gc.collect()
    gc.freeze()
    serve(
        app,
        args.host,
        args.port,
        banner=lambda: (
            f"ykt server listening on http://{args.host}:{args.port} (data {args.data}, "
            f"database {ctx.db.name})"
        ),
        alive=alive,
        on_stop=ctx.notifier.close,  # answers the long-polls
    )
    ctx.db.close()
    return 0
