"""Pacing on the replicas: with a real streaming standby whose replay is paused, the
backfill holds before its next batch and says why; once replay resumes, it finishes."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import create_engine, text

from bench.generate import generate
from tests.cluster import Cluster, remove, workspace
from tests.helpers import Background, enrollments, upgrade, url_string, wait_until


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
