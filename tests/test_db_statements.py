"""Every SQL statement of the code, on both engines: the SQL is written once, in the subset that
SQLite and PostgreSQL both accept as written (docs/database.md), and nothing translates it, so
a statement only one engine accepts must not get in.

The statements are found by reading the code (``ast``): every string constant that starts with
``SELECT``, ``INSERT``, ``UPDATE``, ``DELETE``, ``WITH``, ``CREATE``, ``ALTER`` or ``DROP``, every
f-string that does (its ``{placeholders(…)}`` and ``{value_rows(…)}`` filled in), and
module-level constants built at import (edge/cache.py's upserts).  Each is prepared, not run,
against freshly migrated databases (the server's schema, the terminal's, tests/test_db.py's)
on SQLite (``EXPLAIN``) and on PostgreSQL (a protocol-level prepare: parsed and type-checked).  A statement of the code
must be accepted by both engines in the same schemas; a statement in a test must at least be
judged alike by both (tests also hold deliberately broken SQL).  Table definitions are run:
migrations by migrating, other ones in a transaction that is rolled back.

The migrations' text was rewritten when the translator went (``{int}``, ``{text}``, … for the
column types); tests/data/schemas/ holds the schemas they made before, read from each engine's
catalog (tests/schemas.py), and a fresh database must still get exactly those.
"""

from __future__ import annotations

import ast
import importlib
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge import cache, journal, receipts
from edge.kiosk import orders as kiosk_orders
from sim import paygate as sim_paygate
from sync.db import Database, Migrations
from sync.db.backend import fill_types
from sync.db.sqlite import TYPES as SQLITE_TYPES
from sync.errors import StoreError
from sync.server.schema import MIGRATIONS as SERVER
from tests import dbs, schemas, test_db

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("sync", "edge", "sim", "tests")
SQL_START = re.compile(r"\s*(SELECT|INSERT|UPDATE|DELETE|WITH|CREATE|ALTER|DROP)\s")

#: modules whose SQL is one engine's own, by design
ENGINE_OWN = {
    "sync/db/sqlite.py": "the SQLite backend: PRAGMAs, its multi-row INSERT",
    "sync/db/postgres.py": "the PostgreSQL backend: catalog queries, COPY, setval",
    "sim/harness/pg.py": "creates and drops PostgreSQL databases",
    "sim/bench/sqlite_floor.py": "measures raw SQLite through sqlite3, not sync.db",
    "tests/schemas.py": "reads each engine's catalog",
    "sim/fleet/run.py": "the fleet simulator's checker: its server is always SQLite on a file "
    "(sim/fleet/server.py), read by rowid to see what the ledger gained since the last step",
    "tests/test_db_statements.py": "this test",
    "tests/test_group_commit.py": "reads PostgreSQL's WAL positions (its own cluster)",
}

#: SQL in the code that is only a piece of a statement put together at run time, with where the
#: whole statement is run on both engines (checked to still exist)
PIECES = {
    ("sync/server/queries.py", "SELECT * FROM ("): (
        "_page(): SELECT * FROM (… UNION ALL …) AS u, from the statements above it "
        "(tests/test_holder_business.py on both databases)"
    ),
    ("edge/cache.py", "INSERT INTO {table}"): (
        "_upsert(): its statements are module constants (UPSERT_*), checked here as such"
    ),
    ("sync/db/backend.py", "INSERT INTO {table}"): (
        "values_insert(): the multi-row INSERT of Tx.insert_rows/insert_statement (journal "
        "records and transfers: tests/test_server_ingest.py on both databases)"
    ),
}

#: tests whose SQL is one engine's own on purpose (decorators included)
ON_PURPOSE = {
    ("tests/test_db.py", "test_sqlite_only_sql_fails_on_postgresql_with_a_store_error"),
    ("tests/test_db.py", "test_column_types_are_filled_in_by_the_backend"),
    ("tests/test_db.py", "test_postgresql_swaps_parameter_marks_outside_literals"),
    (
        "tests/test_db.py",
        "test_a_pooled_connection_found_dead_is_replaced_without_losing_the_transaction",
    ),
    # a migration step run on PostgreSQL only (it drops constraints SQLite cannot name); every
    # PostgreSQL test database runs it
    ("sync/server/schema.py", "_transfers_checked_by_the_ledger"),
}

