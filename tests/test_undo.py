"""An exact undo: below the backfill revision, course_enrollments is as it was before the
first backfill, whichever way that backfill ran; rows the application changed since are
left and counted. And 0001's downgrade refuses to drop tables that hold rows."""

from __future__ import annotations

import psycopg2
import pytest
from sqlalchemy import text

from bench.generate import generate
from enrollments_phase1 import lock
from enrollments_phase1.errors import EX_SCHEMA
from enrollments_phase1.migrations.shared.v4 import sync
from enrollments_phase1.names import Tables
from tests.helpers import (
    WAITING_ON_LOCK,
    Background,
    alembic,
    enrollments,
    libpq_url,
    psql,
    record_size,
    snapshot,
    upgrade,
    wait_until,
)


def full_table(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                text("SELECT id, course_id, student_id, active FROM course_enrollments ORDER BY id")
            )
        ]


def tables(engine) -> set[str]:
    with engine.connect() as conn:
        return set(
            conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
            .scalars()
            .all()
        )


def test_the_command_then_the_upgrade_then_downgrade_0003(database_url, story):
    upgrade(story, "0003")
    before = full_table(story)
    assert enrollments(database_url, "backfill", "--commit").returncode == 0
    assert alembic(database_url, "upgrade", "head").returncode == 0
    assert full_table(story) != before

    result = alembic(database_url, "downgrade", "0003")

    assert result.returncode == 0, result.stderr
    assert full_table(story) == before
    assert "changed since" not in result.stderr


def test_the_command_below_0003_refuses_without_unrecorded(database_url, story):
    before = full_table(story)

    result = enrollments(database_url, "backfill", "--commit")

    assert result.returncode == EX_SCHEMA
    assert result.stderr.splitlines()[-1] == (
        "enrollments backfill: error: the database is below revision 0003 (no "
        "enrollment_backfill_changes): a backfill here would not be recorded, so no downgrade "
        "could undo it and a cut run would start over; run alembic upgrade 0003 first, or pass "
        "--unrecorded to write it anyway; nothing was changed"
    )
    assert full_table(story) == before


def test_the_command_below_0003_with_unrecorded_says_it_cannot_be_undone(database_url, story):
    result = enrollments(database_url, "backfill", "--commit", "--unrecorded")
    assert result.returncode == 0
    warnings = [line.split(" ", 2)[2] for line in result.stderr.splitlines() if " WARNING " in line]
    assert warnings == [
        "WARNING enrollments_phase1.backfill: no enrollment_backfill_changes table (the "
        "database is below revision 0003): these changes cannot be undone by a downgrade, "
        "and a cut run starts over; alembic upgrade 0003 first makes them undoable and "
        "resumable"
    ]
    assert full_table(story) != []


def test_a_batched_upgrade_cut_then_downgrade_0001(database_url, legacy):
    with legacy.begin() as conn:
        generate(conn, 1_500)
    before = full_table(legacy)
    upgrade(legacy, "0003")
    with legacy.connect() as conn:  # an inactive enrollment the walk reaches late
        target = conn.execute(
            text(
                "SELECT ce.id FROM course_enrollments ce"
                " JOIN groups g ON g.course_id = ce.course_id"
                " JOIN group_members gm ON gm.group_id = g.id AND gm.user_id = ce.student_id"
                " JOIN users u ON u.id = gm.user_id"
                " WHERE NOT ce.active AND gm.active AND u.role = 'student'"
                " GROUP BY ce.id HAVING min(gm.id) > (SELECT max(id) * 2 / 3 FROM group_members)"
                " ORDER BY ce.id LIMIT 1"
            )
        ).scalar_one()
    holder = psycopg2.connect(libpq_url(database_url))
    holder.cursor().execute("SELECT 1 FROM course_enrollments WHERE id = %s FOR UPDATE", (target,))
    run = Background(
        ["alembic", "-x", "backfill_batch_size=500", "-x", "lock_timeout=60s", "upgrade", "head"],
        database_url,
    )
    pid = wait_until(legacy, WAITING_ON_LOCK, app="alembic")
    with legacy.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    holder.rollback()
    holder.close()
    cut = run.finish()
    assert cut.returncode != 0 and "lost the connection" in cut.stdout
    assert alembic(database_url, "current").stdout.strip() == "0003"
    assert record_size(legacy) > 0

    result = alembic(database_url, "downgrade", "0001")

    assert result.returncode == 0, result.stdout + result.stderr
    assert full_table(legacy) == before
    assert "enrollment_backfill_changes" not in tables(legacy)
    with legacy.connect() as conn:
        assert conn.execute(text(sync.keeping_sql(Tables()))).scalar() is False
        assert (
            conn.execute(
                text("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'course_enrollments_sync%'")
            ).scalar()
            == 0
        )


