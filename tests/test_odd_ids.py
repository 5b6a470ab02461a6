"""Pairs are (student_id, course_id) everywhere: any int4 id works, the smallest and the
largest included; and a row deleted while the audit runs breaks nothing."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import event, text

from enrollments_phase1 import coverage
from tests.helpers import alembic, enrollments, enrollments_rows, psql, upgrade

LOWEST, HIGHEST = -2147483648, 2147483647


@pytest.fixture
def odd(legacy):
    """Students and courses with ids -2147483648, -5 and 2147483647; memberships too."""
    with legacy.begin() as conn:
        conn.execute(text("INSERT INTO schools (id, name) VALUES (-5, 'Negative'), (7, 'Seven')"))
        conn.execute(
            text(
                "INSERT INTO users (id, school_id, email, name) VALUES"
                f" ({LOWEST}, -5, 'lowest@x', 'Lowest'), (-5, -5, 'minus5@x', 'Minus Five'),"
                f" ({HIGHEST}, -5, 'highest@x', 'Highest'), (1, 7, 'one@x', 'One')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO courses (id, school_id, name) VALUES (-5, -5, 'Course -5'),"
                f" ({HIGHEST}, -5, 'Course max'), ({LOWEST}, 7, 'Course min')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO groups (id, school_id, course_id, name) VALUES"
                f" ({LOWEST}, -5, -5, 'G1'), (-5, -5, {HIGHEST}, 'G2'),"
                f" ({HIGHEST}, 7, {LOWEST}, 'G3')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO group_members (id, school_id, group_id, user_id) VALUES"
                f" ({LOWEST}, -5, {LOWEST}, {LOWEST}), (-5, -5, {LOWEST}, -5),"
                f" (0, -5, -5, {HIGHEST}), ({HIGHEST}, -5, -5, {LOWEST}),"
                f" (5, 7, {HIGHEST}, 1), (6, 7, {HIGHEST}, -5)"  # -5 in another school's course
            )
        )
        conn.execute(
            text(
                "INSERT INTO course_enrollments (course_id, student_id, active) VALUES"
                f" (-5, -5, false), ({LOWEST}, 1, true)"
            )
        )
    return legacy


def test_the_audit(database_url, odd):
    result = enrollments(database_url, "audit", "--json")
    assert result.stdout, result.stderr
    data = json.loads(result.stdout)
    assert result.returncode == 2, result.stderr
    assert (data["eligible_pairs"], data["covered"], data["inactive"], data["missing"]) == (
        5,
        1,
        1,
        3,
    )
    assert data["anomalies"] == {"non_student": 0, "cross_school": 1}
    assert [(p["student_id"], p["course_id"]) for p in data["missing_pairs"]] == [
        (LOWEST, -5),
        (LOWEST, HIGHEST),
        (HIGHEST, HIGHEST),
    ]
    assert [(p["student_id"], p["course_id"]) for p in data["inactive_pairs"]] == [(-5, -5)]


def test_the_backfill_and_the_revisions(database_url, odd):
    assert (
        enrollments(
            database_url, "backfill", "--commit", "--unrecorded", "--batch-size", "2"
        ).returncode
        == 0
    )
    assert json.loads(enrollments(database_url, "audit", "--json").stdout)["missing"] == 0
    result = alembic(database_url, "upgrade", "head")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (HIGHEST, HIGHEST, True) in enrollments_rows(odd)


def test_the_gate_online_and_offline(pg_server, database_url, odd):
    upgrade(odd, "0004")
    with odd.begin() as conn:
        conn.execute(text(f"DELETE FROM course_enrollments WHERE student_id = {LOWEST}"))
    online = alembic(database_url, "upgrade", "head")
    assert online.returncode != 0
    assert "Traceback" not in online.stdout + online.stderr
    assert f"(student {LOWEST} Lowest <lowest@x>, course -5 Course -5, missing, 1 group(s))" in (
        online.stdout
    )
    assert f"(student {LOWEST} Lowest <lowest@x>, course {HIGHEST} Course max, missing" in (
        online.stdout
    )
    offline = psql(pg_server, database_url, alembic(None, "upgrade", "0004:head", "--sql").stdout)
    assert offline.returncode != 0
    assert f"(student {LOWEST} Lowest <lowest@x>, course -5 Course -5, missing" in offline.stderr


def test_a_sampled_user_deleted_between_the_audits_statements(database_url, story, engine):
    """The audit's counts and samples come from one REPEATABLE READ snapshot: a student
    deleted (by another session, committed) after the counts is still sampled as counted."""
    other = engine.execution_options(isolation_level="AUTOCOMMIT")
    deleted = []

    def delete_after_the_counts(conn, cursor, statement, *args):
        if not deleted and "GROUP BY 1, 2" in statement:
            with other.connect() as session:
                session.execute(text("DELETE FROM users WHERE id = 1"))  # Ada
            deleted.append(1)

    reader = engine.execution_options(isolation_level="REPEATABLE READ")
    event.listen(engine, "after_cursor_execute", delete_after_the_counts)
    try:
        with reader.connect() as conn, conn.begin():
            report = coverage.audit(conn, limit=10)
    finally:
        event.remove(engine, "after_cursor_execute", delete_after_the_counts)
    assert deleted == [1]
    assert report.missing == 3
    assert [p.student_id for p in report.missing_pairs] == [1, 3, 5]
    assert report.missing_pairs[0].student_name == "Ada Lovelace"