#: the schemas a statement may be meant for: a fresh database migrated with these
SCHEMAS: dict[str, list[Migrations]] = {
    "server": [SERVER],
    "terminal": [
        journal.MIGRATIONS,
        cache.MIGRATIONS,
        receipts.MIGRATIONS,
        kiosk_orders.MIGRATIONS,
    ],
    "test_db": [test_db.SCHEMA],
    "paygate": [sim_paygate.MIGRATIONS],  # the stand-in payment provider's own database
}


@dataclass(frozen=True)
class Statement:
    where: str  # path:line
    sql: str

    @property
    def path(self) -> str:
        return self.where.rsplit(":", 1)[0]

    @property
    def in_tests(self) -> bool:
        return self.path.startswith("tests/")

    @property
    def ddl(self) -> bool:
        return self.sql.split(None, 1)[0] in ("CREATE", "ALTER", "DROP")


def _fstring(node: ast.JoinedStr) -> str | None:
    """The f-string with ``{placeholders(…)}`` as one ``?`` and ``{value_rows(…, width)}`` as
    one row of ``width`` of them; None if it has other parts."""
    out = []
    for part in node.values:
        if isinstance(part, ast.Constant):
            out.append(str(part.value))
        elif (
            isinstance(part, ast.FormattedValue)
            and isinstance(part.value, ast.Call)
            and isinstance(part.value.func, ast.Name)
            and part.value.func.id == "placeholders"
        ):
            out.append("?")
        elif (
            isinstance(part, ast.FormattedValue)
            and isinstance(part.value, ast.Call)
            and isinstance(part.value.func, ast.Name)
            and part.value.func.id == "value_rows"
            and len(part.value.args) == 2
            and isinstance(part.value.args[1], ast.Constant)
            and isinstance(part.value.args[1].value, int)
        ):
            out.append("(" + ", ".join("?" * part.value.args[1].value) + ")")
        else:
            return None
    return "".join(out)


def _computed_constants(rel: str, tree: ast.Module) -> Iterator[Statement]:
    """Module-level SQL built at import (not a plain string constant)."""
    names = [
        (t.id, node.lineno)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Call | ast.JoinedStr | ast.BinOp)
        for t in node.targets
        if isinstance(t, ast.Name) and t.id.isupper()
    ]
    if not names or rel.startswith("tests/"):
        return
    module = importlib.import_module(rel[:-3].replace("/", "."))
    for name, line in names:
        value = getattr(module, name, None)
        if isinstance(value, str) and SQL_START.match(value):
            yield Statement(f"{rel}:{line}", value.strip())


def collect() -> tuple[list[Statement], set[tuple[str, str]]]:
    """Every statement of the code, and the PIECES found."""
    found: list[Statement] = []
    pieces: set[tuple[str, str]] = set()
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in ENGINE_OWN:
                continue
            tree = ast.parse(path.read_text(), rel)
            skip = (
                {  # the parts of f-strings (read as a whole) and docstrings
                    id(v)
                    for node in ast.walk(tree)
                    if isinstance(node, ast.JoinedStr)
                    for v in node.values
                }
                | {
                    id(node.body[0].value)
                    for node in ast.walk(tree)
                    if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
                    and node.body
                    and isinstance(node.body[0], ast.Expr)
                }
                | {  # module constants built at import: read from the module (_computed_constants)
                    id(node.value)
                    for node in tree.body
                    if isinstance(node, ast.Assign)
                    and isinstance(node.value, ast.JoinedStr)
                    and all(isinstance(t, ast.Name) and t.id.isupper() for t in node.targets)
                }
            )
            for fn in tree.body:
                if isinstance(fn, ast.FunctionDef) and (rel, fn.name) in ON_PURPOSE:
                    skip |= {id(n) for d in [*fn.decorator_list, fn] for n in ast.walk(d)}
            for node in ast.walk(tree):
                if id(node) in skip:
                    continue
                if isinstance(node, ast.JoinedStr):
                    first = node.values[0] if node.values else None
                    if not (isinstance(first, ast.Constant) and SQL_START.match(str(first.value))):
                        continue
                    sql = _fstring(node)
                    if sql is None:
                        key = (rel, ast.get_source_segment(path.read_text(), node) or "")
                        hit = [p for p in PIECES if p[0] == rel and p[1] in key[1]]
                        assert hit, f"{rel}:{node.lineno}: an f-string of SQL this test cannot read"
                        pieces.update(hit)
                        continue
                    found.append(Statement(f"{rel}:{node.lineno}", sql.strip()))
                elif (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and SQL_START.match(node.value)
                ):
                    sql = node.value.strip()
                    if (rel, sql) in PIECES:
                        pieces.add((rel, sql))
                        continue
                    found.append(Statement(f"{rel}:{node.lineno}", sql))
            found.extend(_computed_constants(rel, tree))
    return found, pieces


