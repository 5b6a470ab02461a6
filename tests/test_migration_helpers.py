"""The revision helpers on their own: the SQL they write, run as psql would run it."""

import pytest
from sqlalchemy import text

from migrations.shared.v1 import helpers
from tests.helpers import enrollments_rows, psql, upgrade


def test_gate_block_raises_below_full_coverage(pg_server, database_url, story):
    result = psql(pg_server, database_url, helpers.gate_sql("0099", "abort") + ";")
    assert result.returncode != 0
    assert "coverage gate before revision 0099: 5 of 7 eligible pairs lack" in result.stderr
    assert "(student 1, course 2, missing), (student 3, course 2, missing)" in result.stderr
    assert "(student 2, course 1, inactive)" in result.stderr
    assert "HINT:  run enrollments backfill --commit" in result.stderr


def test_gate_block_in_warn_mode_only_warns(pg_server, database_url, story):
    result = psql(pg_server, database_url, helpers.gate_sql("0099", "warn") + ";")
    assert result.returncode == 0
    assert "WARNING:  coverage gate before revision 0099" in result.stderr
    assert "WARNING:  coverage gate: 2 non_student and 1 cross_school" in result.stderr


def test_gate_block_passes_silently_when_covered_and_clean(pg_server, database_url, legacy):
    result = psql(pg_server, database_url, helpers.gate_sql("0099", "abort") + ";")
    assert (result.returncode, result.stderr) == (0, "")


def test_online_gate_lists_at_most_ten_pairs(story):
    with story.begin() as conn:
        conn.execute(text("DELETE FROM course_enrollments"))
        conn.execute(
            text(
                "INSERT INTO users (school_id, email, name)"
                " SELECT 1, 'extra' || i || '@x', 'Extra ' || i FROM generate_series(1, 20) i"
            )
        )
        conn.execute(
            text(
                "INSERT INTO group_members (school_id, group_id, user_id)"
                " SELECT 1, 3, id FROM users WHERE email LIKE 'extra%'"
            )
        )
    with story.connect() as conn, pytest.raises(helpers.CoverageGateError) as failure:
        helpers.check_coverage(conn, "0099")
    message = str(failure.value)
    assert message.count("\n  missing: ") == 10
    assert "coverage 0.00%: 0 of 27 eligible" in message
    assert helpers.FIX_COMMAND in message


def test_drop_invalid_index_block_leaves_a_valid_index_alone(pg_server, database_url, engine):
    upgrade(engine, "0002")
    result = psql(
        pg_server,
        database_url,
        helpers.drop_invalid_index_sql("ix_course_enrollment_course_active") + ";",
    )
    assert result.returncode == 0
    with engine.connect() as conn:
        assert conn.execute(
            text("SELECT to_regclass('ix_course_enrollment_course_active') IS NOT NULL")
        ).scalar()


def test_undo_statements_touch_only_recorded_rows_still_as_left(database_url, story):
    upgrade(story, "0004")
    with story.begin() as conn:
        # Not the revision's: an enrollment the application added after the backfill.
        conn.execute(text("INSERT INTO course_enrollments (course_id, student_id) VALUES (4, 1)"))
        deleted, deactivated, forgotten = (
            conn.exec_driver_sql(sql).rowcount for sql in helpers.undo_backfill_statements("0004")
        )
    assert (deleted, deactivated, forgotten) == (3, 2, 5)
    assert (4, 1, True) in enrollments_rows(story)
