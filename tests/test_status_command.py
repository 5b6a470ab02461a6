"""``enrollments status``: where the backfill stands, read by another process while the
command, ``alembic upgrade head`` or nothing runs; a run killed with SIGKILL is ``cut``
and names the command that resumes it."""

from __future__ import annotations

import json
import signal

from sqlalchemy import text

from tests.helpers import HEAD, Background, alembic, enrollments, wait_until
from tests.helpers import status_of as status

PAUSED = "waiting before the next batch"


def test_nothing_has_run_yet(db, at_0003):
    found = status(db)
    assert found["state"] == "none"
    assert found["run"] is None and found["progress"] is None and found["lock_holder"] is None
    text_form = enrollments(db, "status")
    assert text_form.returncode == 0
    assert text_form.stdout.startswith("Backfill: none")


def test_status_of_the_commands_run_read_by_another_process(db, at_0003):
    assert enrollments(db, "pause").returncode == 0  # holds the run before its first batch
    run = Background(["enrollments", "backfill", "--commit", "--batch-size", "100"], db)
    try:
        run.wait_for(PAUSED)
        paused = status(db)
        assert paused["state"] == "paused"
        assert paused["run"]["kind"] == "command"
        assert paused["run"]["started_at"]
        assert paused["progress"]["done"] == 0 and paused["progress"]["total"] > 0
        assert paused["lock_holder"]["application_name"] == "enrollments"
        assert paused["pause"] == {"until": None, "by": paused["pause"]["by"]}
        watch = Background(["enrollments", "status", "--watch", "0.2"], db)
        watch.wait_for("Backfill: paused")
        assert enrollments(db, "resume").returncode == 0
        assert run.finish().returncode == 0
        watched = watch.finish()
    finally:
        enrollments(db, "resume")
    assert watched.returncode == 0
    assert watched.stdout.count("Backfill: ") >= 2
    assert watched.stdout.rstrip().split("\n\n")[-1].startswith("Backfill: finished")
    done = status(db)
    assert done["state"] == "finished" and done["lock_holder"] is None
    with at_0003.connect() as conn:
        created, reactivated = conn.execute(
            text("SELECT created, reactivated FROM enrollment_backfill_runs")
        ).one()
    assert (done["progress"]["created"], done["progress"]["reactivated"]) == (created, reactivated)
    assert created + reactivated > 0


def test_status_during_alembic_upgrade_head(db, at_0003):
    assert enrollments(db, "pause").returncode == 0
    run = Background(["alembic", "upgrade", "head"], db)
    try:
        run.wait_for(PAUSED)
        found = status(db)
        assert found["state"] == "paused"
        assert found["run"]["kind"] == "revision" and found["run"]["source"] == "0004"
        assert found["lock_holder"]["application_name"] == "alembic"
    finally:
        enrollments(db, "resume")
    assert run.finish().returncode == 0
    assert status(db)["state"] == "finished"
    assert alembic(db, "current").stdout.strip() == f"{HEAD} (head)"


def test_a_killed_run_is_cut_and_says_how_to_resume(db, at_0003):
    assert enrollments(db, "throttle", "--sleep", "200ms").returncode == 0
    run = Background(["enrollments", "backfill", "--commit", "--batch-size", "50"], db)
    try:
        run.wait_for("throttled by")
        wait_until(at_0003, "SELECT batches >= 2 FROM enrollment_backfill_runs")
        run.proc.send_signal(signal.SIGKILL)  # between two batches, or inside one
        run.finish()
        # the server ends the dead client's sessions as it notices: then the lock is free
        wait_until(
            at_0003,
            "SELECT NOT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'relation'"
            " AND relation = 'enrollments_lock'::regclass AND mode = 'ExclusiveLock')",
        )
    finally:
        enrollments(db, "throttle")
    cut = status(db)
    assert cut["state"] == "cut"
    assert cut["resume"] == "enrollments backfill --commit"
    assert cut["lock_holder"] is None
    text_form = enrollments(db, "status").stdout
    assert "cut short: enrollments backfill --commit goes on from its checkpoint" in text_form
    resumed = enrollments(db, cut["resume"].split()[1], *cut["resume"].split()[2:])
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming run 1" in resumed.stderr
    audit = json.loads(enrollments(db, "audit", "--json").stdout)
    assert audit["coverage_percent"] == 100.0
    assert status(db)["state"] == "finished"


def test_status_during_the_undo_of_a_downgrade(db, at_0003):
    assert enrollments(db, "backfill", "--commit").returncode == 0
    assert enrollments(db, "pause").returncode == 0
    run = Background(["alembic", "downgrade", "0002"], db)
    try:
        run.wait_for(PAUSED)
        found = status(db)
        assert found["state"] == "paused"
        assert found["run"]["kind"] == "undo"
        assert found["run"]["source"].startswith("backfill undo (downgrade of 0003)")
        assert found["run"]["application_name"] == "alembic"
        assert found["progress"]["done"] == 0 and found["progress"]["total"] > 0
    finally:
        enrollments(db, "resume")
    assert run.finish().returncode == 0
    assert status(db)["state"] == "none"  # the downgrade dropped the runs and the orders


def test_a_run_waiting_for_the_enrollments_lock_is_seen(db, at_0003):
    from enrollments_phase1 import lock

    with at_0003.connect() as holder:  # another writer holds the lock
        holder.execute(text(lock.TRY_SQL))
        run = Background(["enrollments", "backfill", "--commit"], db)
        run.wait_for("waiting for the enrollments lock")
        wait_until(
            at_0003,
            "SELECT count(*) FROM pg_stat_activity WHERE query = :mark AND state = 'idle'",
            mark=lock.WAITING_MARK,
        )
        # the waiter tries every half second; between tries pg_stat_activity shows it
        for _ in range(20):
            found = status(db)
            if found["state"] == "waiting_lock":
                break
        holder.rollback()
    assert found["state"] == "waiting_lock"
    assert found["waiting"]["application_name"] == "enrollments"
    assert run.finish().returncode == 0
