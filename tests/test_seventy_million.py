"""The audit and the gate keep their samples without collecting every gap: on 70 million
missing pairs (1.0.0 failed above 67,108,864 in one status: 'invalid memory alloc
request size'), both answer with the right counts.

The pairs come from a synthetic ``group_members``: a view of 70,000 students x 1,000
courses (one group each), with no enrollment at all.
"""

from __future__ import annotations

import json
import logging

import pytest
from sqlalchemy import text

from enrollments_phase1.migrations.shared.v4 import gate
from tests.helpers import enrollments

STUDENTS, COURSES = 70_000, 1_000
PAIRS = STUDENTS * COURSES


@pytest.fixture
def seventy_million(legacy):
    with legacy.begin() as conn:
        for statement in (
            "INSERT INTO schools (id, name) VALUES (1, 'Everyone')",
            f"INSERT INTO courses (id, school_id, name)"
            f" SELECT i, 1, 'Course ' || i FROM generate_series(1, {COURSES}) i",
            f"INSERT INTO groups (id, school_id, course_id, name)"
            f" SELECT i, 1, i, 'Group ' || i FROM generate_series(1, {COURSES}) i",
            f"INSERT INTO users (id, school_id, email, name)"
            f" SELECT i, 1, 'u' || i || '@x', 'Student ' || i"
            f" FROM generate_series(1, {STUDENTS}) i",
            "ALTER TABLE group_members RENAME TO group_members_table",
            f"""CREATE VIEW group_members AS
                SELECT ((u.id - 1) * {COURSES} + g.id)::int AS id, 1 AS school_id,
                    g.id AS group_id, u.id AS user_id, NULL::varchar(50) AS role_in_team,
                    true AS active
                FROM users AS u CROSS JOIN groups AS g""",
            "ANALYZE",
        ):
            conn.execute(text(statement))
    return legacy


@pytest.mark.slow
def test_the_audit_answers(database_url, seventy_million):
    result = enrollments(
        database_url, "audit", "--json", "--limit", "2", "--statement-timeout", "0"
    )
    data = json.loads(result.stdout)
    assert result.returncode == 2, result.stderr
    assert (data["active_memberships"], data["eligible_pairs"], data["missing"]) == (
        PAIRS,
        PAIRS,
        PAIRS,
    )
    assert (data["covered"], data["inactive"], data["coverage_percent"]) == (0, 0, 0.0)
    assert [(p["student_id"], p["course_id"]) for p in data["missing_pairs"]] == [(1, 1), (1, 2)]


@pytest.mark.slow
def test_the_gate_answers(seventy_million, caplog):
    # In warn mode: a view cannot carry the sync trigger, and warn goes on to count.
    with seventy_million.connect() as conn, caplog.at_level(logging.INFO, logger="migrations"):
        gate.check_coverage(conn, "0099", "warn")
    said = caplog.text
    assert "coverage 0.00%: 0 of 70,000,000 eligible (student, course) pairs" in said
    assert "70,000,000 missing, 0 inactive" in said
    assert said.count("(student 1 Student 1 <u1@x>, course ") == 10
