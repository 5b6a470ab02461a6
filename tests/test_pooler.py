"""Through a real PgBouncer: the writing commands work correctly through a transaction- or
a session-mode pooler, and leave nothing on a pooled server connection.

1.1.0 behind PgBouncer in transaction mode: two upgrades both ran the backfill, the lock
stayed on an idle server connection, and 28-37% of the application's transactions ran with
the tool's settings. Here the lock is held in a transaction of its own and every setting
is SET LOCAL: an application using the same pooler meanwhile never sees either.
"""

from __future__ import annotations

import signal
import threading

import psycopg2
from sqlalchemy import text

from bench.generate import generate
from enrollments_phase1 import lock
from enrollments_phase1.errors import EX_INTERRUPTED
from tests.helpers import (
    HEAD,
    Background,
    alembic,
    enrollments,
    libpq_url,
    psql,
    upgrade,
    url_string,
    wait_until,
)


class Application(threading.Thread):
    """Short transactions through the pooler, each reading the settings and advisory locks
    of whatever server connection it was given, until stopped."""

    def __init__(self, url) -> None:
        super().__init__(daemon=True)
        self.url = libpq_url(url)
        self.stop_event = threading.Event()
        self.seen: list[tuple] = []

    def run(self) -> None:
        conn = psycopg2.connect(self.url, application_name="application")
        cur = conn.cursor()
        while not self.stop_event.is_set():
            cur.execute(
                "SELECT current_setting('lock_timeout'), current_setting('statement_timeout'),"
                " current_setting('search_path'),"
                " (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                "  AND pid = pg_backend_pid())"
            )
            self.seen.append(cur.fetchone())
            conn.commit()
        conn.close()

    def finish(self) -> list[tuple]:
        self.stop_event.set()
        self.join(30)
        return self.seen


NO_ADVISORY_LOCK = """SELECT count(*) = 0 FROM pg_locks WHERE locktype = 'advisory'
AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"""


def no_advisory_lock_left(engine) -> bool:
    """Nothing holds an advisory lock in this database once the pooler has closed the
    server connections of clients that went away (it does so as it notices them: waited
    for on pg_locks, not assumed the moment a client exits)."""
    return bool(wait_until(engine, NO_ADVISORY_LOCK, timeout=30))


def test_the_writers_leave_nothing_on_pooled_connections(pg_server, poolers, database_url, story):
    pooled = poolers.transaction.url(database_url)
    with story.connect() as conn:
        defaults = tuple(
            conn.execute(text(f"SELECT current_setting('{name}')")).scalar()
            for name in ("lock_timeout", "statement_timeout", "search_path")
        )
    app = Application(pooled)
    app.start()
    try:
        first = alembic(pooled, "upgrade", "0003")
        assert first.returncode == 0, first.stdout + first.stderr
        assert "connected through a connection pooler" in first.stderr
        command = enrollments(pooled, "backfill", "--commit", "--batch-size", "2")
        assert command.returncode == 0, command.stderr
        assert "connected through a connection pooler" in command.stderr
        for read_only in (enrollments(pooled, "audit"), alembic(pooled, "current")):
            assert "connection pooler" not in read_only.stdout + read_only.stderr
        script = alembic(None, "upgrade", "0003:head", "--sql").stdout
        applied = psql(pg_server, pooled, script)
        assert applied.returncode == 0, applied.stderr
        last = alembic(pooled, "downgrade", "0004")
        assert last.returncode == 0, last.stdout + last.stderr
    finally:
        seen = app.finish()
    assert len(seen) > 50
    leaked = [row for row in seen if row[:3] != defaults or row[3]]
    assert leaked == [], f"{len(leaked)} of {len(seen)} transactions saw: {leaked[:3]}"
    assert no_advisory_lock_left(story)
    assert alembic(database_url, "current").stdout.strip() == "0004"


def test_two_upgrades_through_a_transaction_pooler_one_applies(poolers, database_url, story):
    pooled = poolers.transaction.url(database_url)
    with story.connect() as holder:  # hold the lock, so both start and wait behind it
        holder.execute(text(lock.TRY_SQL))
        runs = [Background(["alembic", "upgrade", "head"], url_string(pooled)) for _ in range(2)]
        for run in runs:
            assert "held by pid" in run.wait_for("waiting for the enrollments lock")
        holder.rollback()
        results = [run.finish() for run in runs]
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    assert sum("Running upgrade 0003 -> 0004" in r.stderr for r in results) == 1
    assert alembic(database_url, "current").stdout.strip() == f"{HEAD} (head)"
    with story.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM enrollment_backfill_runs")).scalar() == 1
    assert no_advisory_lock_left(story)


def test_session_pooling_keeps_working(poolers, database_url, story):
    pooled = poolers.session.url(database_url)
    result = alembic(pooled, "upgrade", "head")
    assert result.returncode == 0, result.stdout + result.stderr
    audit = enrollments(pooled, "audit")
    assert audit.returncode == 1, audit.stderr
    assert no_advisory_lock_left(story)


