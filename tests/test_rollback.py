"""A rollback that loses nothing: ``alembic downgrade 0003`` never deletes or changes a row
of another table, never leaves half a revision, and keeps what the application wrote
since the deploy.

1.1.0's undo deleted backfilled enrollments that other tables referenced (a CASCADE took
23,000 grades with them), dropped the sync triggers before a failure that left it at 0004
without them, and deleted enrollments of pairs the application had just written a
membership for.

In the sample story the backfill creates Ada in Physics (2, 1), Bob in Physics (2, 3) and
Émile in Français (4, 5), and reactivates Zoë in Mathématiques (1, 2) and Olga in History
(3, 6).
"""

from __future__ import annotations

import psycopg2
import pytest
from sqlalchemy import text

from bench.generate import generate
from enrollments_phase1.migrations.shared.v4 import sync
from enrollments_phase1.names import Tables
from tests.helpers import (
    HEAD,
    WAITING_ON_LOCK,
    Background,
    alembic,
    libpq_url,
    psql,
    record_size,
    upgrade,
    wait_until,
)

REFERENCING = [
    "CREATE TABLE grades (id serial PRIMARY KEY, enrollment_id integer"
    " REFERENCES course_enrollments ON DELETE CASCADE, grade text)",
    "CREATE TABLE attendance (id serial PRIMARY KEY, enrollment_id integer"
    " REFERENCES course_enrollments ON DELETE SET NULL, day date)",
    "CREATE TABLE notes (id serial PRIMARY KEY, course_id integer, student_id integer, body text,"
    " FOREIGN KEY (course_id, student_id) REFERENCES course_enrollments (course_id, student_id))",
]


def table(engine, sql: str) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql))]


def enrollments_by_id(engine) -> list[tuple]:
    return table(
        engine, "SELECT id, course_id, student_id, active FROM course_enrollments ORDER BY id"
    )


def referencing_rows(engine) -> dict[str, list[tuple]]:
    return {
        t: table(engine, f"SELECT * FROM {t} ORDER BY id")
        for t in ("grades", "attendance", "notes")
    }


def enrollment_id(engine, course: int, student: int) -> int:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT id FROM course_enrollments WHERE course_id = :c AND student_id = :s"),
            {"c": course, "s": student},
        ).scalar_one()


def sync_objects_installed(engine) -> bool:
    with engine.connect() as conn:
        return conn.execute(text(sync.installed_sql(Tables()))).scalar()


def current(database_url) -> str:
    return alembic(database_url, "current").stdout.strip()


@pytest.fixture
def deployed(story):
    """The story backfilled at head, its pre-backfill enrollments kept aside."""
    upgrade(story, "0003")
    before = enrollments_by_id(story)
    upgrade(story, "head")
    return story, before


@pytest.fixture
def referenced(deployed):
    """Other tables referencing three backfilled enrollments, by id and by pair."""
    engine, before = deployed
    with engine.begin() as conn:
        for statement in REFERENCING:
            conn.execute(text(statement))
        ada, bob = enrollment_id(engine, 2, 1), enrollment_id(engine, 2, 3)
        conn.execute(text(f"INSERT INTO grades (enrollment_id, grade) VALUES ({ada}, 'A')"))
        conn.execute(text(f"INSERT INTO attendance (enrollment_id, day) VALUES ({bob}, now())"))
        conn.execute(text("INSERT INTO notes (course_id, student_id, body) VALUES (1, 2, 'Zoë')"))
    return engine, before


@pytest.mark.parametrize("offline", [False, True], ids=["online", "offline"])
def test_referenced_enrollments_are_kept_and_no_other_table_changes(
    pg_server, database_url, referenced, offline
):
    engine, before = referenced
    others = referencing_rows(engine)
    kept = {(2, 1), (2, 3), (1, 2)}

    if offline:
        script = alembic(None, "downgrade", f"{HEAD}:0003", "--sql").stdout
        result = psql(pg_server, database_url, script)
    else:
        result = alembic(database_url, "downgrade", "0003")

    assert result.returncode == 0, result.stdout + result.stderr
    assert referencing_rows(engine) == others  # no CASCADE, no SET NULL, no failure
    after = enrollments_by_id(engine)
    assert {(c, s) for _, c, s, active in after if active} >= kept
    # Everything else is exactly as before the backfill.
    assert [r for r in after if (r[1], r[2]) not in kept] == [
        r for r in before if (r[1], r[2]) not in kept
    ]
    warning = (
        "backfill undo (downgrade of 0004): kept 3 recorded enrollments as they are: 3 that "
        "other tables reference (public.attendance 1, public.grades 1, public.notes 1)"
    )
    assert warning in result.stderr
    assert current(database_url) == "0003"


