"""The sync trigger at head: every write of the legacy application that makes a pair
eligible gets its enrollment in the same transaction; nothing else changes."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from enrollments_phase1.migrations.shared.v4 import sync
from enrollments_phase1.names import Tables
from tests.helpers import alembic, enrollments, enrollments_rows, libpq_url, upgrade


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


def test_a_bulk_activation_after_one_row_updates_is_matched_in_one_pass(database_url, at_head):
    """A session whose first update of memberships touched one row (the plans of its
    trigger are cached then) activates 40,000 at once: the old and new rows are matched by
    a hash join, not a nested loop over both (40,000 squared: minutes), so it finishes
    well inside a 60 s statement_timeout and enrolls all of them."""
    import psycopg2

    write(
        at_head,
        "INSERT INTO users (id, school_id, email, name)"
        " SELECT 500000 + i, 1, 'off' || i || '@x', 'Off' FROM generate_series(1, 40000) i",
        "INSERT INTO group_members (school_id, group_id, user_id, active)"
        " SELECT 1, 1, 500000 + i, false FROM generate_series(1, 40000) i",
    )
    app = psycopg2.connect(libpq_url(database_url))
    try:
        cur = app.cursor()
        cur.execute("SET statement_timeout = '60s'")
        cur.execute("UPDATE group_members SET active = true WHERE user_id = 500001")
        app.commit()
        cur.execute("UPDATE group_members SET active = true WHERE user_id > 500001")
        app.commit()
    finally:
        app.close()
    with at_head.connect() as conn:
        enrolled = conn.execute(
            text(
                "SELECT count(*) FROM course_enrollments"
                " WHERE course_id = 1 AND student_id > 500000 AND active"
            )
        ).scalar()
    assert enrolled == 40000


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


# Transactions of several statements, where a pair is eligible at the end of one statement
# and not at the end of the transaction. The trigger enrolls the pairs eligible at the end
# of a statement, and never takes one back: the same whether it applies at commit (its
# constraints deferred, the default) or at the end of each statement (immediate).
WITHIN_ONE_TRANSACTION = {
    "a membership inserted, then deleted": [
        "INSERT INTO group_members (school_id, group_id, user_id) VALUES (1, 3, 7)",
        "DELETE FROM group_members WHERE group_id = 3 AND user_id = 7",
    ],
    "a teacher made a student, then a teacher again": [
        "UPDATE users SET role = 'student' WHERE id = 4",
        "UPDATE users SET role = 'teacher' WHERE id = 4",
    ],
    "a teacher's membership, the teacher made a student, the membership deleted": [
        "INSERT INTO group_members (school_id, group_id, user_id) VALUES (1, 3, 4)",
        "UPDATE users SET role = 'student' WHERE id = 4",
        "DELETE FROM group_members WHERE group_id = 3 AND user_id = 4",
    ],
    "a membership moved to another course, then back": [
        "UPDATE group_members SET group_id = 4 WHERE group_id = 2 AND user_id = 1",
        "UPDATE group_members SET group_id = 2 WHERE group_id = 4 AND user_id = 1",
    ],
}


@pytest.mark.parametrize("name", WITHIN_ONE_TRANSACTION)
def test_the_same_enrollments_whether_deferred_or_immediate(pg_server, at_head, name):
    from sqlalchemy import create_engine

    at_head.dispose()
    results = {}
    for mode in ("deferred", "immediate"):
        url = pg_server.create_database(template=at_head.url.database)
        engine = create_engine(url)
        try:
            with engine.begin() as conn:
                if mode == "immediate":
                    conn.execute(text("SET CONSTRAINTS ALL IMMEDIATE"))
                for statement in WITHIN_ONE_TRANSACTION[name]:
                    conn.execute(text(statement))
            results[mode] = enrollments_rows(engine)
        finally:
            engine.dispose()
            pg_server.drop_database(url)
    assert results["deferred"] == results["immediate"]
    assert results["deferred"] != enrollments_rows(at_head)  # a pair was enrolled


# Sequential scans, and the rows read through indexes, on every table the trigger reads.
READS = """SELECT coalesce(sum(t.seq_scan), 0),
    coalesce(sum((SELECT sum(i.idx_tup_read) FROM pg_stat_user_indexes AS i
                  WHERE i.relid = t.relid)), 0)
