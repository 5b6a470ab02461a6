"""Read-only Alembic commands never wait on the enrollments lock (an upgrade holds it)."""

import time

import pytest
from sqlalchemy import text

from app import lock
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
