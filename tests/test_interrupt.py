"""Ctrl-C (SIGINT) during a long statement: the statement is cancelled on the server, the
transaction rolled back, and the tool ends with one line and exit 130."""

import signal

import psycopg2
import pytest
from sqlalchemy import text

from app.errors import EX_INTERRUPTED
from tests.helpers import (
    WAITING_ON_LOCK,
    Background,
    alembic,
    libpq_url,
    snapshot,
    upgrade,
    wait_until,
)

# Zoë's inactive enrollment in course 1: the backfill reactivates it, so it waits for it.
ZOE_MATH = "SELECT 1 FROM course_enrollments WHERE course_id = 1 AND student_id = 2 FOR UPDATE"


def backends(engine, app: str) -> list[tuple]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                text(
                    "SELECT pid, state, wait_event_type FROM pg_stat_activity"
                    " WHERE application_name = :app AND datname = current_database()"
                ),
                {"app": app},
            )
        ]


def interrupt_while_blocked(engine, database_url, args, app):
    holder = psycopg2.connect(libpq_url(database_url))
    holder.cursor().execute(ZOE_MATH)
    try:
        run = Background(args, database_url)
        wait_until(engine, WAITING_ON_LOCK, app=app)
        run.proc.send_signal(signal.SIGINT)
        result = run.finish(timeout=30)
        # Before the holder lets go: the waiting statement is gone from the server, not
        # left behind by a client that exited.
        left = backends(engine, app)
    finally:
        holder.rollback()
        holder.close()
    return result, left


@pytest.mark.parametrize("batch", [[], ["--batch-size", "3"]], ids=["single", "batched"])
def test_enrollments_backfill(database_url, story, batch):
    before = snapshot(story)
    result, left = interrupt_while_blocked(
        story,
        database_url,
        ["enrollments", "backfill", "--commit", "--lock-timeout", "60s", *batch],
        "enrollments",
    )
    assert result.returncode == EX_INTERRUPTED
    lines = [line for line in result.stderr.splitlines() if "error" in line or "interrupt" in line]
    assert len(lines) == 1, result.stderr
    assert "interrupted: the running statement was cancelled on the server" in lines[0]
    assert "Traceback" not in result.stderr
    assert left == []
    if not batch:
        assert snapshot(story) == before


def test_alembic_upgrade(database_url, story):
    upgrade(story, "0003")
    before = snapshot(story)
    result, left = interrupt_while_blocked(
        story,
        database_url,
        ["alembic", "-x", "lock_timeout=60s", "upgrade", "head"],
        "alembic",
    )
    assert result.returncode == EX_INTERRUPTED, result.stdout + result.stderr
    failed = [line for line in (result.stdout + result.stderr).splitlines() if "FAILED" in line]
    assert failed == [
        "FAILED: interrupted: the running statement was cancelled on the server and its "
        "transaction rolled back (alembic current shows the last completed revision)"
    ]
    assert "Traceback" not in result.stdout + result.stderr
    assert left == []
    assert snapshot(story) == before
    assert alembic(database_url, "current").stdout.strip() == "0003"
