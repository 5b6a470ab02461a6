"""The sync trigger at head: every write of the legacy application that makes a pair
eligible gets its enrollment in the same transaction; nothing else changes."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from enrollments_phase1.migrations.shared.v3 import sync
from enrollments_phase1.names import Tables
from tests.helpers import alembic, enrollments, enrollments_rows, upgrade


@pytest.fixture
def at_head(story):
    upgrade(story, "head")
    return story


def write(engine, *statements: str) -> None:
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))


def assert_full_coverage(database_url) -> None:
    audit = enrollments(database_url, "audit", "--json")
    data = json.loads(audit.stdout)
    assert audit.returncode in (0, 1), audit.stderr
    assert (data["coverage_percent"], data["missing"], data["inactive"]) == (100.0, 0, 0)


# (what the legacy application does, the enrollment that must then exist, active)
WRITES = {
    "membership inserted active": (
        ["INSERT INTO group_members (school_id, group_id, user_id) VALUES (1, 3, 7)"],
        (2, 7),
    ),
    "membership activated from false": (
        ["UPDATE group_members SET active = true WHERE group_id = 3 AND user_id = 2"],
        (2, 2),  # Zoë's inactive Physics enrollment, reactivated
    ),
    "membership activated from NULL": (
        ["UPDATE group_members SET active = true WHERE group_id = 1 AND user_id = 7"],
        (1, 7),
    ),
    "membership moved to a group of another course": (
        ["UPDATE group_members SET group_id = 4 WHERE group_id = 2 AND user_id = 1"],
        (3, 1),
    ),
    "membership moved to another user": (
        ["UPDATE group_members SET user_id = 6 WHERE group_id = 3 AND user_id = 1"],
        (2, 6),  # Olga already active in Physics: stays so
    ),
    "teacher becomes a student": (
        ["UPDATE users SET role = 'student' WHERE id = 4"],
        (1, 4),
    ),
    "user moves to the course's school": (
        ["UPDATE users SET school_id = 1 WHERE id = 5"],
        (1, 5),  # Émile in Math B
    ),
    "group moved to another course": (
        [
            "INSERT INTO courses (school_id, name) VALUES (1, 'Chemistry')",
            "UPDATE groups SET course_id = 5 WHERE id = 3",
        ],
        (5, 1),  # Physics A's members now take Chemistry: Ada, Bob
    ),
    "course moved to another school": (
        ["UPDATE courses SET school_id = 2 WHERE id = 1"],
        (1, 5),  # Émile (school 2) in Math B
    ),
}


@pytest.mark.parametrize("name", WRITES)
def test_a_legacy_write_gets_its_enrollment(database_url, at_head, name):
    statements, pair = WRITES[name]
    write(at_head, *statements)
    assert (pair[0], pair[1], True) in enrollments_rows(at_head)
    assert_full_coverage(database_url)


def test_a_bulk_insert_is_enrolled_in_one_statement(database_url, at_head):
    write(
        at_head,
        "INSERT INTO users (school_id, email, name)"
        " SELECT 1, 'bulk' || i || '@x', 'Bulk ' || i FROM generate_series(1, 500) i",
        "INSERT INTO group_members (school_id, group_id, user_id)"
        " SELECT 1, g, u.id FROM users u, (VALUES (1), (2), (3)) AS v(g)"
        " WHERE u.email LIKE 'bulk%'",
    )
    with at_head.connect() as conn:
        bulk = conn.execute(
            text(
                "SELECT count(*) FROM course_enrollments ce JOIN users u ON u.id = ce.student_id"
                " WHERE u.email LIKE 'bulk%' AND ce.active"
            )
        ).scalar()
    assert bulk == 1000  # 500 students x 2 courses (groups 1 and 2 are both course 1)
    assert_full_coverage(database_url)


def test_it_never_deactivates(database_url, at_head):
    before = enrollments_rows(at_head)
    write(
        at_head,
        "UPDATE group_members SET active = false WHERE user_id = 1",
        "UPDATE group_members SET active = NULL WHERE user_id = 3",
        "DELETE FROM group_members WHERE user_id = 6",
        "UPDATE users SET role = 'teacher' WHERE id = 2",
    )
    assert enrollments_rows(at_head) == before


def test_it_never_enrolls_an_anomaly(database_url, at_head):
    before = enrollments_rows(at_head)
    write(
        at_head,
        "INSERT INTO group_members (school_id, group_id, user_id) VALUES (1, 3, 4)",  # teacher
        "INSERT INTO group_members (school_id, group_id, user_id) VALUES (1, 4, 8)",  # admin
        "INSERT INTO group_members (school_id, group_id, user_id) VALUES (1, 3, 5)",  # school 2
        "UPDATE users SET school_id = 2 WHERE id = 7",  # Nina moves away
        "UPDATE group_members SET active = true WHERE user_id = 7",
    )
    assert enrollments_rows(at_head) == before


def test_the_application_role_needs_no_privilege_on_course_enrollments(database_url, at_head):
    from sqlalchemy import create_engine

    write(
        at_head,
        "DROP ROLE IF EXISTS legacy_app",
        "CREATE ROLE legacy_app LOGIN",
        "GRANT SELECT, INSERT, UPDATE ON group_members, users, groups, courses TO legacy_app",
        "GRANT USAGE ON SEQUENCE group_members_id_seq TO legacy_app",
    )
    app = create_engine(database_url.set(username="legacy_app", password=None))
    try:
        with app.begin() as conn:
            conn.execute(
                text("INSERT INTO group_members (school_id, group_id, user_id) VALUES (1, 3, 7)")
            )
        assert (2, 7, True) in enrollments_rows(at_head)
    finally:
        app.dispose()
        write(at_head, "DROP OWNED BY legacy_app", "DROP ROLE legacy_app")


def test_the_downgrade_below_0004_drops_it(database_url, at_head):
    assert alembic(database_url, "downgrade", "0003").returncode == 0
    with at_head.connect() as conn:
        assert conn.execute(text(sync.keeping_sql(Tables()))).scalar() is False
        assert (
            conn.execute(
                text("SELECT count(*) FROM pg_proc WHERE proname LIKE 'course_enrollments_sync%'")
            ).scalar()
            == 0
        )
