"""One lock: the command's backfill, the backfill revisions and the undo never run at once;
whoever waits says who holds it (pid, application_name, since when)."""

from __future__ import annotations

import re

import psycopg2
import pytest
from sqlalchemy import text

from enrollments_phase1 import lock
from tests.helpers import (
    HEAD,
    WAITING_ON_LOCK,
    Background,
    alembic,
    libpq_url,
    upgrade,
    wait_until,
)

ZOE_MATH = "SELECT 1 FROM course_enrollments WHERE course_id = 1 AND student_id = 2 FOR UPDATE"

HOLDERS = {
    "the command holds it": (
        ["enrollments", "backfill", "--commit", "--lock-timeout", "60s"],
        ["alembic", "upgrade", "head"],
    ),
    "an upgrade holds it": (
        ["alembic", "-x", "lock_timeout=60s", "upgrade", "head"],
        ["enrollments", "backfill", "--commit"],
    ),
}


@pytest.mark.parametrize("case", HOLDERS)
def test_the_second_writer_waits_and_names_the_first(database_url, story, case):
    first_command, second_command = HOLDERS[case]
    upgrade(story, "0003")
    holder = psycopg2.connect(libpq_url(database_url))
    holder.cursor().execute(ZOE_MATH)  # keeps the first writer inside its backfill
    try:
        first = Background(first_command, database_url)
        wait_until(story, WAITING_ON_LOCK, app=first_command[0])
        pid = wait_until(
            story, "SELECT pid FROM (" + lock.HOLDER_SQL + ") AS h"
        )  # its lock session
        second = Background(second_command, database_url)
        line = second.wait_for("waiting for the enrollments lock")
        assert re.search(
            rf"held by pid {pid} \({first_command[0]}\) since \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d UTC",
            line,
        ), line
    finally:
        holder.rollback()
        holder.close()
    assert first.finish().returncode == 0
    assert second.finish().returncode == 0
    assert alembic(database_url, "current").stdout.strip() == f"{HEAD} (head)"


def test_a_lock_session_ended_by_someone_else_is_named_as_such(database_url, legacy):
    # A reaper (a job ending sessions idle in transaction, pg_terminate_backend) ends the
    # lock session while a batch waits: 1.2.0 blamed lock_timeout.
    from bench.generate import generate
    from tests.helpers import LATE_INACTIVE

    with legacy.begin() as conn:
        generate(conn, 300)
    upgrade(legacy, "0003")
    with legacy.connect() as conn:
        held = conn.execute(text(LATE_INACTIVE)).scalar_one()
    holder = psycopg2.connect(libpq_url(database_url))
    holder.cursor().execute("SELECT 1 FROM course_enrollments WHERE id = %s FOR UPDATE", (held,))
    try:
        run = Background(
            ["enrollments", "backfill", "--commit", "--batch-size", "5", "--lock-patience", "5min"],
            database_url,
        )
        wait_until(legacy, WAITING_ON_LOCK, app="enrollments")
        with legacy.connect() as conn:
            ended = (
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND application_name = 'enrollments'"
                        " AND state = 'idle in transaction'"
                    )
                )
                .scalars()
                .all()
            )
        assert ended == [True]
        result = run.finish()
    finally:
        holder.rollback()
        holder.close()
    assert result.returncode == 75, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "lost the enrollments lock: its session (pid " in line
    assert "was ended while this run held it" in line
    assert "idle_transaction_timeout" in line and "pg_terminate_backend" in line
    assert "lock_timeout" not in line.replace("idle_transaction_timeout", "")