# -- preparing a statement on each engine -------------------------------------------------------
def sqlite_accepts(conn: sqlite3.Connection, sql: str) -> str | None:
    """None if SQLite compiles the statement, else its error (EXPLAIN: compiled, not run)."""
    try:
        conn.execute("EXPLAIN " + sql).fetchall()
    except sqlite3.ProgrammingError as exc:
        if "binding" in str(exc) or "supplied" in str(exc):
            return None  # compiled; only the parameters were missing
        return str(exc)
    except sqlite3.Error as exc:
        return str(exc)
    return None


_PG_MARK = re.compile(r"%%|%s|%\((\w+)\)s")


def pg_numbered(sql: str) -> str:
    """The statement as PostgreSQL's protocol takes it: ``$1``, ``$2`` … for the marks."""
    from sync.db.postgres import pg_params

    names: dict[str, int] = {}
    count = 0

    def number(m: re.Match[str]) -> str:
        nonlocal count
        if m.group() == "%%":
            return "%"
        if m.group(1) is not None:
            if m.group(1) not in names:
                count += 1
                names[m.group(1)] = count
            return f"${names[m.group(1)]}"
        count += 1
        return f"${count}"

    return _PG_MARK.sub(number, pg_params(sql))


def pg_accepts(conn: object, sql: str) -> str | None:
    """None if PostgreSQL parses and type-checks the statement (prepared, not run)."""
    import psycopg

    assert isinstance(conn, psycopg.Connection)
    res = conn.pgconn.prepare(b"", pg_numbered(sql).encode())
    if res.status == psycopg.pq.ExecStatus.COMMAND_OK:
        return None
    return (res.error_message or b"?").decode().strip()


def _migrated_sqlite(tmp: Path, name: str) -> Path:
    path = tmp / f"{name}.db"
    db = Database(path)
    for m in SCHEMAS[name]:
        db.migrate(m)
    db.close()
    return path


def _migrated_pg(name: str) -> str:
    url = dbs.cluster().create_database()
    dbs.created.append(url)
    db = Database(url)
    for m in SCHEMAS[name]:
        db.migrate(m)
    db.close()
    return url


def _run_ddl_sqlite(sql: str) -> str | None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        conn.execute("BEGIN")
        for stmt in fill_types(sql, SQLITE_TYPES).split(";"):
            if stmt.strip():
                conn.execute(stmt)
        conn.execute("ROLLBACK")
    except (sqlite3.Error, StoreError) as exc:
        return str(exc)
    finally:
        conn.close()
    return None


def _run_ddl_pg(url: str, sql: str) -> str | None:
    import psycopg

    from sync.db import postgres

    with psycopg.connect(url, autocommit=True) as conn:
        try:
            conn.execute("BEGIN")
            for stmt in fill_types(sql, postgres.TYPES).split(";"):
                if stmt.strip():
                    conn.execute(stmt)
        except (psycopg.Error, StoreError) as exc:
            return str(exc).strip()
        finally:
            conn.execute("ROLLBACK")
    return None


def test_the_statements_are_found() -> None:
    """The collection itself: it sees the statements it must (a change to how the code holds
    its SQL must not make them invisible here), and every PIECES entry still exists."""
    found, pieces = collect()
    sqls = {s.sql for s in found}
    assert len(found) > 200
    assert cache.UPSERT_ACCOUNT in sqls and journal.INSERT in sqls and cache.SELECT_CARD in sqls
    assert any(
        s.startswith("SELECT id, balance FROM ledger_accounts WHERE id IN (?)") for s in sqls
    )
    assert pieces == set(PIECES)
    scripts = [s for m in (m for ms in SCHEMAS.values() for m in ms) for s in m.scripts]
    assert all(any(s.strip() == x.strip() for x in sqls) for s in scripts)


