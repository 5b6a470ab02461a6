"""Resume: a batched run that was cut continues from its last committed batch, kept as a
checkpoint in the database, not from the first membership."""

from __future__ import annotations

import json
import re

import psycopg2
import pytest
from sqlalchemy import create_engine, text

from bench.generate import generate
from tests.cluster import Cluster, remove, workspace
from tests.helpers import (
    HEAD,
    LATE_INACTIVE,
    WAITING_ON_LOCK,
    Background,
    alembic,
    enrollments,
    libpq_url,
    upgrade,
    wait_until,
)


@pytest.fixture
def at_0003(legacy):
    with legacy.begin() as conn:
        generate(conn, 1_500)
    upgrade(legacy, "0003")
    return legacy


def cut(engine, database_url, command: list[str]) -> None:
    """Run ``command`` until it waits for a row two thirds into the walk, then cut its
    connection (pg_terminate_backend)."""
    with engine.connect() as conn:
        target = conn.execute(text(LATE_INACTIVE)).scalar_one()
    holder = psycopg2.connect(libpq_url(database_url))
    holder.cursor().execute("SELECT 1 FROM course_enrollments WHERE id = %s FOR UPDATE", (target,))
    try:
        run = Background(command, database_url)
        pid = wait_until(engine, WAITING_ON_LOCK, app=command[0])
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        assert run.finish().returncode != 0
    finally:
        holder.rollback()
        holder.close()


def unfinished(engine) -> tuple[int, int, int]:
    """The cut run: its id, its checkpoint (a candidate number) and its candidates."""
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT id, checkpoint, candidates FROM enrollment_backfill_runs"
                " WHERE finished_at IS NULL"
            )
        ).one()
    return int(row.id), int(row.checkpoint), int(row.candidates)


def walked(stderr: str, what: str = "backfill") -> list[tuple[int, int]]:
    """Each pass the log reports: (pass, pairs walked)."""
    return [
        (int(m.group(1)), int(m.group(2).replace(",", "")))
        for m in re.finditer(rf"{what}: pass (\d+): ([\d,]+)/[\d,]+ pairs \(100%\)", stderr)
    ]


def covered(database_url) -> bool:
    return json.loads(enrollments(database_url, "audit", "--json").stdout)["missing"] == 0


COMMAND = ["enrollments", "backfill", "--commit", "--batch-size", "500", "--lock-timeout", "60s"]


def test_the_command_resumes_from_its_checkpoint(database_url, at_0003):
    cut(at_0003, database_url, COMMAND)
    run_id, checkpoint, candidates = unfinished(at_0003)
    assert 0 < checkpoint < candidates

    again = enrollments(database_url, "backfill", "--commit", "--batch-size", "500")

    assert again.returncode == 0, again.stderr
    assert f"backfill: resuming run {run_id} in pass 1 after candidate {checkpoint:,}" in (
        again.stderr
    )
    # The rest of pass 1, then (no sync trigger at 0003) a second pass that finds nothing.
    assert walked(again.stderr) == [(1, candidates - checkpoint)]
    assert "backfill: pass 2: 0 pairs to create or reactivate" in again.stderr
    assert covered(database_url)


def test_the_revision_resumes_from_its_checkpoint(database_url, at_0003):
    cut(
        at_0003,
        database_url,
        ["alembic", "-x", "backfill_batch_size=500", "-x", "lock_timeout=60s", "upgrade", "head"],
    )
    run_id, checkpoint, candidates = unfinished(at_0003)

    again = alembic(database_url, "-x", "backfill_batch_size=500", "upgrade", "head")

    assert again.returncode == 0, again.stderr
    assert f"backfill 0004: resuming run {run_id} in pass 1 after candidate {checkpoint:,}" in (
        again.stderr
    )
    # Its candidates were computed with the sync trigger installed: no second pass.
    assert walked(again.stderr, "backfill 0004") == [(1, candidates - checkpoint)]
    assert "pass 2" not in again.stderr
    assert alembic(database_url, "current").stdout.strip() == f"{HEAD} (head)"


def test_lost_candidates_are_computed_again(database_url, at_0003):
    """A crash empties the UNLOGGED candidates table: the resumed run computes a new pass,
    which finds only what the cut run had not done."""
    cut(at_0003, database_url, COMMAND)
    run_id, checkpoint, candidates = unfinished(at_0003)
    with at_0003.begin() as conn:  # what crash recovery does to an UNLOGGED table
        conn.execute(text("TRUNCATE enrollment_backfill_candidates"))

    again = enrollments(database_url, "backfill", "--commit", "--batch-size", "500")

    assert again.returncode == 0, again.stderr
    assert (
        f"backfill: resuming run {run_id} in pass 1 (its candidates are gone: computing them"
        " again)" in again.stderr
    )
    assert walked(again.stderr) == [(2, candidates - checkpoint)]
    assert "backfill: pass 3: 0 pairs to create or reactivate" in again.stderr
    assert covered(database_url)