def test_ctrl_c_through_the_pooler_stops_the_backfill(poolers, database_url, legacy):
    with legacy.begin() as conn:
        generate(conn, 400)
    upgrade(legacy, "0003")
    pooled = poolers.transaction.url(database_url)
    run = Background(
        ["enrollments", "backfill", "--commit", "--batch-size", "2"], url_string(pooled)
    )
    wait_until(  # a batch has committed; hundreds are left
        legacy, "SELECT checkpoint > 0 FROM enrollment_backfill_runs ORDER BY id DESC LIMIT 1"
    )
    run.proc.send_signal(signal.SIGINT)
    result = run.finish(timeout=30)
    assert result.returncode == EX_INTERRUPTED, result.stdout + result.stderr
    with legacy.connect() as conn:
        assert conn.execute(
            text(
                "SELECT finished_at IS NULL FROM enrollment_backfill_runs ORDER BY id DESC LIMIT 1"
            )
        ).scalar()
    assert no_advisory_lock_left(legacy)


def test_a_statement_mode_pooler_is_refused_at_once(pg_server, poolers, database_url, story):
    """Statement pooling allows no transaction of two statements: every writer refuses
    before changing anything, saying why and how to connect."""
    from enrollments_phase1.errors import EX_CONFIG
    from tests.helpers import snapshot

    before = snapshot(story)
    pooled = poolers.statement.url(database_url)
    for result in (alembic(pooled, "upgrade", "head"), enrollments(pooled, "backfill", "--commit")):
        lines = (result.stdout + result.stderr).strip().splitlines()
        assert result.returncode != 0 and len(lines) == 1, lines
        assert "the connection pooler runs in statement mode" in lines[0]
    assert enrollments(pooled, "audit").returncode == EX_CONFIG
    script = alembic(None, "upgrade", "0001:head", "--sql").stdout
    assert psql(pg_server, pooled, script).returncode != 0
    assert snapshot(story) == before
    assert alembic(database_url, "current").stdout.strip() == "0001"


def test_a_pool_of_one_is_found_before_anything_starts(poolers, database_url, story):
    # The lock session holds the only server connection: 1.2.0's every other query queued
    # in PgBouncer (122 s to query_wait_timeout, on every re-run).
    from enrollments_phase1.errors import EX_CONFIG
    from tests.helpers import snapshot

    before = snapshot(story)
    pooled = poolers.transaction_pool(1).url(database_url)
    upgraded = alembic(pooled, "upgrade", "head")
    line = [x for x in (upgraded.stdout + upgraded.stderr).splitlines() if "FAILED" in x]
    assert upgraded.returncode != 0 and len(line) == 1, upgraded.stdout + upgraded.stderr
    assert "the connection pooler gives this run 1 server connection at once" in line[0]
    assert "it needs 3: the enrollments lock's session, the migration's, and one" in line[0]
    assert "Set this database's pool to at least 3" in line[0]
    upgrade(story, "0003")
    backfilled = enrollments(pooled, "backfill", "--commit")
    assert backfilled.returncode == EX_CONFIG, backfilled.stderr
    assert "gives this run 1 server connection at once" in backfilled.stderr
    assert "it needs 2: the enrollments lock's session and the backfill's" in backfilled.stderr
    assert snapshot(story) == before
    assert alembic(database_url, "current").stdout.strip() == "0003"
    assert no_advisory_lock_left(story)


def test_a_pool_of_two_builds_no_index_but_backfills(poolers, database_url, story):
    # Two server connections: the index build's watcher would queue (1.2.0 printed no
    # waiting report, and the application stalled); the backfill needs only two.
    pooled = poolers.transaction_pool(2).url(database_url)
    upgraded = alembic(pooled, "upgrade", "head")
    assert upgraded.returncode != 0
    assert "gives this run 2 server connections at once" in upgraded.stdout + upgraded.stderr
    assert "at least 3" in upgraded.stdout + upgraded.stderr
    assert alembic(database_url, "current").stdout.strip() == "0001"
    assert alembic(database_url, "upgrade", "0002").returncode == 0  # the index, directly
    assert alembic(pooled, "upgrade", "0003").returncode == 0  # built: two are enough
    backfilled = enrollments(pooled, "backfill", "--commit")
    assert backfilled.returncode == 0, backfilled.stderr
    assert alembic(pooled, "upgrade", "head").returncode == 0
    assert alembic(database_url, "current").stdout.strip() == f"{HEAD} (head)"


