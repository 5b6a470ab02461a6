"""Pacing on the replicas: with a real streaming standby whose replay is paused, the
backfill holds before its next batch and says why; once replay resumes, it finishes."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import create_engine, text

from bench.generate import generate
from tests.cluster import Cluster, remove, workspace
from tests.helpers import Background, alembic, enrollments, upgrade, url_string, wait_until

# A primary and a standby of their own, from the embedded package's binaries.
pytestmark = pytest.mark.embedded


def psql_at(cluster, database: str, user: str, script: str):
    """The script through psql as ``user``, as a DBA runs it."""
    import subprocess

    return subprocess.run(
        [str(cluster.bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
         "-d", cluster.libpq(database, user)],
        input=script, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.fixture
def primary_and_standby(pg_server):
    root = workspace()
    primary = Cluster(pg_server.bin_dir, root, "primary", 55432).initdb().start()
    standby = None
    try:
        standby = Cluster(pg_server.bin_dir, root, "standby", 55433).base_backup_of(primary)
        standby.start()
        yield primary, standby
    finally:
        if standby is not None:
            standby.stop()
        primary.stop()
        remove(root)


def test_a_paused_standby_holds_the_backfill(primary_and_standby):
    primary, standby = primary_and_standby
    admin = create_engine(primary.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql("CREATE DATABASE school")
    admin.dispose()
    engine = create_engine(primary.url("school"))
    standby_engine = create_engine(standby.url("postgres"), isolation_level="AUTOCOMMIT")
    try:
        upgrade(engine, "0003")
        with engine.begin() as conn:
            generate(conn, 600)
        wait_until(engine, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
        with standby_engine.connect() as conn:
            conn.exec_driver_sql("SELECT pg_wal_replay_pause()")

        run = Background(
            ["enrollments", "backfill", "--commit", "--batch-size", "20",
             "--max-replica-lag", "200ms"],
            url_string(primary.url("school")),
        )  # fmt: skip
        line = run.wait_for("waiting: standby")
        assert "above the bound of 0.2 s (--max-replica-lag)" in line
        assert " MB / " in line and " s behind" in line  # in bytes and in time
        with engine.connect() as conn:  # held between batches: nothing of it runs
            running = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE application_name = 'enrollments' AND state = 'active'"
                )
            ).scalar()
        assert run.proc.poll() is None and running == 0

        with standby_engine.connect() as conn:
            conn.exec_driver_sql("SELECT pg_wal_replay_resume()")
        result = run.finish(timeout=300)

        assert result.returncode == 0, result.stderr
        assert "replicas caught up" in result.stderr
        audit = json.loads(enrollments(url_string(primary.url("school")), "audit", "--json").stdout)
        assert audit["coverage_percent"] == 100.0
    finally:
        engine.dispose()
        standby_engine.dispose()


def school(primary, owner: str = "postgres"):
    """A database with generated data at 0003, owned and migrated by ``owner``."""
    admin = create_engine(primary.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if owner != "postgres":  # a deploy role as on a managed database: no pg_monitor
            conn.exec_driver_sql(f"CREATE ROLE {owner} LOGIN")
        conn.exec_driver_sql(f"CREATE DATABASE school OWNER {owner}")
    admin.dispose()
    engine = create_engine(primary.url("school").set(username=owner))
    with engine.begin() as conn:
        conn.exec_driver_sql(f"ALTER SCHEMA public OWNER TO {owner}")
    upgrade(engine, "0003")
    with engine.begin() as conn:
        generate(conn, 300)
    watcher = create_engine(primary.url("school"))  # the admin sees the standby's state
    wait_until(watcher, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
    watcher.dispose()
    return engine


def test_a_role_that_cannot_see_the_lag_is_told_or_stopped(primary_and_standby):
    """Without pg_monitor, pg_stat_replication hides the lag columns: the run says so,
    naming the grant, and stops where a bound was asked for explicitly."""
    primary, _ = primary_and_standby
    engine = school(primary, owner="deployer")
    try:
        deployer = url_string(primary.url("school").set(username="deployer"))

        explicit = enrollments(deployer, "backfill", "--commit", "--max-replica-lag", "1s")
        assert explicit.returncode == 77, explicit.stderr
        assert (
            explicit.stderr.strip()
            .splitlines()[-1]
            .endswith(
                "cannot read the replication lag of 1 standby(s): role deployer may not see "
                "the lag columns of pg_stat_replication, so it cannot keep the asked bound of "
                "1 s; GRANT pg_monitor TO deployer, or run with --max-replica-lag 0"
            )
        )
        script = alembic(None, "-x", "max_replica_lag=1s", "upgrade", "0003:0004", "--sql").stdout
        offline = psql_at(primary, "school", "deployer", script)
        assert offline.returncode != 0
        assert "so it cannot keep the asked bound of 1 s" in offline.stderr

        by_default = enrollments(deployer, "backfill", "--commit")
        assert by_default.returncode == 0, by_default.stderr
        told = [line for line in by_default.stderr.splitlines() if "pg_monitor" in line]
        assert len(told) == 1 and "the backfill does not pace on them" in told[0]
    finally:
        engine.dispose()


def test_the_offline_script_paces_on_a_paused_standby(primary_and_standby):
    primary, standby = primary_and_standby
    engine = school(primary)
    standby_engine = create_engine(standby.url("postgres"), isolation_level="AUTOCOMMIT")
    try:
        with standby_engine.connect() as conn:
            conn.exec_driver_sql("SELECT pg_wal_replay_pause()")
        with engine.begin() as conn:  # WAL the paused standby does not replay
            conn.exec_driver_sql("CREATE TABLE ballast AS SELECT generate_series(1, 1000) AS g")
        wait_until(engine, "SELECT bool_or(replay_lag > interval '0.5 s') FROM pg_stat_replication")
        script = alembic(
            None, "-x", "max_replica_lag=200ms", "-x", "backfill_batch_size=20",
            "upgrade", "0003:0004", "--sql",
        ).stdout  # fmt: skip
        path = primary.data.parent / "backfill.sql"
        path.write_text(script)
        run = Background(
            [str(primary.bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
             "-d", primary.libpq("school"), "-f", str(path)],
            None,
        )  # fmt: skip
        line = run.wait_for("waiting: a standby is")
        assert "above the bound of 0.2 s (-x max_replica_lag)" in line
        with standby_engine.connect() as conn:
            conn.exec_driver_sql("SELECT pg_wal_replay_resume()")
        result = run.finish(timeout=300)
        assert result.returncode == 0, result.stderr
        with engine.connect() as conn:
            version = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
        assert version == "0004"
    finally:
        engine.dispose()
        standby_engine.dispose()
