"""Faults of a real deploy, caused for real: the database is asserted afterwards."""

from __future__ import annotations

import json
import subprocess
import time

import psycopg2
import pytest
from sqlalchemy import create_engine, text

from bench.generate import generate
from tests.helpers import (
    HEAD,
    ROOT,
    VENV_BIN,
    Application,
    alembic,
    enrollments,
    enrollments_rows,
    libpq_url,
    snapshot,
    upgrade,
    url_string,
)

STUDENTS = 1_500  # about 11,000 memberships: enough batches to interrupt


@pytest.fixture
def generated(legacy):
    with legacy.begin() as conn:
        generate(conn, STUDENTS)
    return legacy


def pair_set(engine) -> set[tuple]:
    return set(enrollments_rows(engine))


def clone(pg_server, database_url, engine):
    """A copy of the test database (same rows, same ids) to run the uninterrupted twin on."""
    name = f"{database_url.database}_twin"
    engine.dispose()  # a template may have no other session
    admin = create_engine(pg_server.admin_url, isolation_level="AUTOCOMMIT")
    try:
        for attempt in range(50):
            try:
                with admin.connect() as conn:
                    conn.exec_driver_sql(
                        f'CREATE DATABASE "{name}" TEMPLATE "{database_url.database}"'
                    )
                break
            except Exception:
                if attempt == 49:
                    raise
                time.sleep(0.1)
    finally:
        admin.dispose()
    return database_url.set(database=name)


def start(args: list[str], database_url, **env) -> subprocess.Popen:
    environ = {"DATABASE_URL": url_string(database_url), "PATH": "", **env}
    return subprocess.Popen(
        [str(VENV_BIN / args[0]), *args[1:]],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def inactive_enrollment_late_in_the_walk(engine) -> int:
    """An inactive enrollment whose only eligible membership sits past the middle of
    group_members: a batched backfill reaches it after several committed batches."""
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT ce.id FROM course_enrollments ce"
                " JOIN groups g ON g.course_id = ce.course_id"
                " JOIN group_members gm ON gm.group_id = g.id AND gm.user_id = ce.student_id"
                " JOIN users u ON u.id = gm.user_id"
                " WHERE NOT ce.active AND gm.active AND u.role = 'student'"
                " GROUP BY ce.id HAVING min(gm.id) > (SELECT max(id) * 2 / 3 FROM group_members)"
                " ORDER BY ce.id LIMIT 1"
            )
        ).scalar_one()


def kill_while_blocked(engine, enrollment_id: int, proc: subprocess.Popen, app: str) -> None:
    """Hold a row lock the process will need, wait until it waits for it, then cut its
    connection with pg_terminate_backend (as a failover or a DBA would)."""
    holder = psycopg2.connect(libpq_url(engine.url))
    cur = holder.cursor()
    cur.execute("SELECT 1 FROM course_enrollments WHERE id = %s FOR UPDATE", (enrollment_id,))
    watcher = psycopg2.connect(libpq_url(engine.url))
    watcher.autocommit = True
    wcur = watcher.cursor()
    deadline = time.monotonic() + 60
    pid = None
    while time.monotonic() < deadline and proc.poll() is None:
        wcur.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
            " AND wait_event_type = 'Lock' AND datname = current_database()",
            (app,),
        )
        row = wcur.fetchone()
        if row:
            pid = row[0]
            break
        time.sleep(0.05)
    assert pid is not None, proc.communicate()
    wcur.execute("SELECT pg_terminate_backend(%s)", (pid,))
    holder.rollback()
    holder.close()
    watcher.close()


def test_connection_cut_during_batched_backfill(pg_server, database_url, generated):
    twin = clone(pg_server, database_url, generated)
    twin_engine = create_engine(twin)
    try:
        enrollments(twin, "backfill", "--commit", "--unrecorded")
        target = inactive_enrollment_late_in_the_walk(generated)
        before = pair_set(generated)

        proc = start(
            [
                "enrollments",
                "backfill",
                "--commit",
                "--unrecorded",
                "--batch-size",
                "500",
                "--lock-timeout",
                "60s",
            ],
            database_url,
        )
        kill_while_blocked(generated, target, proc, "enrollments")
        _, err = proc.communicate(timeout=60)

        assert proc.returncode == 75, err
        assert "Traceback" not in err
        error_lines = [line for line in err.splitlines() if "error" in line]
        assert len(error_lines) == 1 and "lost the connection to the database" in error_lines[0]
        partial = pair_set(generated)
        assert partial != before  # some batches were committed before the cut

        again = enrollments(
            database_url, "backfill", "--commit", "--unrecorded", "--batch-size", "500"
        )
        assert again.returncode == 0, again.stderr
        assert pair_set(generated) == pair_set(twin_engine)
        audit = json.loads(enrollments(database_url, "audit", "--json").stdout)
        assert audit["coverage_percent"] == 100.0
    finally:
        twin_engine.dispose()
        pg_server.drop_database(twin)


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "single"])
def test_connection_cut_during_upgrade(pg_server, database_url, generated, batched):
    twin = clone(pg_server, database_url, generated)
    twin_engine = create_engine(twin)
    try:
        assert alembic(twin, "upgrade", "head").returncode == 0
        assert alembic(database_url, "upgrade", "0003").returncode == 0
        target = inactive_enrollment_late_in_the_walk(generated)
        x = ["-x", "backfill_batch_size=500"] if batched else []

        proc = start(["alembic", *x, "-x", "lock_timeout=60s", "upgrade", "head"], database_url)
        kill_while_blocked(generated, target, proc, "alembic")
        out, err = proc.communicate(timeout=60)

        assert proc.returncode != 0
        assert "Traceback" not in out + err
        assert "FAILED: lost the connection to the database" in out
        # alembic_version never claims more than was done.
        assert alembic(database_url, "current").stdout.strip() == "0003"

        rerun = alembic(database_url, *x, "upgrade", "head")
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        assert alembic(database_url, "current").stdout.strip() == f"{HEAD} (head)"
        assert pair_set(generated) == pair_set(twin_engine)
    finally:
        twin_engine.dispose()
        pg_server.drop_database(twin)