def test_ctrl_c_ends_a_query_queued_in_the_pooler(poolers, database_url, legacy):
    # A pool of 2: the lock session holds one server connection, the backfill's batches the
    # other between their transactions, until the application takes it and keeps it (an
    # idle transaction). The next batch then queues in PgBouncer, where no cancel request
    # reaches it: 1.2.0 ignored two Ctrl-C and needed kill -9.
    import time

    with legacy.begin() as conn:
        generate(conn, 400)
    upgrade(legacy, "0003")
    pool = poolers.transaction_pool(2, "admin_users = postgres")
    console = psycopg2.connect(libpq_url(pool.url(database_url).set(database="pgbouncer")))
    console.autocommit = True
    run = Background(
        ["enrollments", "backfill", "--commit", "--batch-size", "2"],
        url_string(pool.url(database_url)),
    )
    idle = None
    try:
        wait_until(  # a batch has committed; hundreds are left
            legacy, "SELECT checkpoint > 0 FROM enrollment_backfill_runs ORDER BY id DESC LIMIT 1"
        )
        idle = psycopg2.connect(libpq_url(pool.url(database_url)), application_name="idle app")
        idle.cursor().execute("SELECT 1")  # in a transaction: it keeps its server connection
        deadline = time.monotonic() + 60
        while waiting_in_pooler(console, database_url.database) == 0:  # PgBouncer's count
            assert time.monotonic() < deadline and run.proc.poll() is None
            time.sleep(0.05)  # a poll interval, not an ordering
        sent = time.monotonic()
        run.proc.send_signal(signal.SIGINT)
        result = run.finish(timeout=30)
        took = time.monotonic() - sent
    finally:
        if idle is not None:
            idle.rollback()
            idle.close()
        console.close()
        if run.proc.poll() is None:
            run.proc.kill()
    assert result.returncode == EX_INTERRUPTED, result.stdout + result.stderr
    assert took < 6, took
    assert no_advisory_lock_left(legacy)


def waiting_in_pooler(console, database: str) -> int:
    """Clients of ``database`` waiting in PgBouncer's queue for a server connection (its
    admin console's SHOW POOLS): what pg_stat_activity cannot show."""
    cursor = console.cursor()
    cursor.execute("SHOW POOLS")
    names = [d[0] for d in cursor.description]
    rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    return sum(int(r["cl_waiting"]) for r in rows if r["database"] == database)


# --- the index build through a pooler ---------------------------------------------------
def _old_snapshot(database_url):
    """A REPEATABLE READ report holding a snapshot (on a direct connection): a concurrent
    index build waits for it to end."""
    report = psycopg2.connect(libpq_url(database_url), application_name="a long report")
    report.set_session(isolation_level="REPEATABLE READ")
    report.cursor().execute("SELECT count(*) FROM group_members")
    return report


def test_the_index_build_through_a_pooler_outlasts_the_servers_lock_timeout(
    poolers, database_url, story
):
    # A managed database's lock_timeout (here the database's, 1 s): 1.2.0's build failed
    # in 2 s, never retried; -x lock_timeout cannot reach it through a pooler.
    with story.connect() as conn:
        conn.execute(text(f"ALTER DATABASE \"{database_url.database}\" SET lock_timeout = '1s'"))
        conn.commit()
    report = _old_snapshot(database_url)
    try:
        run = Background(
            ["alembic", "upgrade", "0002"], url_string(poolers.transaction.url(database_url))
        )
        first = run.wait_for("through the pooler: it runs with the server's lock_timeout")
        assert "(1s, set for the database)" in first
        assert "retrying" in run.wait_for("ended it (attempt 1); retrying")
    finally:
        report.rollback()
        report.close()
    result = run.finish()
    assert result.returncode == 0, result.stderr
    with story.connect() as conn:
        valid = conn.execute(
            text(
                "SELECT indisvalid FROM pg_index WHERE indexrelid ="
                " to_regclass('ix_course_enrollment_course_active')"
            )
        ).scalar()
    assert valid is True
    assert alembic(database_url, "current").stdout.strip() == "0002"


def test_an_index_build_a_servers_statement_timeout_stops_says_what_to_change(
    poolers, database_url, story
):
    with story.connect() as conn:
        conn.execute(
            text(f"ALTER DATABASE \"{database_url.database}\" SET statement_timeout = '1s'")
        )
        conn.commit()
    report = _old_snapshot(database_url)
    try:
        result = alembic(
            poolers.transaction.url(database_url),
            "-x",
            "statement_timeout=10min",
            "upgrade",
            "0002",
        )
    finally:
        report.rollback()
        report.close()
    assert result.returncode != 0
    line = result.stdout.strip().splitlines()[-1]  # Alembic's FAILED line
    assert line.startswith("FAILED: building ix_course_enrollment_course_active: through")
    assert "the server's statement_timeout (1s, set for the database)" in line, line
    assert "which -x statement_timeout cannot change" in line
    assert "on a direct connection to the server" in line
    assert f'IN DATABASE "{database_url.database}" SET statement_timeout = 0' in line
    assert alembic(database_url, "current").stdout.strip() == "0001"