FROM pg_stat_user_tables AS t
WHERE t.relname IN ('enrollment_backfill_changes', 'enrollment_backfill_batches',
                    'enrollment_backfill_claims', 'course_enrollments', 'group_members', 'users',
                    'groups', 'courses', 'course_enrollments_sync_pending',
                    'course_enrollments_sync_guard')"""


def test_every_statement_reads_by_key_whatever_the_statistics(pg_server, database_url, at_head):
    """The plans an application session caches while the record is empty (and never
    analyzed: autovacuum off) still read every table by key once the record holds 100,000
    rows and the tables have grown: not one sequential scan, and a few index entries per
    write (not the record's, nor a table's, whole index), counted by the server."""
    import psycopg2

    app = psycopg2.connect(libpq_url(database_url), application_name="application")
    watcher = psycopg2.connect(libpq_url(database_url))
    watcher.autocommit = True

    def reads() -> tuple[int, int]:
        cur = watcher.cursor()
        cur.execute("SELECT pg_stat_clear_snapshot()")
        cur.execute(READS)
        return cur.fetchone()

    def application_writes(first_user: int) -> None:
        cur = app.cursor()
        cur.execute(  # a membership, a teacher made a student, a group moved, a course moved
            "INSERT INTO users (id, school_id, email, name, role)"
            " VALUES (%s, 1, %s, 'N', 'teacher')",
            (first_user, f"n{first_user}@x"),
        )
        cur.execute(
            "INSERT INTO group_members (school_id, group_id, user_id) VALUES (1, 3, %s)",
            (first_user,),
        )
        cur.execute("UPDATE users SET role = 'student' WHERE id = %s", (first_user,))
        cur.execute("UPDATE groups SET course_id = 1 WHERE id = 3")
        cur.execute("UPDATE groups SET course_id = 2 WHERE id = 3")
        cur.execute("UPDATE courses SET school_id = 2 WHERE id = 3")
        cur.execute("UPDATE courses SET school_id = 1 WHERE id = 3")
        app.commit()
        cur.execute("SELECT pg_stat_force_next_flush()")
        app.commit()

    try:
        _, first_index = reads()
        application_writes(100_001)  # the session's plans are made now, the record empty
        _, small_index = reads()
        with at_head.begin() as conn:  # the record and the tables grow; no ANALYZE
            conn.execute(
                text(
                    "INSERT INTO users (id, school_id, email, name)"
                    " SELECT 200000 + i, 1, 'g' || i || '@x', 'G'"
                    " FROM generate_series(1, 100000) i;"
                    " INSERT INTO course_enrollments (course_id, student_id)"
                    " SELECT 1, 200000 + i FROM generate_series(1, 100000) i;"
                    " INSERT INTO enrollment_backfill_changes"
                    " (revision, enrollment_id, course_id, student_id, action)"
                    " SELECT 'grown', id, course_id, student_id, 'created' FROM course_enrollments"
                    " WHERE student_id > 200000;"
                    " INSERT INTO enrollment_backfill_batches"
                    " (run_id, pass, last_student_id, last_course_id, xid, row_xmin, created,"
                    " reactivated)"
                    " SELECT 0, 1, student_id, course_id, '1', 5000000 + id, ARRAY[id], '{}'"
                    " FROM course_enrollments WHERE student_id > 200000;"
                    " INSERT INTO group_members (school_id, group_id, user_id)"
                    " SELECT 1, 1, 200000 + i FROM generate_series(1, 100000) i"
                )
            )
        seq_before, index_before = reads()
        application_writes(100_002)
        seq_after, index_after = reads()
        assert seq_after == seq_before
        # The same writes read about as many index entries as they did on the small tables
        # (a few more: one membership more in the group and the course they move, and the
        # dead row versions of the first writes, with no vacuum), though each table holds
        # 100,000 rows more: 1.2.0 read 300,000 more here.
        small, grown = small_index - first_index, index_after - index_before
        assert grown <= small + 100, (small, grown)
    finally:
        app.close()
        watcher.close()
    with at_head.connect() as conn:
        assert conn.execute(
            text(
                "SELECT active FROM course_enrollments WHERE student_id = 100002 AND course_id = 2"
            )
        ).scalar()
