"""The revision helpers (migrations/shared/v4) on their own: the SQL they
write, run as psql would run it, or online."""

import pytest
from sqlalchemy import text

from enrollments_phase1.migration_env import MigrationSettings
from enrollments_phase1.migrations.shared.v4 import gate, indexes, sync, undo
from enrollments_phase1.names import Tables
from tests.helpers import enrollments_rows, psql, upgrade

T = Tables("public")


def test_gate_block_raises_below_full_coverage(pg_server, database_url, story):
    upgrade(story, "0004")
    with story.begin() as conn:  # the application deletes two enrollments, deactivates one
        conn.execute(
            text("DELETE FROM course_enrollments WHERE student_id IN (1, 3) AND course_id = 2")
        )
        conn.execute(
            text(
                "UPDATE course_enrollments SET active = false"
                " WHERE student_id = 2 AND course_id = 1"
            )
        )
    result = psql(pg_server, database_url, gate.gate_sql(T, "0099", "abort") + ";")
    assert result.returncode != 0
    assert "coverage gate before revision 0099: coverage 57.14%: 4 of 7 eligible" in result.stderr
    assert (
        "(student 1 Ada Lovelace <ada@north.example>, course 2 Physics, missing, 1 group(s)), "
        "(student 2 Zoë O'Connor <zoe@north.example>, course 1 Mathématiques 101, inactive, "
        "1 group(s)), (student 3 " in result.stderr
    )
    assert "HINT:  run enrollments backfill --commit" in result.stderr


def test_gate_block_refuses_without_the_sync_trigger(pg_server, database_url, legacy):
    result = psql(pg_server, database_url, gate.gate_sql(T, "0099", "abort") + ";")
    assert result.returncode != 0
    assert "the sync trigger is not installed, so coverage would not hold" in result.stderr


def test_gate_block_in_warn_mode_only_warns(pg_server, database_url, story):
    result = psql(pg_server, database_url, gate.gate_sql(T, "0099", "warn") + ";")
    assert result.returncode == 0
    assert "WARNING:  coverage gate before revision 0099: coverage 28.57%" in result.stderr
    assert "OVERRIDDEN by -x coverage_gate=warn" in result.stderr
    assert "WARNING:  coverage gate: 2 non_student and 1 cross_school" in result.stderr


def test_gate_block_passes_with_a_notice_when_covered_and_clean(pg_server, database_url, legacy):
    upgrade(legacy, "0004")
    result = psql(pg_server, database_url, gate.gate_sql(T, "0099", "abort") + ";")
    assert result.returncode == 0
    assert result.stderr.strip() == (
        "NOTICE:  coverage gate before revision 0099 passed: 0 of 0 eligible pairs covered"
    )


def test_online_gate_lists_at_most_ten_pairs(story):
    upgrade(story, "0004")
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
        )  # the sync trigger enrolls these at once; the 7 deleted above stay missing
    with story.connect() as conn, pytest.raises(gate.CoverageGateError) as failure:
        gate.check_coverage(conn, "0099")
    message = str(failure.value)
    assert message.count(", missing, ") == 7 and message.count("(student ") == 7
    assert "coverage 74.07%: 20 of 27 eligible" in message
    assert "run enrollments backfill --commit, then alembic upgrade head again" in message


def test_drop_invalid_index_query_leaves_a_valid_index_alone(pg_server, database_url, engine):
    upgrade(engine, "0002")
    result = psql(
        pg_server,
        database_url,
        indexes.drop_invalid_sql(T, indexes_name := "ix_course_enrollment_course_active"),
    )
    assert result.returncode == 0, result.stderr
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT to_regclass('{indexes_name}') IS NOT NULL")).scalar()


def test_the_undo_touches_only_recorded_rows_still_as_left(database_url, story):
    upgrade(story, "0004")
    with story.begin() as conn:
        # Not the backfill's: an enrollment the application added after it.
        conn.execute(text("INSERT INTO course_enrollments (course_id, student_id) VALUES (4, 1)"))
        for statement in undo.function_sql(T):
            conn.exec_driver_sql(statement, execution_options={"no_parameters": True})
        row = conn.exec_driver_sql(
            "SELECT * FROM public.course_enrollments_undo_batch("
            f"'batches', {undo.SOURCES['batches']}, 100)"
        ).one()
    assert (row.records, row.deleted_rows, row.deactivated_rows) == (5, 3, 2)
    assert (row.referenced_rows, row.claimed_rows, row.changed_rows) == (0, 0, 0)
    assert (4, 1, True) in enrollments_rows(story)


def test_sync_trigger_installs_and_drops_idempotently(pg_server, database_url, legacy):
    upgrade(legacy, "0003")
    settings = MigrationSettings.from_x_arguments({})
    install = (
        sync.queue_sql(T, settings)
        + ";\nBEGIN;\n"
        + ";\n".join(sync.objects_sql(T))
        + ";\nCOMMIT;\n"
        + sync.apply_trigger_sql(T, settings)
        + ";\n"
        + sync.create_triggers_sql(T, settings)
        + ";\n"
        + sync.strays_sql(T)
        + ";"
    )
    for _ in range(2):
        result = psql(pg_server, database_url, install)
        assert result.returncode == 0, result.stderr
    with legacy.connect() as conn:
        assert conn.execute(text(sync.installed_sql(T))).scalar() is True
    drop = "BEGIN;\n" + sync.drop_sql(T, settings) + ";\nCOMMIT;"
    for _ in range(2):
        result = psql(pg_server, database_url, drop)
        assert result.returncode == 0, result.stderr
    with legacy.connect() as conn:
        assert conn.execute(text(sync.keeping_sql(T))).scalar() is False