def test_a_row_changed_since_and_changed_back_is_left_and_counted(database_url, story):
    upgrade(story, "0003")
    before = full_table(story)
    assert alembic(database_url, "upgrade", "head").returncode == 0
    with story.begin() as conn:  # the application deactivates Ada's Physics enrollment...
        conn.execute(
            text(
                "UPDATE course_enrollments SET active = false"
                " WHERE course_id = 2 AND student_id = 1"
            )
        )
    with story.begin() as conn:  # ...and activates it again: the same values as the backfill's
        conn.execute(
            text(
                "UPDATE course_enrollments SET active = true WHERE course_id = 2 AND student_id = 1"
            )
        )
    with story.connect() as conn:  # freezing keeps the row versions the record compares
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
            "VACUUM (FREEZE) course_enrollments"
        )

    result = alembic(database_url, "downgrade", "0003")

    assert result.returncode == 0, result.stderr
    assert (
        "backfill undo (downgrade of 0004): kept 1 recorded enrollments as they are: "
        "1 changed since the backfill" in result.stderr
    )
    after = full_table(story)
    ada = [r for r in after if r[1:3] == (2, 1)]
    assert len(ada) == 1 and ada[0][3] is True  # left as the application set it
    assert [r for r in after if r[1:3] != (2, 1)] == before


def test_0003_downgrade_undoes_what_the_command_recorded(database_url, story):
    upgrade(story, "0003")
    before = full_table(story)
    assert enrollments(database_url, "backfill", "--commit").returncode == 0
    result = alembic(database_url, "downgrade", "0002")
    assert result.returncode == 0, result.stderr
    assert full_table(story) == before
    assert "enrollment_backfill_changes" not in tables(story)


def test_downgrade_base_refuses_to_drop_tables_with_rows(database_url, story):
    before = snapshot(story)  # at 0001, before Phase 1
    upgrade(story, "head")

    result = alembic(database_url, "downgrade", "base")

    assert result.returncode != 0
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
    assert failed == [
        "FAILED: refusing to drop the legacy tables: schools, users, courses, groups, "
        "group_members, course_enrollments hold rows (production data); to drop them anyway "
        "(tests, empty databases): alembic -x drop_legacy_schema=yes downgrade base"
    ]
    # Down to 0001 the backfill was undone exactly; 0001 itself refused.
    assert snapshot(story) == before
    assert alembic(database_url, "current").stdout.strip() == "0001"


def test_the_offline_downgrade_refuses_too(pg_server, database_url, story):
    before = snapshot(story)
    script = alembic(None, "downgrade", "0001:base", "--sql").stdout
    result = psql(pg_server, database_url, script)
    assert result.returncode != 0
    assert "refusing to drop the legacy tables: they hold rows" in result.stderr
    assert "alembic -x drop_legacy_schema=yes downgrade base" in result.stderr
    assert snapshot(story) == before


@pytest.mark.parametrize("offline", [False, True], ids=["online", "offline"])
def test_the_option_drops_them(pg_server, database_url, story, offline):
    if offline:
        script = alembic(None, "-x", "drop_legacy_schema=yes", "downgrade", "0001:base", "--sql")
        result = psql(pg_server, database_url, script.stdout)
    else:
        result = alembic(database_url, "-x", "drop_legacy_schema=yes", "downgrade", "base")
    assert result.returncode == 0, result.stdout + result.stderr
    assert tables(story) <= {"alembic_version", lock.TABLE}  # both kept, as Alembic keeps its own
