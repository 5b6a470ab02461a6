"""Resume: a batched run that was cut continues from its last committed batch, kept as a
checkpoint in the database, not from the first membership."""

from __future__ import annotations

import json
import re

import psycopg2
import pytest
from sqlalchemy import text

from bench.generate import generate
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


def unfinished(engine) -> tuple[int, int]:
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT id, checkpoint FROM enrollment_backfill_runs WHERE finished_at IS NULL")
        ).one()
    return int(row.id), int(row.checkpoint)


def memberships(engine, after: int = -2147483649) -> int:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT count(*) FROM group_members WHERE id > :a"), {"a": after}
        ).scalar()


def test_the_command_resumes_from_its_checkpoint(database_url, at_0003):
    command = [
        "enrollments",
        "backfill",
        "--commit",
        "--batch-size",
        "500",
        "--lock-timeout",
        "60s",
    ]
    cut(at_0003, database_url, command)
    run_id, checkpoint = unfinished(at_0003)
    assert checkpoint > 0

    again = enrollments(database_url, "backfill", "--commit", "--batch-size", "500")

    assert again.returncode == 0, again.stderr
    assert f"resuming the cut run {run_id} after membership id {checkpoint}" in again.stderr
    walked = re.search(r"backfill: (\d[\d,]*)/(\d[\d,]*) memberships \(100%\)", again.stderr)
    assert int(walked.group(1).replace(",", "")) == memberships(at_0003, checkpoint)
    assert memberships(at_0003, checkpoint) < memberships(at_0003)
    assert json.loads(enrollments(database_url, "audit", "--json").stdout)["missing"] == 0


def test_the_revision_resumes_from_its_checkpoint(database_url, at_0003):
    cut(
        at_0003,
        database_url,
        ["alembic", "-x", "backfill_batch_size=500", "-x", "lock_timeout=60s", "upgrade", "head"],
    )
    run_id, checkpoint = unfinished(at_0003)

    again = alembic(database_url, "-x", "backfill_batch_size=500", "upgrade", "head")

    assert again.returncode == 0, again.stderr
    assert f"backfill 0004: resuming run {run_id} after membership id {checkpoint}" in again.stderr
    assert alembic(database_url, "current").stdout.strip() == f"{HEAD} (head)"


def test_a_run_without_the_trigger_is_not_resumed_by_one_that_needs_it(database_url, at_0003):
    """The command ran at 0003 (no sync trigger): memberships below its checkpoint may have
    changed since it passed them. The upgrade, which needs every one covered, starts over."""
    cut(
        at_0003,
        database_url,
        ["enrollments", "backfill", "--commit", "--batch-size", "500", "--lock-timeout", "60s"],
    )
    old_run, _ = unfinished(at_0003)

    result = alembic(database_url, "upgrade", "head")

    assert result.returncode == 0, result.stderr
    assert "resuming" not in result.stderr
    with at_0003.connect() as conn:
        runs = conn.execute(
            text(
                "SELECT id, source, finished_at IS NOT NULL"
                " FROM enrollment_backfill_runs ORDER BY id"
            )
        ).all()
    assert [tuple(r) for r in runs] == [
        (old_run, "enrollments backfill", True),
        (old_run + 1, "0004", True),
    ]
