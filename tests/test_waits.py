"""Every wait ends: a server that accepts the connection and never answers, and a lock the
application holds. Nobody queues long behind a lock request of the migration.

1.1.0 hung forever on a silent server (its interrupt handling made libpq connect
asynchronously, where connect_timeout no longer applied), and while it waited 5 s at a
time for a table lock the application's writes queued behind its request: 6 stalls of 5 s.
"""

from __future__ import annotations

import re
import socket
import threading
import time

import psycopg2
import pytest
from sqlalchemy import create_engine, text

from enrollments_phase1.errors import EX_UNAVAILABLE
from enrollments_phase1.lock import LOCK_KEY
from tests.cluster import Cluster, remove, workspace
from tests.helpers import (
    Background,
    alembic,
    enrollments,
    libpq_url,
    load_story,
    upgrade,
    wait_until,
)


@pytest.fixture
def silent_server():
    """A TCP port that accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"postgresql://nobody@127.0.0.1:{listener.getsockname()[1]}/school"
    finally:
        listener.close()
        for conn in accepted:
            conn.close()


def timed(run):
    started = time.monotonic()
    result = run()
    return result, time.monotonic() - started


@pytest.mark.parametrize(
    ("command", "env"),
    [
        (["enrollments", "audit"], {}),  # the default: 10 s
        (["alembic", "upgrade", "head"], {}),
        (["enrollments", "backfill", "--commit"], {"PGCONNECT_TIMEOUT": "2"}),
        (["alembic", "current"], {"PGCONNECT_TIMEOUT": "2"}),
    ],
    ids=["audit", "upgrade", "backfill", "current"],
)
def test_a_server_that_never_answers_ends_every_command(silent_server, command, env):
    from tests.helpers import run_command

    result, seconds = timed(lambda: run_command(command, silent_server, **env))
    output = (result.stdout + result.stderr).strip().splitlines()
    limit = float(env.get("PGCONNECT_TIMEOUT", 10))
    assert limit <= seconds < limit + 10, seconds
    assert len(output) == 1, output
    assert f"the server did not answer within {limit:g} s of connecting" in output[0]
    if command[0] == "alembic":
        assert output[0].startswith("FAILED: cannot connect")
        assert result.returncode != 0
    else:
        assert result.returncode == EX_UNAVAILABLE


def test_the_url_sets_the_connect_timeout(silent_server):
    result, seconds = timed(lambda: enrollments(silent_server + "?connect_timeout=1", "audit"))
    assert result.returncode == EX_UNAVAILABLE
    assert 1 <= seconds < 8, seconds
    assert "within 1 s of connecting" in result.stderr


# --- the application never queues long behind a lock request of the migration ------------
class Inserts(threading.Thread):
    """The application: a membership insert every 50 ms, each timed, until stopped."""

    def __init__(self, url) -> None:
        super().__init__(daemon=True)
        self.url = libpq_url(url)
        self.stop_event = threading.Event()
        self.latencies: list[float] = []

    def run(self) -> None:
        conn = psycopg2.connect(self.url, application_name="application")
        cur = conn.cursor()
        i = 0
        while not self.stop_event.wait(0.05):
            i += 1
            started = time.monotonic()
            cur.execute(
                "INSERT INTO users (school_id, email, name) VALUES (1, %s, 'New') RETURNING id",
                (f"new{i}@x",),
            )
            user = cur.fetchone()[0]
            cur.execute(
                "INSERT INTO group_members (school_id, group_id, user_id) VALUES (1, 3, %s)",
                (user,),
            )
            conn.commit()
            self.latencies.append(time.monotonic() - started)
        conn.close()


def test_the_application_never_queues_long_behind_the_trigger_install(database_url, story):
    """An idle transaction holds a row lock on group_members: installing the sync trigger
    (SHARE ROW EXCLUSIVE) asks for 500 ms at a time and lets go, naming who holds the
    table; the application's inserts, one every 50 ms, never wait 1 s; the upgrade
    completes once the idle transaction ends."""
    upgrade(story, "0003")
    idle = psycopg2.connect(libpq_url(database_url), application_name="idle report")
    idle.cursor().execute("UPDATE group_members SET role_in_team = 'x' WHERE id = 1")
    app = Inserts(database_url)
    app.start()
    try:
        run = Background(["alembic", "upgrade", "head"], database_url)
        for attempt in (1, 2, 3):
            line = run.wait_for(f"(attempt {attempt}); held by")
        assert "idle report, idle in transaction, transaction open for " in line
        idle_pid = idle.get_backend_pid()
        assert f"pid {idle_pid} (" in line
        idle.rollback()
        result = run.finish(timeout=120)
    finally:
        idle.close()
        app.stop_event.set()
        app.join(10)
    assert result.returncode == 0, result.stdout + result.stderr
    ordered = sorted(app.latencies)
    print(  # the figures, for the record (pytest -s)
        f"application inserts while the migration waited: {len(ordered)}, p50 "
        f"{ordered[len(ordered) // 2] * 1000:.1f} ms, p99 "
        f"{ordered[int(len(ordered) * 0.99)] * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms"
    )
    assert ordered and ordered[-1] < 1.0, ordered[-1]
    wait_until(
        story,
        "SELECT count(*) = 5 FROM pg_trigger WHERE tgname LIKE 'course_enrollments_sync_on_%'",
    )


def test_the_trigger_install_waits_one_lock_timeout_for_all_its_tables(database_url, story):
    """users, groups and courses each held by a report that ends 450 ms after the upgrade
    starts waiting for it. 1.2.0 waited a whole lock_timeout for each table in turn while
    holding group_members: the application's inserts there waited 2.5 s. Now an attempt
    waits one lock_timeout (500 ms) for all its tables together, then lets go."""
    upgrade(story, "0003")
    reports = {}
    for table in ("users", "groups", "courses"):
        conn = psycopg2.connect(libpq_url(database_url), application_name=f"report on {table}")
        conn.cursor().execute(f"LOCK TABLE {table} IN ROW EXCLUSIVE MODE")
        reports[table] = conn
    app = Inserts(database_url)
    app.start()
    waited_for = (
        "SELECT c.relname FROM pg_locks AS l JOIN pg_class AS c ON c.oid = l.relation"
        " JOIN pg_stat_activity AS a ON a.pid = l.pid WHERE NOT l.granted"
        " AND a.application_name = 'alembic' AND a.datname = current_database()"
    )
    try:
        run = Background(["alembic", "upgrade", "head"], database_url)
        seen: dict[str, float] = {}
        deadline = time.monotonic() + 60
        with story.connect() as watcher:
            while reports and time.monotonic() < deadline:
                for (table,) in watcher.execute(text(waited_for)).all():
                    seen.setdefault(table, time.monotonic())
                for table in [t for t in reports if t in seen]:
                    if time.monotonic() - seen[table] >= 0.45:  # the report's own length
                        reports.pop(table).rollback()
                watcher.rollback()
                time.sleep(0.01)
        assert not reports, f"never waited for {sorted(reports)}"
        result = run.finish(timeout=120)
    finally:
        for conn in reports.values():
            conn.rollback()
        app.stop_event.set()
        app.join(10)
    assert result.returncode == 0, result.stdout + result.stderr
    assert app.latencies
    assert max(app.latencies) < 1.0, sorted(app.latencies)[-5:]


def test_the_trigger_install_gives_up_after_its_patience(database_url, story):
    upgrade(story, "0003")
    idle = psycopg2.connect(libpq_url(database_url), application_name="idle report")
    idle.cursor().execute("UPDATE group_members SET role_in_team = 'x' WHERE id = 1")
    try:
        result = alembic(database_url, "-x", "lock_patience=2s", "upgrade", "head")
    finally:
        idle.rollback()
        idle.close()
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
    assert result.returncode != 0
    assert len(failed) == 1
    assert "installing the sync triggers: gave up after" in failed[0]
    assert "(lock_patience 2s); the tables are held by pid" in failed[0]
    assert "idle report, idle in transaction" in failed[0]
    # Each retry is a WARNING that counts attempts, with no bound it does not keep; the
    # last word is the one FAILED line, not another "retrying".
    retries = [line for line in result.stderr.splitlines() if "a lock was not granted" in line]
    assert retries and all(" WARNI [migrations] " in line for line in retries)
    assert all(re.search(r"\(attempt \d+\); held by .*; retrying$", line) for line in retries)
    assert alembic(database_url, "current").stdout.strip() == "0003"


def test_holders_are_named_in_this_database_only(pg_server, legacy_template):
    # Two databases copied from one template: their group_members have the same oid. A
    # session of the other database holds that oid's lock too; it is not named.
    ours, other = (pg_server.create_database(template=legacy_template) for _ in range(2))
    engine = create_engine(ours)
    sessions = []
    try:
        upgrade(engine, "0003")
        for url, name in ((ours, "this database"), (other, "another database")):
            session = psycopg2.connect(libpq_url(url), application_name=name)
            session.cursor().execute("UPDATE group_members SET role_in_team = 'x' WHERE id = 1")
            sessions.append(session)
        result = alembic(ours, "-x", "lock_patience=2s", "upgrade", "head")
    finally:
        for session in sessions:
            session.rollback()
            session.close()
        engine.dispose()
        pg_server.drop_database(ours)
        pg_server.drop_database(other)
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and "the tables are held by pid" in failed[0]
    assert "this database, idle in transaction" in failed[0]
    assert "another database" not in result.stdout + result.stderr


# A port for each test's cluster: two may run at once on two workers.
PREPARED_PORTS = {
    "test_a_prepared_transaction_holding_a_table_is_named_by_its_gid": 55437,
    "test_a_prepared_transaction_holding_the_enrollments_lock_is_named": 55438,
}


@pytest.fixture
def prepared_cluster(pg_server, request):
    """A cluster of the test's own that allows prepared transactions (CI's servers do not),
    holding a database at 0003 with the story."""
    root = workspace()
    port = PREPARED_PORTS[request.node.name]
    cluster = Cluster(pg_server.bin_dir, root, "prepared", port).initdb()
    cluster.start("max_prepared_transactions=4")
    try:
        admin = create_engine(cluster.url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql("CREATE DATABASE school")
        admin.dispose()
        engine = create_engine(cluster.url("school"))
        upgrade(engine, "0001")
        load_story(engine)
        upgrade(engine, "0003")
        engine.dispose()
        yield cluster.url("school")
    finally:
        cluster.stop()
        remove(root)


def prepare(url, gid: str, statement: str) -> None:
    """A prepared transaction that ran ``statement``: it holds its locks with no session."""
    session = psycopg2.connect(libpq_url(url))
    cursor = session.cursor()
    cursor.execute(statement)
    cursor.execute(f"PREPARE TRANSACTION '{gid}'")
    session.close()


def test_a_prepared_transaction_holding_a_table_is_named_by_its_gid(prepared_cluster):
    prepare(
        prepared_cluster, "orphan-42", "UPDATE group_members SET role_in_team = 'x' WHERE id = 1"
    )
    result = alembic(prepared_cluster, "-x", "lock_patience=2s", "upgrade", "head")
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1
    assert (
        "the tables are held by prepared transaction 'orphan-42' (owner postgres, prepared "
        in failed[0]
    )
    assert "COMMIT PREPARED or ROLLBACK PREPARED ends it" in failed[0]
    assert "just let go" not in result.stdout + result.stderr
    assert alembic(prepared_cluster, "current").stdout.strip() == "0003"


def test_a_prepared_transaction_holding_the_enrollments_lock_is_named(prepared_cluster):
    prepare(prepared_cluster, "deploy-7", f"SELECT pg_advisory_xact_lock({LOCK_KEY})")
    result = alembic(prepared_cluster, "-x", "lock_patience=1s", "upgrade", "head")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "held by prepared transaction 'deploy-7' (owner postgres, prepared " in output
    assert "COMMIT PREPARED or ROLLBACK PREPARED 'deploy-7' ends it" in output