def test_the_upgrade_resumes_a_run_cut_without_the_trigger_and_passes_again(database_url, at_0003):
    """The command ran at 0003 (no sync trigger) and was cut: the upgrade installs the
    trigger, finishes the run's pass, then computes the candidates again (memberships may
    have changed behind the first pass's snapshot) and stops there: the second pass's
    snapshot was taken with the trigger installed."""
    cut(at_0003, database_url, COMMAND)
    old_run, checkpoint, candidates = unfinished(at_0003)

    result = alembic(database_url, "upgrade", "head")

    assert result.returncode == 0, result.stderr
    assert f"resuming run {old_run} in pass 1" in result.stderr
    assert walked(result.stderr, "backfill 0004") == [(1, candidates - checkpoint)]
    assert "backfill 0004: pass 2: 0 pairs to create or reactivate" in result.stderr
    assert "pass 3" not in result.stderr
    with at_0003.connect() as conn:
        runs = conn.execute(
            text(
                "SELECT id, source, finished_at IS NOT NULL, pass"
                " FROM enrollment_backfill_runs ORDER BY id"
            )
        ).all()
    assert [tuple(r) for r in runs] == [(old_run, "enrollments backfill", True, 2)]


LATE_GAPS = """WITH g AS (
    SELECT g.id AS group_id, c.id AS course_id, c.school_id FROM groups g
    JOIN courses c ON c.id = g.course_id ORDER BY g.id LIMIT 3
),
new_users AS (
    INSERT INTO users (school_id, email, name, role)
    SELECT g.school_id, 'late' || g.group_id || '@example.org', 'Late', 'student' FROM g
    RETURNING id, school_id, email
)
INSERT INTO group_members (school_id, group_id, user_id)
SELECT g.school_id, g.group_id, u.id
FROM g JOIN new_users u ON u.email = 'late' || g.group_id || '@example.org'
RETURNING user_id, (SELECT course_id FROM g WHERE g.group_id = group_members.group_id)"""


def test_a_second_pass_finds_exactly_the_late_gaps(database_url, at_0003):
    """At 0003 no sync trigger covers what the application writes during the backfill: the
    run computes the candidates again after its first pass, and that second pass finds
    exactly the pairs written after the first pass's snapshot; a third finds none."""
    with at_0003.connect() as conn:
        target = conn.execute(text(LATE_INACTIVE)).scalar_one()
    holder = psycopg2.connect(libpq_url(database_url))
    holder.cursor().execute("SELECT 1 FROM course_enrollments WHERE id = %s FOR UPDATE", (target,))
    try:
        run = Background(COMMAND, database_url)
        wait_until(at_0003, WAITING_ON_LOCK, app="enrollments")  # pass 1, a batch waits
        with at_0003.begin() as conn:  # the application writes three new eligible pairs
            late = {tuple(r) for r in conn.execute(text(LATE_GAPS))}
    finally:
        holder.rollback()
        holder.close()
    result = run.finish()

    assert result.returncode == 0, result.stdout + result.stderr
    assert "backfill: pass 2: 3 pairs to create or reactivate" in result.stdout + result.stderr
    assert "backfill: pass 3: 0 pairs to create or reactivate" in result.stdout + result.stderr
    with at_0003.connect() as conn:
        second = conn.execute(
            text(
                "SELECT e.student_id, e.course_id FROM enrollment_backfill_batches AS b,"
                " unnest(b.created || b.reactivated) AS u(id)"
                " JOIN course_enrollments AS e ON e.id = u.id WHERE b.pass = 2"
            )
        ).all()
    assert {tuple(r) for r in second} == late and len(late) == 3
    assert covered(database_url)


def test_after_a_server_crash_the_run_computes_its_candidates_again(pg_server):
    """A real crash (``pg_ctl stop -m immediate``) while a batch waits: crash recovery
    empties the UNLOGGED candidates table; the run resumes with a new pass, which finds
    exactly what the cut run had not done."""
    root = workspace()
    cluster = Cluster(pg_server.bin_dir, root, "crash", 55436).initdb().start()
    try:
        admin = create_engine(cluster.url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql("CREATE DATABASE school")
        admin.dispose()
        url = cluster.url("school")
        engine = create_engine(url)
        upgrade(engine, "0001")
        with engine.begin() as conn:
            generate(conn, 1_500)
        upgrade(engine, "0003")
        with engine.connect() as conn:
            target = conn.execute(text(LATE_INACTIVE)).scalar_one()
        holder = psycopg2.connect(libpq_url(url))
        holder.cursor().execute(
            "SELECT 1 FROM course_enrollments WHERE id = %s FOR UPDATE", (target,)
        )
        run = Background(COMMAND, url)
        wait_until(engine, WAITING_ON_LOCK, app="enrollments")
        engine.dispose()
        cluster.stop()  # immediate: a crash
        assert run.finish().returncode != 0
        holder.close()
        cluster.start()
        engine = create_engine(url)
        run_id, checkpoint, candidates = unfinished(engine)
        with engine.connect() as conn:
            left = conn.execute(text("SELECT count(*) FROM enrollment_backfill_candidates"))
            assert left.scalar_one() == 0  # crash recovery emptied it
        assert 0 < checkpoint < candidates

        again = enrollments(url, "backfill", "--commit", "--batch-size", "500")

        assert again.returncode == 0, again.stderr
        assert f"resuming run {run_id} in pass 1 (its candidates are gone" in again.stderr
        assert walked(again.stderr) == [(2, candidates - checkpoint)]
        assert covered(url)
        engine.dispose()
    finally:
        cluster.stop()
        remove(root)
