"""``enrollments pause`` and ``resume``: kept in the database, they hold any batched run
(the command's, a revision's, the undo) before its next batch, from another process."""

from __future__ import annotations

from sqlalchemy import text

from enrollments_phase1.errors import EX_NOPERM, EX_SCHEMA, EX_TEMPFAIL
from tests.helpers import Background, enrollments, wait_until
from tests.roles import deploy

PAUSED = "waiting before the next batch"
BATCHES = "SELECT batches FROM enrollment_backfill_runs ORDER BY id DESC LIMIT 1"


def batches(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text(BATCHES)).scalar_one()


def test_a_pause_holds_the_run_within_one_batch_and_resume_finishes_it(db, at_0003):
    assert enrollments(db, "throttle", "--sleep", "300ms").returncode == 0  # a slow run
    run = Background(["enrollments", "backfill", "--commit", "--batch-size", "20"], db)
    try:
        wait_until(at_0003, f"SELECT ({BATCHES}) >= 1")
        paused = enrollments(db, "pause")
        at_pause = batches(at_0003)
        run.wait_for(PAUSED)
        held = batches(at_0003)
        assert held <= at_pause + 1  # at most the batch that was running
        assert paused.returncode == 0
        assert "until resumed (enrollments resume)" in paused.stdout
        # Still held when it says so again (every few seconds): not one batch more.
        count = run.output.count(PAUSED)
        wait_for_count(run, PAUSED, count + 1)
        assert batches(at_0003) == held
        assert enrollments(db, "throttle").returncode == 0
        resumed = enrollments(db, "resume")
        assert resumed.returncode == 0
        result = run.finish()
    finally:
        enrollments(db, "resume")
        enrollments(db, "throttle")
    assert result.returncode == 0, result.stderr
    assert "resumed: going on with the next batch" in result.stderr
    assert batches(at_0003) > held


def wait_for_count(run: Background, needle: str, count: int) -> None:
    import time

    deadline = time.monotonic() + 30
    while run.output.count(needle) < count:
        assert time.monotonic() < deadline, run.output
        run.wait_for(needle, timeout=1)
        time.sleep(0.05)


def test_a_pause_with_an_expiry_ends_by_itself(db, at_0003):
    assert enrollments(db, "pause", "--for", "1s").returncode == 0
    result = enrollments(db, "backfill", "--commit")
    assert result.returncode == 0, result.stderr
    assert "the pause ended (its time was up): going on" in result.stderr


def test_a_pause_longer_than_the_patience_stops_the_run_resumable(db, at_0003):
    assert enrollments(db, "pause").returncode == 0
    try:
        result = enrollments(db, "backfill", "--commit", "--pause-patience", "1s")
    finally:
        enrollments(db, "resume")
    assert result.returncode == EX_TEMPFAIL
    line = result.stderr.strip().splitlines()[-1]
    assert "stopped after waiting 1 s (pause patience, --pause-patience)" in line
    assert "run it again after enrollments resume" in line
    again = enrollments(db, "backfill", "--commit")
    assert again.returncode == 0 and "resuming run 1" in again.stderr


def test_the_undo_of_a_downgrade_is_paused_too(db, at_0003):
    assert enrollments(db, "backfill", "--commit").returncode == 0
    assert enrollments(db, "pause").returncode == 0
    run = Background(["alembic", "downgrade", "0002"], db)
    try:
        run.wait_for(PAUSED)
        with at_0003.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM enrollment_backfill_batches")).scalar()
    finally:
        enrollments(db, "resume")
    assert run.finish().returncode == 0


def test_below_0003_there_is_nothing_to_pause(db, legacy):
    result = enrollments(db, "pause")
    assert result.returncode == EX_SCHEMA
    assert "no enrollment_backfill_control in schema public: revision 0003 creates it" in (
        result.stderr
    )


def test_only_a_role_that_may_write_the_orders_pauses(pg_server, roles):
    deploy(pg_server, roles, "fresh")
    for role in (roles.reader, roles.app):
        result = enrollments(roles.url(role), "pause")
        assert result.returncode == EX_NOPERM, result.stderr
        assert result.stderr.startswith("enrollments pause: error: permission denied")
    reader = enrollments(roles.url(roles.reader), "resume")
    assert "permission denied for table enrollment_backfill_control" in reader.stderr
    assert enrollments(roles.url(roles.owner), "pause", "--for", "1s").returncode == 0


def test_the_scripts_backfill_is_paused_too(pg_server, database_url, db, at_0003):
    import threading

    from tests.helpers import alembic, psql

    script = alembic(None, "upgrade", "0003:0004", "--sql").stdout
    assert enrollments(db, "pause").returncode == 0
    done = {}
    dba = threading.Thread(target=lambda: done.update(run=psql(pg_server, database_url, script)))
    dba.start()
    try:
        wait_until(
            at_0003,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'psql' AND wait_event = 'PgSleep'",
        )
        assert batches(at_0003) == 0
    finally:
        enrollments(db, "resume")
        dba.join(timeout=120)
    result = done["run"]
    assert result.returncode == 0, result.stderr
    assert "NOTICE:  backfill 0004: held: paused by " in result.stderr
    assert "NOTICE:  backfill 0004: no longer held: going on" in result.stderr
    assert batches(at_0003) > 0