@pytest.mark.parametrize("offline", [False, True], ids=["online", "offline"])
def test_refuse_stops_before_any_change_naming_the_tables(
    pg_server, database_url, referenced, offline
):
    engine, _ = referenced
    at_head = enrollments_by_id(engine)
    if offline:
        script = alembic(
            None, "-x", "undo_referenced=refuse", "downgrade", "0004:0003", "--sql"
        ).stdout
        # head down to 0004 changes nothing: the script starts from there.
        assert alembic(database_url, "downgrade", "0004").returncode == 0
        result = psql(pg_server, database_url, script)
        output = result.stderr
    else:
        result = alembic(database_url, "-x", "undo_referenced=refuse", "downgrade", "0003")
        output = result.stdout
    assert result.returncode != 0
    assert (
        "recorded enrollments are referenced by other tables: public.attendance (1), "
        "public.grades (1), public.notes (1); nothing was changed" in output
    )
    assert enrollments_by_id(engine) == at_head
    assert current(database_url) == "0004"
    assert sync_objects_installed(engine)


# --- no half state --------------------------------------------------------------------------
HOLDS = {
    # a session holding a lock the downgrade needs, as the issue found them
    "users": "SELECT 1 FROM users LIMIT 1",
    "groups": "SELECT 1 FROM groups LIMIT 1",
    "courses": "SELECT 1 FROM courses LIMIT 1",
    "group_members": "SELECT 1 FROM group_members LIMIT 1",
    # Bob's enrollment in Physics, which the undo deletes
    "course_enrollments": (
        "SELECT 1 FROM course_enrollments WHERE course_id = 2 AND student_id = 3 FOR UPDATE"
    ),
}