@pytest.mark.postgres
def test_every_statement_runs_on_both_engines(tmp_path: Path, db_kind: str) -> None:
    import psycopg

    found, _ = collect()
    scripts = {
        s.strip() for ms in SCHEMAS.values() for m in ms for s in m.scripts
    }  # run by migrating, below
    lite = {n: sqlite3.connect(_migrated_sqlite(tmp_path, n)) for n in SCHEMAS}
    urls = {n: _migrated_pg(n) for n in SCHEMAS}
    pg = {n: psycopg.connect(u, autocommit=True) for n, u in urls.items()}
    scratch = dbs.cluster().create_database()
    dbs.created.append(scratch)
    problems: list[str] = []
    try:
        for st in found:
            if st.sql in scripts:
                continue
            if st.ddl:
                a, b = _run_ddl_sqlite(st.sql), _run_ddl_pg(scratch, st.sql)
                ok_lite, ok_pg = (
                    {"scratch"} if a is None else set(),
                    {"scratch"} if b is None else set(),
                )
                why = f"SQLite: {a}; PostgreSQL: {b}"
            else:
                errs_lite = {n: sqlite_accepts(c, st.sql) for n, c in lite.items()}
                errs_pg = {n: pg_accepts(c, st.sql) for n, c in pg.items()}
                ok_lite = {n for n, e in errs_lite.items() if e is None}
                ok_pg = {n for n, e in errs_pg.items() if e is None}
                why = "; ".join(
                    f"{n}: SQLite {errs_lite[n] or 'ok'} / PostgreSQL {errs_pg[n] or 'ok'}"
                    for n in SCHEMAS
                )
            if ok_lite != ok_pg or (not ok_lite and not st.in_tests):
                problems.append(f"{st.where}: {st.sql[:160]}\n    {why}")
    finally:
        for c in lite.values():
            c.close()
        for p in pg.values():
            p.close()
    assert problems == [], "\n".join(problems)


# -- the migrations make the schema they always made ---------------------------------------------
@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_migrations_make_the_same_schema_on_sqlite(tmp_path: Path, name: str) -> None:
    path = _migrated_sqlite(tmp_path, name)
    assert schemas.dump_sqlite(path) == (schemas.DATA / f"{name}.sqlite.txt").read_text()


@pytest.mark.postgres
@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_migrations_make_the_same_schema_on_postgresql(name: str, db_kind: str) -> None:
    url = _migrated_pg(name)
    assert schemas.dump_postgres(url) == (schemas.DATA / f"{name}.postgres.txt").read_text()


# -- rules a prepare cannot see (docs/database.md) -------------------------------------------
_LIKE = re.compile(r"\bLIKE\b", re.IGNORECASE)
_LOWER_LIKE = re.compile(r"\bLOWER\([^()]*\)\s+(?:NOT\s+)?LIKE\b", re.IGNORECASE)


def test_like_is_written_case_blind() -> None:
    """SQLite's LIKE ignores ASCII case, PostgreSQL's does not: the code says
    ``LOWER(x) LIKE ?`` (with a lower-case pattern), the same on both."""
    found, _ = collect()
    bad = [
        f"{s.where}: {s.sql[:120]}"
        for s in found
        if len(_LIKE.findall(s.sql)) != len(_LOWER_LIKE.findall(s.sql))
    ]
    assert bad == []


_INSERT = re.compile(r"^INSERT INTO (\w+) \(([^)]*)\)", re.IGNORECASE)


def test_no_table_both_generates_ids_and_is_given_them_by_a_plain_insert(tmp_path: Path) -> None:
    """A row given its ``{id}`` by a plain INSERT would leave PostgreSQL's identity behind
    (SQLite's rowid moves past it), and a later generated id would clash.  So a table whose ids
    the database generates gets given ids only through ``Tx.insert_rows``."""
    found, _ = collect()
    ids: dict[tuple[str, str], str] = {}  # (schema, table) -> its {id} column
    conns = {n: sqlite3.connect(_migrated_sqlite(tmp_path, n)) for n in SCHEMAS}
    for name, conn in conns.items():
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            pk = [r for r in conn.execute(f'PRAGMA table_info("{table}")') if r[5]]
            if len(pk) == 1 and pk[0][2] == "INTEGER":
                ids[name, table] = pk[0][1]
    given: dict[tuple[str, str], list[str]] = {}
    generated: dict[tuple[str, str], list[str]] = {}
    for s in found:
        m = _INSERT.match(s.sql)
        if m is None:
            continue
        cols = [c.strip() for c in m.group(2).split(",")]
        for name, conn in conns.items():
            key = (name, m.group(1))
            if key in ids and sqlite_accepts(conn, s.sql) is None:
                (given if ids[key] in cols else generated).setdefault(key, []).append(s.where)
    for conn in conns.values():
        conn.close()
    assert {t: (given[t], generated[t]) for t in given.keys() & generated.keys()} == {}
    assert ("server", "accounts") in generated and ("terminal", "journal") in given