def test_backfill_lock_wait_times_out_and_changes_nothing(story, database_url):
    before = snapshot(story)
    holder = psycopg2.connect(libpq_url(database_url))
    holder.cursor().execute("LOCK TABLE course_enrollments IN ACCESS EXCLUSIVE MODE")
    try:
        started = time.monotonic()
        result = enrollments(
            database_url,
            "backfill",
            "--commit",
            "--unrecorded",
            "--lock-timeout",
            "300ms",
            "--lock-patience",
            "2s",
        )
        elapsed = time.monotonic() - started
    finally:
        holder.rollback()
        holder.close()
    assert result.returncode == 75
    assert "gave up waiting for a lock (lock_timeout)" in result.stderr
    assert elapsed < 10
    assert snapshot(story) == before


def test_upgrade_lock_wait_times_out_and_changes_nothing(story, database_url):
    upgrade(story, "0003")
    before = snapshot(story)
    holder = psycopg2.connect(libpq_url(database_url))
    holder.cursor().execute("LOCK TABLE course_enrollments IN ACCESS EXCLUSIVE MODE")
    try:
        result = alembic(
            database_url, "-x", "lock_timeout=300ms", "-x", "lock_patience=2s", "upgrade", "head"
        )
    finally:
        holder.rollback()
        holder.close()
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    assert "FAILED: gave up waiting for a lock (lock_timeout)" in result.stdout
    assert alembic(database_url, "current").stdout.strip() == "0003"
    assert snapshot(story) == before


def server_now(engine):
    with engine.connect() as conn:
        return conn.execute(text("SELECT clock_timestamp()")).scalar()


@pytest.mark.parametrize(
    "command",
    [
        ["enrollments", "backfill", "--commit", "--unrecorded", "--batch-size", "200"],
        ["enrollments", "backfill", "--commit", "--unrecorded", "--one-statement"],
        ["alembic", "-x", "backfill_batch_size=200", "upgrade", "head"],
        ["alembic", "-x", "backfill_one_statement=yes", "upgrade", "head"],
    ],
    ids=["backfill-batched", "backfill-one-statement", "upgrade-batched", "upgrade-one-statement"],
)
def test_application_writes_during_backfill(database_url, generated, command):
    """The application (dual write, enrolling gaps the backfill is closing, students
    leaving) writes throughout: no error on either side, no duplicate, nobody who left
    re-enrolled, full coverage, and its writes really overlapped the backfill."""
    app = Application(database_url, dual_write=True).start()
    try:
        while len(app.commits) < 5:
            app.stop_event.wait(0.01)
        started = server_now(generated)
        result = start(command, database_url)
        out, err = result.communicate(timeout=120)
        finished = server_now(generated)
    finally:
        app.stop()
    assert result.returncode == 0, out + err
    assert "duplicate key" not in out + err
    assert app.errors == [] and app.commits_between(started, finished) > 0
    assert app.deactivated
    audit = enrollments(database_url, "audit", "--json")
    assert json.loads(audit.stdout)["coverage_percent"] == 100.0
    with generated.connect() as conn:
        duplicates = conn.execute(
            text(
                "SELECT count(*) FROM (SELECT 1 FROM course_enrollments"
                " GROUP BY course_id, student_id HAVING count(*) > 1) d"
            )
        ).scalar()
        resurrected = [
            pair
            for pair in app.deactivated
            if conn.execute(
                text(
                    "SELECT active FROM course_enrollments WHERE student_id = :s AND course_id = :c"
                ),
                {"s": pair[0], "c": pair[1]},
            ).scalar()
        ]
    assert duplicates == 0 and resurrected == []


def test_two_backfills_at_once(pg_server, database_url, generated):
    twin = clone(pg_server, database_url, generated)
    twin_engine = create_engine(twin)
    try:
        alone = json.loads(
            enrollments(twin, "backfill", "--commit", "--unrecorded", "--json").stdout
        )
        procs = [
            start(
                ["enrollments", "backfill", "--commit", "--unrecorded", "--json", *extra],
                database_url,
            )
            for extra in ([], ["--batch-size", "300"])
        ]
        outputs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outputs
        results = [json.loads(out) for out, _ in outputs]
        # One waited for the other (the backfill lock) and found nothing left to do.
        assert sorted(r["created"] for r in results) == [0, alone["created"]]
        assert sorted(r["reactivated"] for r in results) == [0, alone["reactivated"]]
        assert all(r["coverage_percent"] == 100.0 for r in results)
        assert pair_set(generated) == pair_set(twin_engine)
    finally:
        twin_engine.dispose()
        pg_server.drop_database(twin)
