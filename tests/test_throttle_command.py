"""``enrollments throttle``: a sleep between batches, a batch duration, a rate, taken up
before the next batch by the running backfill, and removed the same way."""

from __future__ import annotations

import statistics

from sqlalchemy import text

from bench.generate import generate
from tests.helpers import Background, enrollments, upgrade, wait_until

GAPS = """SELECT extract(epoch FROM written_at - lag(written_at) OVER (ORDER BY id))
FROM enrollment_backfill_batches ORDER BY id"""


def test_a_throttle_slows_the_run_and_its_removal_lets_it_go(db, legacy):
    with legacy.begin() as conn:
        generate(conn, 600)
    upgrade(legacy, "0003")
    throttled = enrollments(db, "throttle", "--sleep", "300ms")
    assert throttled.returncode == 0
    assert throttled.stdout.strip() == "throttle: 300 ms between batches, from the next batch on"
    run = Background(["enrollments", "backfill", "--commit", "--batch-size", "20"], db)
    try:
        run.wait_for("throttled by")
        wait_until(legacy, "SELECT count(*) >= 4 FROM enrollment_backfill_batches")
        removed = enrollments(db, "throttle")
        assert removed.returncode == 0
        assert removed.stdout.startswith("no throttle")
        run.wait_for("no throttle: batches sized toward their target")
        with legacy.connect() as conn:
            slow = conn.execute(text("SELECT count(*) FROM enrollment_backfill_batches")).scalar()
        result = run.finish()
    finally:
        enrollments(db, "throttle")
    assert result.returncode == 0, result.stderr
    with legacy.connect() as conn:
        gaps = [g for (g,) in conn.execute(text(GAPS)) if g is not None]
    before, after = gaps[: slow - 2], gaps[slow:]
    assert len(after) >= 5, gaps
    assert min(before) >= 0.3, before  # each batch's transaction starts 300 ms after the last
    assert statistics.median(after) < 0.15, after


def test_a_rate_bounds_the_pairs_a_second(db, legacy):
    with legacy.begin() as conn:
        generate(conn, 300)
    upgrade(legacy, "0003")
    assert enrollments(db, "throttle", "--max-rate", "400").returncode == 0
    try:
        result = enrollments(db, "backfill", "--commit", "--batch-size", "50", "--json")
    finally:
        enrollments(db, "throttle")
    assert result.returncode == 0, result.stderr
    import json

    data = json.loads(result.stdout)
    pairs = data["created"] + data["reactivated"]
    assert pairs >= 400
    assert data["seconds"] >= (pairs - 50) / 400  # the last batch needs no wait after it


def test_the_scripts_backfill_is_throttled_too(pg_server, database_url, db, legacy):
    from tests.helpers import alembic, psql

    with legacy.begin() as conn:
        generate(conn, 200)
    upgrade(legacy, "0003")
    script = alembic(None, "-x", "backfill_batch_size=100", "upgrade", "0003:0004", "--sql").stdout
    assert enrollments(db, "throttle", "--sleep", "300ms").returncode == 0
    try:
        result = psql(pg_server, database_url, script)
    finally:
        enrollments(db, "throttle")
    assert result.returncode == 0, result.stderr
    with legacy.connect() as conn:
        gaps = [g for (g,) in conn.execute(text(GAPS)) if g is not None]
    # A batch's record carries its transaction's start; in the script the sleep after a
    # batch runs in the next batch's transaction: every gap but the first holds one.
    assert len(gaps) >= 3 and min(gaps[1:]) >= 0.3, gaps
