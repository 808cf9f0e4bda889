"""The central server in the simulator: the real services on a SQLite file, behind the four
terminal routes a POS calls (keystore, authorize, journal, feed).

A request goes through what the FastAPI route does, minus HTTP (and the public health probe): the real signature, freshness
and replay check (:class:`sync.server.terminals.TerminalAuth`), the role table
(:func:`sync.server.roles.require`), the strict request models, the service, and the same
mapping of errors to a status and ``{"error": {"code", "message"}}`` body.  Not through the
app itself: a request through Starlette's test client costs about 1 ms of routing, threads and
an event loop per call, more than the service, and covers only routing and serialisation, which
the HTTP tests cover already.

A crash drops the process's memory (the nonce cache, the keys it read); a restart opens the
database again (a new boot number, so new ids).  A backup is a copy of the database at one
step; a restore puts such a copy back and restarts.
"""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
from msgspec import Struct

from drivers.errors import YktError
from sync.clock import Clock
from sync.db import Database
from sync.server import authorize, feed, ingest, merchants, recovery, roles
from sync.server.context import Context, ServerConfig, boot_number, current_version
from sync.server.models import AuthorizeIn, JournalIn
from sync.server.schema import MIGRATIONS
from sync.server.terminals import TerminalAuth

#: the routes a POS calls, as the role table names them
ROUTES = {
    ("GET", "/v1/terminals/keystore"): "GET /v1/terminals/keystore",
    ("POST", "/v1/pos/authorize"): "POST /v1/pos/authorize",
    ("POST", "/v1/journal"): "POST /v1/journal",
    ("GET", "/v1/feed"): "GET /v1/feed",
}


def _encode(out: Struct | dict[str, Any]) -> bytes:
    """The answer's JSON: what the route's ``to_json`` (``msgspec.to_builtins``, unset fields
    left out) and the app's JSON response make of it, in one step."""
    return msgspec.json.encode(out)


def _error(status: int, code: str, message: str) -> tuple[int, bytes]:
    return status, json.dumps({"error": {"code": code, "message": message}}).encode()


class SimServer:
    def __init__(self, data: Path, clock: Clock, seed: int) -> None:
        self.data = data
        self.clock = clock
        self.seed = seed
        self.config = ServerConfig(data_dir=data, password_log2_n=10, seed=seed)
        data.mkdir(parents=True, exist_ok=True)
        self.ctx: Context | None = None
        self.auth: TerminalAuth | None = None
        self.boots = 0
        self.start()

    @property
    def up(self) -> bool:
        return self.ctx is not None

    def start(self) -> None:
        db = Database(self.config.db_path, synchronous="OFF", migrations=MIGRATIONS)
        boot = boot_number(db)
        self.boots += 1
        rng = random.Random(f"{self.seed}/server/{boot}")
        self.ctx = Context(config=self.config, db=db, clock=self.clock, rng=rng)
        self.ctx.shared_keys()
        self.auth = TerminalAuth(self.ctx)

    def crash(self) -> None:
        """The process dies: what it held in memory is gone, the database stays as committed."""
        if self.ctx is not None:
            self.ctx.db.close()
        self.ctx = None
        self.auth = None

    def backup(self, dest: Path) -> None:
        """A consistent copy of the database as it is now (SQLite's online backup)."""
        src = sqlite3.connect(self.config.db_path)
        out = sqlite3.connect(dest)
        try:
            src.backup(out)
        finally:
            out.close()
            src.close()

    def restore(self, backup: Path) -> None:
        """The server is restored from an older backup with the product's step (``ykt server
        restore --from BACKUP``: the file put back, the database marked recovering), then
        started again."""
        self.crash()
        recovery.put_back(self.config.db_path, backup, keep=False)
        self.start()
        recovery.enter(self.context, f"restored from {backup.name}", "ykt server restore")

    @property
    def context(self) -> Context:
        assert self.ctx is not None, "the server is down"
        return self.ctx

    # -- the terminal routes -------------------------------------------------------------------
    def handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes]:
        """One request of a terminal: ``(status, body)``.  The server must be up."""
        ctx, auth = self.context, self.auth
        assert auth is not None
        split = urlsplit(target)
        if (method, split.path) == ("GET", "/v1/health"):  # public: the decider's probe
            probe = {
                "ok": True,
                "campus_id": ctx.config.campus_id,
                "time_ms": ctx.now_ms(),
                "version": current_version(ctx.db),
            }
            return 200, _encode(probe)
        route = ROUTES.get((method, split.path))
        if route is None:
            return _error(404, "not_found", split.path)
        try:
            term = auth.authenticate(method, target, body, headers)
            roles.require(term, route)
            out = self._serve(ctx, term, split.path, split.query, body)
        except YktError as exc:
            return _error(exc.http_status, exc.code, str(exc))
        except (msgspec.ValidationError, ValueError) as exc:  # the models' own refusals
            return _error(422, "invalid", str(exc)[:200])
        return 200, _encode(out)

    def _serve(
        self, ctx: Context, term: dict[str, Any], path: str, query: str, body: bytes
    ) -> Struct | dict[str, Any]:
        """The service's answer, as the route returns it (the route's ``to_json`` of it is
        what :func:`_encode` writes)."""
        if path == "/v1/pos/authorize":
            req = AuthorizeIn.model_validate_json(body)
            return authorize.authorize(ctx, term, req.model_dump())
        if path == "/v1/journal":
            push = JournalIn.model_validate_json(body)
            return ingest.push(ctx, term, push.records, push.acked)
        if path == "/v1/feed":
            q = parse_qs(query)
            since = int(q.get("since", ["0"])[0])
            if "head" in q:  # what the route does (sync/server/app.py)
                acked = int(q["acked"][0]) if "acked" in q else None
                merchants.report_head(ctx, term["id"], int(q["head"][0]), acked)
            return feed.delta(ctx, term, since)  # a long poll answers at once here
        return ctx.card_keys.for_role(term["role"]).to_dict()
