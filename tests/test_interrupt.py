"""Ctrl-C (SIGINT) during a long statement: the statement is cancelled on the server, the
transaction rolled back, and the tool ends with one line and exit 130."""

import random
import signal
import time

import psycopg2
import pytest
from sqlalchemy import create_engine, text

from bench.generate import generate
from enrollments_phase1.errors import EX_INTERRUPTED
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
        ["enrollments", "backfill", "--commit", "--unrecorded", "--lock-timeout", "60s", *batch],
        "enrollments",
    )
    assert result.returncode == EX_INTERRUPTED
    lines = [line for line in result.stderr.splitlines() if "error" in line or "interrupt" in line]
    assert len(lines) == 1, result.stderr
    assert "interrupted: the running statement was cancelled on the server" in lines[0]
    assert lines[0].endswith(
        "run it again: below revision 0003 nothing is recorded, so it starts over"
    )
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


CUT = "SELECT finished_at IS NULL FROM enrollment_backfill_runs ORDER BY id DESC LIMIT 1"
# A batch has committed (the checkpoint is a candidate number, 0 before the first batch).
STARTED = "SELECT checkpoint > 0 FROM enrollment_backfill_runs ORDER BY id DESC LIMIT 1"


@pytest.fixture
def walk(pg_server, database_url, legacy):
    """A database at 0003 whose backfill takes hundreds of small batches, to copy."""
    with legacy.begin() as conn:
        generate(conn, 600)
    upgrade(legacy, "0003")
    legacy.dispose()
    return database_url.database


def sigint_at_random_moments(pg_server, template: str, command: list[str], runs: int):
    """Run ``command`` on a fresh copy of ``template`` ``runs`` times, each cut by SIGINT at
    a random moment once its batches have started (the moment is the test's input, drawn
    from a fixed seed; everything else waits on the database). Yields each result with an
    engine on its copy."""
    rng = random.Random(20261130)
    for _ in range(runs):
        url = pg_server.create_database(template=template)
        engine = create_engine(url)
        try:
            run = Background(command, url)
            wait_until(engine, STARTED)
            time.sleep(rng.uniform(0, 0.5))
            run.proc.send_signal(signal.SIGINT)
            yield run.finish(timeout=60), engine
        finally:
            engine.dispose()
            pg_server.drop_database(url)


def test_every_sigint_stops_the_command(pg_server, walk):
    command = ["enrollments", "backfill", "--commit", "--unrecorded", "--batch-size", "2"]
    for result, engine in sigint_at_random_moments(pg_server, walk, command, 20):
        assert result.returncode == EX_INTERRUPTED, result.stdout + result.stderr
        lines = [line for line in result.stderr.splitlines() if "interrupted" in line]
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
        with engine.connect() as conn:
            assert conn.execute(text(CUT)).scalar() is True  # cut: the next run resumes


def test_every_sigint_stops_alembic(pg_server, walk):
    command = ["alembic", "-x", "backfill_batch_size=2", "upgrade", "head"]
    for result, engine in sigint_at_random_moments(pg_server, walk, command, 8):
        assert result.returncode == EX_INTERRUPTED, result.stdout + result.stderr
        failed = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
        assert len(failed) == 1 and failed[0].startswith("FAILED: interrupted")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0003"
