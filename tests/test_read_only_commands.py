"""Read-only Alembic commands never wait on the enrollments lock (an upgrade holds it)."""

import time

import pytest
from sqlalchemy import text

from enrollments_phase1 import lock
from tests.helpers import HEAD, alembic, upgrade


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["current"], f"{HEAD} (head)"),
        (["history", "--indicate-current"], "(head) (current)"),
        (["heads"], f"{HEAD} (head)"),
        (["check"], "No new upgrade operations detected"),
        (["show", "current"], f"Revision ID: {HEAD}"),
    ],
)
def test_answers_at_once_while_the_lock_is_held(database_url, engine, args, expect):
    upgrade(engine, "head")
    started = time.monotonic()
    quiet = alembic(database_url, *args)
    quiet_seconds = time.monotonic() - started
    with engine.connect() as holder:  # held in an open transaction, as a run holds it
        holder.execute(text(lock.TRY_SQL))
        started = time.monotonic()
        busy = alembic(database_url, *args)
        busy_seconds = time.monotonic() - started
    assert busy.returncode == quiet.returncode == 0, busy.stdout + busy.stderr
    assert expect in busy.stdout + busy.stderr
    assert busy_seconds < quiet_seconds + 1.0


def test_a_failed_current_does_not_send_the_user_to_current(database_url, engine):
    # A table lock held by someone else: `alembic current` gives up after its lock_timeout
    # (every wait ends); the one line names the problem, not `alembic current` as the way out.
    upgrade(engine, "head")
    with engine.connect() as holder:
        holder.execute(text("LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE"))
        result = alembic(database_url, "current")
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
    assert result.returncode != 0 and len(failed) == 1, result.stdout + result.stderr
    assert "gave up waiting for a lock (lock_timeout)" in failed[0]
    assert "alembic current" not in failed[0]
