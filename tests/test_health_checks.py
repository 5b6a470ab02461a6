"""The health checks before each batch: a VACUUM of the backfill's tables, an old snapshot,
WAL waiting to be archived. Each holds the run, named in its log and in ``enrollments
status``, until its condition ends; staged with real sessions, waited for on the database."""

from __future__ import annotations

import threading

import psycopg2
import pytest
from sqlalchemy import create_engine, text

from bench.generate import generate
from tests.cluster import Cluster, remove, workspace
from tests.helpers import Background, enrollments, libpq_url, upgrade, url_string, wait_until
from tests.helpers import status_of as status


def test_a_vacuum_of_course_enrollments_holds_the_run_until_it_is_cancelled(
    database_url, db, at_0003
):
    # A cursor pins the table's first page; VACUUM (FREEZE) must freeze it and waits for
    # that pin: a vacuum that runs as long as the test wants.
    pin = psycopg2.connect(libpq_url(database_url), application_name="a pinning cursor")
    pin.cursor().execute("DECLARE c CURSOR FOR SELECT * FROM course_enrollments; FETCH 1 FROM c")
    vacuum = psycopg2.connect(libpq_url(database_url), application_name="a slow vacuum")
    vacuum.autocommit = True
    vacuum_pid = vacuum.get_backend_pid()
    done = threading.Event()

    def run_vacuum() -> None:
        try:
            vacuum.cursor().execute("VACUUM (FREEZE) course_enrollments")
        except psycopg2.errors.QueryCanceled:
            pass
        finally:
            done.set()

    threading.Thread(target=run_vacuum, daemon=True).start()
    try:
        wait_until(
            at_0003,
            "SELECT count(*) FROM pg_stat_progress_vacuum"
            " WHERE relid = 'course_enrollments'::regclass",
        )
        run = Background(["enrollments", "backfill", "--commit"], db)
        line = run.wait_for("held: VACUUM of course_enrollments")
        assert f"(pid {vacuum_pid}, " in line
        assert "(--no-hold-on-vacuum does not wait for it)" in line
        held = status(db)
        assert held["state"] == "held"
        assert held["held_by"]["check"] == "vacuum"
        with at_0003.connect() as conn:
            assert conn.execute(text("SELECT batches FROM enrollment_backfill_runs")).scalar() == 0
            conn.execute(text("SELECT pg_cancel_backend(:pid)"), {"pid": vacuum_pid})
        assert done.wait(30)
        result = run.finish()
    finally:
        pin.rollback()
        pin.close()
        vacuum.close()
    assert result.returncode == 0, result.stderr
    assert "no longer held (vacuum): going on" in result.stderr
    assert status(db)["held_by"] is None


def test_without_hold_on_vacuum_the_run_does_not_wait(database_url, db, at_0003):
    result = enrollments(db, "backfill", "--commit", "--no-hold-on-vacuum")
    assert result.returncode == 0, result.stderr


def test_an_old_snapshot_holds_the_run_until_it_ends(database_url, db, at_0003):
    report = psycopg2.connect(libpq_url(database_url), application_name="a long report")
    report.set_session(isolation_level="REPEATABLE READ")
    report.cursor().execute("SELECT count(*) FROM group_members")
    pid = report.get_backend_pid()
    try:
        wait_until(
            at_0003,
            "SELECT now() - xact_start > interval '1 s' FROM pg_stat_activity WHERE pid = :pid",
            pid=pid,
        )
        run = Background(["enrollments", "backfill", "--commit", "--max-xmin-age", "1s"], db)
        line = run.wait_for("holds back the xmin horizon")
        assert f"held: pid {pid} (a long report, idle in transaction, " in line
        assert "above the bound of 1 s (--max-xmin-age)" in line
        held = status(db)
        assert held["state"] == "held" and held["held_by"]["check"] == "xmin"
        assert held["held_by"]["threshold"] == 1 and held["held_by"]["figure"] >= 1
    finally:
        report.rollback()
        report.close()
    result = run.finish()
    assert result.returncode == 0, result.stderr
    assert "no longer held (xmin): going on" in result.stderr


@pytest.fixture
def archiving_cluster(pg_server):
    """A cluster of the test's own with archiving on and no archive_command yet: WAL files
    wait to be archived; a database at 0003 with generated data."""
    root = workspace()
    cluster = Cluster(pg_server.bin_dir, root, "archiving", 55439).initdb()
    cluster.start("archive_mode=on", "wal_level=replica")
    try:
        admin = create_engine(cluster.url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql("CREATE DATABASE school")
        admin.dispose()
        engine = create_engine(cluster.url("school"))
        upgrade(engine, "0001")
        with engine.begin() as conn:
            generate(conn, 300)
        upgrade(engine, "0003")
        yield engine, cluster
        engine.dispose()
    finally:
        cluster.stop()
        remove(root)


def test_wal_waiting_to_be_archived_holds_the_run(archiving_cluster):
    engine, cluster = archiving_cluster
    admin = create_engine(cluster.url("school"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for _ in range(3):  # three WAL files no archive_command takes
            conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS w (x int); INSERT INTO w VALUES (1)")
            conn.exec_driver_sql("SELECT pg_switch_wal()")
    wait_until(
        engine,
        "SELECT count(*) >= 2 FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'",
    )
    db = url_string(cluster.url("school"))
    run = Background(["enrollments", "backfill", "--commit", "--max-archive-backlog", "1"], db)
    line = run.wait_for("wait to be archived")
    assert "above the bound of 1 (--max-archive-backlog)" in line
    held = status(db)
    assert held["state"] == "held" and held["held_by"]["check"] == "archive"
    with admin.connect() as conn:  # the archive works again
        conn.exec_driver_sql("ALTER SYSTEM SET archive_command = 'true'")
        conn.exec_driver_sql("SELECT pg_reload_conf()")
        wait_until(engine, "SELECT current_setting('archive_command') = 'true'")
        conn.exec_driver_sql("SELECT pg_switch_wal()")  # wakes the archiver
    result = run.finish()
    admin.dispose()
    assert result.returncode == 0, result.stderr
    assert "no longer held (archive): going on" in result.stderr


def test_an_old_snapshot_holds_the_scripts_backfill_too(pg_server, database_url, at_0003):
    from tests.helpers import alembic, psql

    script = alembic(None, "-x", "max_xmin_age=1s", "upgrade", "0003:0004", "--sql").stdout
    report = psycopg2.connect(libpq_url(database_url), application_name="a long report")
    report.set_session(isolation_level="REPEATABLE READ")
    report.cursor().execute("SELECT 1")  # a snapshot, and no lock the trigger install waits for
    done = {}
    dba = threading.Thread(target=lambda: done.update(run=psql(pg_server, database_url, script)))
    try:
        wait_until(
            at_0003,
            "SELECT now() - xact_start > interval '1 s' FROM pg_stat_activity WHERE pid = :pid",
            pid=report.get_backend_pid(),
        )
        dba.start()
        wait_until(
            at_0003,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'psql' AND wait_event = 'PgSleep'",
        )
        with at_0003.connect() as conn:
            assert conn.execute(text("SELECT batches FROM enrollment_backfill_runs")).scalar() == 0
    finally:
        report.rollback()
        report.close()
        if dba.is_alive() or done:
            dba.join(timeout=120)
    result = done["run"]
    assert result.returncode == 0, result.stderr
    assert (
        "held: a transaction older than 1 s holds back the xmin horizon (-x max_xmin_age)"
        in result.stderr
    )
    assert "no longer held: going on" in result.stderr