@pytest.mark.parametrize("held", HOLDS)
def test_a_lock_held_on_any_table_leaves_0004_whole_and_a_rerun_finishes(
    database_url, deployed, held
):
    engine, before = deployed
    holder = psycopg2.connect(libpq_url(database_url), application_name="holder")
    holder.cursor().execute(HOLDS[held])
    try:
        cut = alembic(database_url, "-x", "lock_patience=2s", "downgrade", "0003")
    finally:
        holder.rollback()
        holder.close()
    assert cut.returncode != 0
    failed = [line for line in cut.stdout.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and "gave up" in failed[0], cut.stdout
    assert current(database_url) == "0004"
    assert sync_objects_installed(engine)  # every sync trigger, the queue, the functions

    again = alembic(database_url, "downgrade", "0003")

    assert again.returncode == 0, again.stdout + again.stderr
    assert current(database_url) == "0003"
    assert enrollments_by_id(engine) == before
    assert not sync_objects_installed(engine)


def test_a_backend_killed_mid_undo_leaves_0004_whole_and_a_rerun_finishes(database_url, legacy):
    with legacy.begin() as conn:
        generate(conn, 1_500)
    upgrade(legacy, "0003")
    before = enrollments_by_id(legacy)
    upgrade(legacy, "head")
    with legacy.connect() as conn:  # a recorded enrollment the walk reaches late
        late = conn.execute(
            text(
                "SELECT u.id FROM enrollment_backfill_batches AS b,"
                " unnest(b.created || b.reactivated) AS u(id)"
                " ORDER BY b.id, u.id LIMIT 1 OFFSET 10"
            )
        ).scalar_one()
    holder = psycopg2.connect(libpq_url(database_url))
    holder.cursor().execute("SELECT 1 FROM course_enrollments WHERE id = %s FOR UPDATE", (late,))
    try:
        run = Background(
            ["alembic", "-x", "backfill_batch_size=300", "-x", "lock_timeout=60s",
             "downgrade", "0003"],
            database_url,
        )  # fmt: skip
        pid = wait_until(legacy, WAITING_ON_LOCK, app="alembic")
        with legacy.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        cut = run.finish()
    finally:
        holder.rollback()
        holder.close()
    assert cut.returncode != 0 and "lost the connection" in cut.stdout
    assert current(database_url) == "0004"
    assert sync_objects_installed(legacy)
    assert record_size(legacy) > 0  # some batches were undone and forgotten, not all

    again = alembic(database_url, "downgrade", "0003")

    assert again.returncode == 0, again.stdout + again.stderr
    assert enrollments_by_id(legacy) == before
    assert current(database_url) == "0003"


# --- what the application wrote since the deploy ------------------------------------------
def test_pairs_the_application_wrote_since_the_deploy_keep_their_enrollments(
    database_url, deployed
):
    engine, before = deployed
    with engine.begin() as conn:  # two more groups, for a new membership and a move
        conn.execute(
            text(
                "INSERT INTO groups (school_id, course_id, name) VALUES"
                " (1, 2, 'Physics B'), (2, 4, 'Français B')"
            )
        )
    with engine.begin() as conn:  # Ada joins a second Physics group (inserted)
        conn.execute(
            text(
                "INSERT INTO group_members (school_id, group_id, user_id)"
                " SELECT 1, id, 1 FROM groups WHERE name = 'Physics B'"
            )
        )
    with engine.begin() as conn:  # Bob leaves Physics...
        conn.execute(
            text("UPDATE group_members SET active = false WHERE group_id = 3 AND user_id = 3")
        )
    with engine.begin() as conn:  # ... and comes back (activated)
        conn.execute(
            text("UPDATE group_members SET active = true WHERE group_id = 3 AND user_id = 3")
        )
    with engine.begin() as conn:  # Émile moves to Français B (moved)
        conn.execute(
            text(
                "UPDATE group_members SET group_id = (SELECT id FROM groups WHERE name ="
                " 'Français B') WHERE group_id = 5 AND user_id = 5"
            )
        )
    claimed = {(2, 1), (2, 3), (4, 5)}

    result = alembic(database_url, "downgrade", "0003")

    assert result.returncode == 0, result.stdout + result.stderr
    after = enrollments_by_id(engine)
    assert {(c, s) for _, c, s, active in after if active} >= claimed
    assert [r for r in after if (r[1], r[2]) not in claimed] == [
        r for r in before if (r[1], r[2]) not in claimed
    ]  # Zoë and Olga are back to inactive, as before the backfill
    assert (
        "kept 3 recorded enrollments as they are: 3 the application made its own since the "
        "backfill (it wrote a membership of the pair)" in result.stderr
    )


def test_the_script_cut_mid_undo_and_run_again_is_exact(pg_server, database_url, legacy, tmp_path):
    """The DBA's downgrade script, cut while its undo waits on a row the walk reaches last
    (the oldest batch: the undo goes newest first), keeps 0004 whole; the script written
    from there finishes the undo exactly."""
    with legacy.begin() as conn:
        generate(conn, 1_500)
    upgrade(legacy, "0003")
    before = enrollments_by_id(legacy)
    upgrade(legacy, "head", "backfill_batch_size=300")
    with legacy.connect() as conn:
        last = conn.execute(
            text(
                "SELECT (b.created || b.reactivated)[1] FROM enrollment_backfill_batches AS b"
                " ORDER BY b.id LIMIT 1"
            )
        ).scalar_one()
    assert alembic(database_url, "downgrade", "0004").returncode == 0
    script = tmp_path / "downgrade.sql"
    written = alembic(
        None, "-x", "backfill_batch_size=300", "-x", "lock_timeout=60s",
        "downgrade", "0004:0003", "--sql",
    )  # fmt: skip
    script.write_text(written.stdout)
    holder = psycopg2.connect(libpq_url(database_url))
    holder.cursor().execute("SELECT 1 FROM course_enrollments WHERE id = %s FOR UPDATE", (last,))
    try:
        psql_args = ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", libpq_url(database_url)]
        run = Background([pg_server.tool("psql"), *psql_args, "-f", str(script)], None)
        pid = wait_until(legacy, WAITING_ON_LOCK, app="psql")
        with legacy.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        cut = run.finish()
    finally:
        holder.rollback()
        holder.close()
    assert cut.returncode != 0
    assert current(database_url) == "0004"
    assert sync_objects_installed(legacy)
    assert record_size(legacy) > 0  # the newer batches were undone and forgotten, not all

    again = psql(pg_server, database_url, written.stdout)

    assert again.returncode == 0, again.stderr
    assert enrollments_by_id(legacy) == before
    assert current(database_url) == "0003"
    assert record_size(legacy) == 0


def test_a_downgrade_to_base_says_nothing_of_objects_already_gone(database_url, engine):
    # 0003's downgrade drops the sync trigger a cut 0004 may have left, IF EXISTS: 1.2.0
    # logged 11 "does not exist, skipping" lines for it on every downgrade.
    upgrade(engine, HEAD)
    result = alembic(database_url, "downgrade", "base")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "does not exist, skipping" not in result.stdout + result.stderr
    assert current(database_url) == ""
