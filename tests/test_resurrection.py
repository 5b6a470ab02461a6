"""No resurrection: while a backfill runs, the application deactivates a student's
membership and then the enrollment. 1.0.0 committed an ACTIVE enrollment for that student
afterwards (its INSERT worked from an old snapshot and locked no membership).

Staged with real sessions: a *blocker* holds a row lock the backfill needs late in its
batch (Zoë's inactive enrollment, which it reactivates), so the batch stops after it has
read and locked Ada's membership in Physics; the application then deactivates that
membership. Every step waits on pg_stat_activity, never on a sleep.
"""

from __future__ import annotations

import threading

import psycopg2
import pytest
from sqlalchemy import text

from tests.helpers import WAITING_ON_LOCK, Background, libpq_url, upgrade, wait_until

ADA_PHYSICS = "SELECT active FROM course_enrollments WHERE course_id = 2 AND student_id = 1"
ZOE_MATH = "SELECT 1 FROM course_enrollments WHERE course_id = 1 AND student_id = 2 FOR UPDATE"
LEAVES = "UPDATE group_members SET active = false WHERE group_id = 3 AND user_id = 1"
ENROLLMENT_LEAVES = (
    "UPDATE course_enrollments SET active = false WHERE course_id = 2 AND student_id = 1"
)

BACKFILLS = {
    "command batched": ["enrollments", "backfill", "--commit", "--lock-timeout", "60s"],
    "command one statement": [
        "enrollments", "backfill", "--commit", "--one-statement", "--lock-timeout", "60s",
    ],
    "revision batched": ["alembic", "-x", "lock_timeout=60s", "upgrade", "0004"],
    "revision one statement": [
        "alembic", "-x", "lock_timeout=60s", "-x", "backfill_one_statement=yes", "upgrade", "0004",
    ],
}  # fmt: skip


def session(url, name: str):
    conn = psycopg2.connect(libpq_url(url), application_name=name)
    return conn, conn.cursor()


def ada_physics(engine):
    with engine.connect() as conn:
        return conn.execute(text(ADA_PHYSICS)).scalar()


@pytest.fixture
def ready(story):
    upgrade(story, "0003")  # the record tables; the revision runs start from here
    return story


@pytest.mark.parametrize("name", BACKFILLS)
def test_the_application_leaves_while_the_batch_runs(database_url, ready, name):
    """The backfill has locked Ada's membership: her leaving waits for the batch, then
    finds the enrollment the batch created and deactivates it."""
    command = BACKFILLS[name]
    blocker, blocked = session(database_url, "blocker")
    blocked.execute(ZOE_MATH)
    app, app_cur = session(database_url, "application")
    try:
        run = Background(command, database_url)
        wait_until(ready, WAITING_ON_LOCK, app=command[0])  # the batch waits for the blocker
        leaving = threading.Thread(
            target=lambda: (app_cur.execute(LEAVES), app_cur.execute(ENROLLMENT_LEAVES))
        )
        leaving.start()
        # Her leaving waits for the batch's lock on her membership: the point of the fix.
        wait_until(ready, WAITING_ON_LOCK, app="application")
        blocker.rollback()
        result = run.finish()
        leaving.join(timeout=30)
        app.commit()
    finally:
        blocker.close()
        app.close()
    assert result.returncode == 0, result.stdout + result.stderr
    assert ada_physics(ready) is False  # created by the batch, then deactivated: not active


@pytest.mark.parametrize("name", BACKFILLS)
def test_the_application_left_before_the_batch_read_it(database_url, ready, name):
    """Ada's leaving is under way (her membership updated, not committed) when the batch
    reads it: the batch waits, re-reads the row, and creates nothing for her."""
    command = BACKFILLS[name]
    app, app_cur = session(database_url, "application")
    app_cur.execute(LEAVES)
    try:
        run = Background(command, database_url)
        wait_until(ready, WAITING_ON_LOCK, app=command[0])  # waits for Ada's membership
        app_cur.execute(ENROLLMENT_LEAVES)  # no enrollment yet: nothing to deactivate
        app.commit()
        result = run.finish()
    finally:
        app.close()
    assert result.returncode == 0, result.stdout + result.stderr
    assert ada_physics(ready) is None  # never created


def test_an_enrollment_the_application_commits_meanwhile_is_its_own(database_url, ready):
    """The application enrolls Ada in Physics while a batch inserts that pair: the batch
    waits for it, meets a unique violation when it commits, and is retried; the retry finds
    the application's enrollment, which the record does not hold (an undo keeps it)."""
    app, app_cur = session(database_url, "application")
    app_cur.execute("INSERT INTO course_enrollments (course_id, student_id) VALUES (2, 1)")
    try:
        run = Background(
            ["enrollments", "backfill", "--commit", "--lock-timeout", "60s"], database_url
        )
        wait_until(ready, WAITING_ON_LOCK, app="enrollments")  # its insert waits for ours
        app_cur.execute("SELECT id FROM course_enrollments WHERE course_id = 2 AND student_id = 1")
        mine = app_cur.fetchone()[0]
        app.commit()
        result = run.finish()
    finally:
        app.close()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "a batch failed on a unique violation" in result.stderr
    assert ada_physics(ready) is True
    with ready.connect() as conn:
        recorded_ids = (
            conn.execute(
                text(
                    "SELECT u.id FROM enrollment_backfill_batches AS b,"
                    " unnest(b.created || b.reactivated) AS u(id)"
                )
            )
            .scalars()
            .all()
        )
    assert mine not in recorded_ids and len(recorded_ids) == 4  # 2 created, 2 reactivated
