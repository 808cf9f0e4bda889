"""The schema a set of migrations leaves behind, as text a test can compare: read from the
engine's own catalog (SQLite's ``sqlite_master`` and ``PRAGMA table_info``, PostgreSQL's
``pg_catalog``), never from our SQL.

``tests/data/schemas/`` holds the schemas the migrations made before the SQL translator was
retired (``python -m tests.schemas`` wrote them, at commit 2d7741c); tests/test_db_statements.py
checks that a fresh database still gets exactly those, on both engines.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

DATA = Path(__file__).parent / "data" / "schemas"


def _words(sql: str | None) -> str:
    return " ".join((sql or "").split())


def dump_sqlite(path: Path | str) -> str:
    """Every table, index and column of a SQLite database file, one line each, sorted."""
    conn = sqlite3.connect(str(path))
    try:
        lines = []
        for kind, name, table, sql in conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master "
            "WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name"
        ):
            lines.append(f"{kind} {name} on {table}: {_words(sql)}")
            if kind == "table":
                for cid, col, typ, notnull, default, pk in conn.execute(
                    f'PRAGMA table_info("{name}")'
                ):
                    lines.append(
                        f"  column {table}.{col} #{cid} {typ} notnull={notnull} "
                        f"default={default} pk={pk}"
                    )
        return "\n".join(lines) + "\n"
    finally:
        conn.close()


def dump_postgres(url: str) -> str:
    """Every table, column (type, nullability, default, collation, identity), constraint and
    index of a PostgreSQL database's current schema, one line each, sorted."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cols = conn.execute(
            "SELECT c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), "
            "a.attnotnull, pg_get_expr(d.adbin, d.adrelid), co.collname, a.attidentity "
            "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
            "LEFT JOIN pg_collation co ON co.oid = a.attcollation "
            "AND a.attcollation <> 100 "  # the database's default collation: no name
            "WHERE c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped "
            "AND c.relnamespace = current_schema()::regnamespace ORDER BY 1, 2"
        ).fetchall()
        cons = conn.execute(
            "SELECT c.relname, k.conname, pg_get_constraintdef(k.oid) FROM pg_constraint k "
            "JOIN pg_class c ON c.oid = k.conrelid "
            "WHERE c.relnamespace = current_schema()::regnamespace ORDER BY 1, 2"
        ).fetchall()
        idx = conn.execute(
            "SELECT tablename, indexname, indexdef FROM pg_indexes "
            "WHERE schemaname = current_schema() ORDER BY 1, 2"
        ).fetchall()
    lines = []
    for table, num, name, typ, notnull, default, coll, ident in cols:
        lines.append(
            f"column {table}.{name} #{num} {typ} notnull={notnull} default={default} "
            f"collation={coll} identity={ident or '-'}"
        )
    lines += [f"constraint {t}.{n}: {d}" for t, n, d in cons]
    lines += [f"index {t}.{n}: {d}" for t, n, d in idx]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Write the schemas of today's migrations into tests/data/schemas/."""
    import tempfile

    from edge import cache, journal, receipts
    from edge.kiosk import orders as kiosk_orders
    from sim import paygate
    from sync.db import Database, Migrations
    from sync.server.schema import MIGRATIONS
    from tests import dbs, test_db

    sets: dict[str, list[Migrations]] = {
        "server": [MIGRATIONS],
        "terminal": [
            journal.MIGRATIONS,
            cache.MIGRATIONS,
            receipts.MIGRATIONS,
            kiosk_orders.MIGRATIONS,
        ],
        "test_db": [test_db.SCHEMA],
        "paygate": [paygate.MIGRATIONS],
    }
    DATA.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, migrations in sets.items():
            path = Path(tmp) / f"{name}.db"
            db = Database(path)
            for m in migrations:
                db.migrate(m)
            db.close()
            (DATA / f"{name}.sqlite.txt").write_text(dump_sqlite(path))
            url = dbs.cluster().create_database()
            db = Database(url)
            for m in migrations:
                db.migrate(m)
            db.close()
            (DATA / f"{name}.postgres.txt").write_text(dump_postgres(url))
    dbs.stop()


if __name__ == "__main__":
    main()
