from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests import dbs
from tests.helpers import PosProc, ServerProc
from tests.live import Live, open_live
from tests.posutil import Rig, Shop

# -- hypothesis: the same examples on every CI run, fresh ones on a developer's machine ------------
# ``CI=true`` (CI runs ``bash .ci/run`` with it) loads "ci": examples derived from each test's own
# source (derandomize), no example database, and no deadline or too-slow health check (a loaded
# 2-core machine must not turn a timing into a red build).  Elsewhere "dev": random examples,
# remembered in .hypothesis/ so that a failure found once is tried first on the next run.
#
# A failure hypothesis finds (on a developer's machine, or when a test's source changes) is
# kept: copy the falsifying example it prints into an ``@example(...)`` on the test (for the
# API fuzz test, a case in ``FOUND`` of tests/test_api_fuzz.py), so that every run, CI's
# included, tries it from then on.  ``HYPOTHESIS_PROFILE=ci|dev`` chooses a profile by hand.
settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("dev", print_blob=True)
_ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if _ci else "dev"))


#: Test modules of the central server that run on SQLite and again on PostgreSQL (tests/dbs.py).
#: A module-scoped fixture in them that starts a server must take ``db_kind`` as an argument, or
#: pytest keeps the SQLite one for the PostgreSQL round.
#: All of the server's own tests: together they take about 80 s on SQLite.  The POS, driver,
#: protocol and CLI tests run on SQLite only: their server is only the far end of the link.
BOTH_DBS = {
    "test_server_admin",
    "test_server_auth",
    "test_server_authorize",
    "test_server_card_risk",
    "test_server_conservation",
    "test_server_feed",
    "test_feed_share",
    "test_server_ingest",
    "test_server_recovery",
    "test_holder_business",
    "test_holder_login",
    "test_desk",
    "test_held_money",
    "test_crash_money",
    "test_access",
    "test_kiosk_card_present",
    "test_kiosk_server",
    "test_openapi",
    "test_api_fuzz",
    "test_conservation",
    "test_acceptance_holder",
    "test_sso",
    "test_trust_ident",
    "test_query_password",
    "test_read_then_write",
    "test_server_processes",
    "test_phone_codes_server",
    "test_bench_db",
    "test_db",
    "test_merchants_server",
    "test_till_refunds_held",
    "test_wire_bounds",
    "test_idempotency",
    "test_topups",
    "test_nonce_group",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--db",
        choices=("both", "sqlite", "postgres"),
        default=os.environ.get("YKT_TEST_DB", "both"),
        help="which databases the server tests run on (default both; env YKT_TEST_DB)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "db_kind" not in metafunc.fixturenames:
        return
    choice = metafunc.config.getoption("--db")
    if metafunc.definition.get_closest_marker("postgres"):
        kinds = ["postgres"] if choice != "sqlite" else []
    elif metafunc.module.__name__.rsplit(".", 1)[-1] in BOTH_DBS:
        kinds = list(dbs.KINDS) if choice == "both" else [choice]
    else:
        return
    metafunc.parametrize("db_kind", kinds, indirect=True, scope="module")


@pytest.fixture(scope="module", autouse=True)
def db_kind(request: pytest.FixtureRequest) -> Iterator[str]:
    """The database this module's servers use (``sqlite`` unless parametrized)."""
    kind = getattr(request, "param", "sqlite")
    dbs.set_current(kind)
    mark = len(dbs.created)
    yield kind
    dbs.drop_since(mark)
    dbs.set_current("sqlite")


@pytest.fixture(autouse=True)
def _drop_test_databases() -> Iterator[None]:
    mark = len(dbs.created)
    yield
    dbs.drop_since(mark)


@pytest.fixture(scope="session", autouse=True)
def _postgres_cluster() -> Iterator[None]:
    yield
    dbs.stop()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProc]:
    """A real `ykt server` on loopback with a fresh SQLite database."""
    s = ServerProc(tmp_path / "server").start()
    yield s
    s.stop()


@pytest.fixture
def pos(tmp_path: Path, server: ServerProc) -> Iterator[PosProc]:
    """A real `ykt pos` agent on a simulated reader, enrolled at `server`."""
    p = PosProc(tmp_path / "pos", server, token=server.enroll_token("canteen-1")).start()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory, db_kind: str) -> Iterator[ServerProc]:
    """One real `ykt server` shared by a test module whose tests each make their own accounts
    and terminals (starting a server per test would cost a second each)."""
    s = ServerProc(tmp_path_factory.mktemp("server") / "server").start()
    yield s
    s.stop()


@pytest.fixture
def rig(shop: Shop, tmp_path: Path) -> Iterator[Rig]:
    """The in-process engine (tests.posutil.Rig) enrolled at the server of the module's
    ``shop`` (tests/test_pos_engine.py, tests/test_pos_limit.py); a module with a rig of
    its own defines its own fixture."""
    r = Rig(shop[0], tmp_path / "rig")
    yield r
    r.close()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    """The real server app on loopback in this process (uvicorn in a thread)."""
    s = open_live(tmp_path / "live")
    yield s
    s.stop()
