"""The undo after the database was moved: a dump and restore writes every row again, with
new transaction ids, so the record's ``xmin`` no longer tells what the application changed
since the backfill.

1.2.0 then undid nothing, said "kept 52,000 ... changed since the backfill" and emptied the
record. Now the rollback refuses with one line before any change, keeping the record; ``-x
undo_after_move=values`` undoes what is still active for its pair, unreferenced and
unclaimed. ``VACUUM FULL`` keeps ``xmin``: no move, the undo is exact as ever.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.helpers import HEAD, alembic, libpq_url, psql, record_size, upgrade

MOVED = "the database was moved since the backfill"


def rows(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                text("SELECT id, course_id, student_id, active FROM course_enrollments ORDER BY id")
            )
        ]


@pytest.fixture
def deployed(pg_server, legacy_template):
    """A database at 0001 with generated data, its enrollments as they were, then at head."""
    url = pg_server.create_database(template=legacy_template)
    engine = create_engine(url)
    try:
        before = rows(engine)
        upgrade(engine, HEAD)
        yield url, engine, before
    finally:
        engine.dispose()
        pg_server.drop_database(url)


def tool(pg_server, engine, name: str) -> str:
    """The server's own major version of ``name`` where this machine has it (a newer
    pg_restore writes settings an older server does not know), else the embedded one."""
    with engine.connect() as conn:
        major = conn.execute(text("SHOW server_version_num")).scalar_one()[:-4]
    own = Path(f"/usr/lib/postgresql/{major}/bin/{name}")
    return str(own) if own.exists() else pg_server.tool(name)


def move(pg_server, url):
    """``url``'s database dumped (``pg_dump -Fc``) and restored into a new one: its URL."""
    engine = create_engine(url)
    try:
        dump_tool, restore_tool = (tool(pg_server, engine, n) for n in ("pg_dump", "pg_restore"))
    finally:
        engine.dispose()
    dump = subprocess.run(
        [dump_tool, "-Fc", "-d", libpq_url(url)], capture_output=True, check=True
    ).stdout
    target = pg_server.create_database()
    restore = [restore_tool, "--no-owner", "--exit-on-error"]
    subprocess.run([*restore, "-d", libpq_url(target)], input=dump, capture_output=True, check=True)
    return target


@pytest.fixture
def restored(pg_server, deployed):
    url, _, before = deployed
    target = move(pg_server, url)
    engine = create_engine(target)
    try:
        yield target, engine, before
    finally:
        engine.dispose()
        pg_server.drop_database(target)


def current(url) -> str:
    return alembic(url, "current").stdout.split()[0]


@pytest.mark.parametrize("offline", [False, True], ids=["online", "script"])
def test_after_a_restore_the_undo_refuses_and_keeps_the_record(pg_server, restored, offline):
    url, engine, before = restored
    at_head, recorded = rows(engine), record_size(engine)
    assert recorded > 0 and at_head != before
    if offline:
        result = psql(pg_server, url, alembic(None, "downgrade", f"{HEAD}:0003", "--sql").stdout)
        output = result.stderr
    else:
        result = alembic(url, "downgrade", "0003")
        output = result.stdout + result.stderr
    assert result.returncode != 0
    assert (
        f"{MOVED} (a dump and restore, logical replication or a table rewrite gave the "
        f"record of {recorded:,} enrollments new transaction ids)" in output
    )
    assert "nothing was changed and the record is kept" in output
    assert "Traceback" not in output
    assert rows(engine) == at_head
    assert record_size(engine) == recorded
    assert current(url) == "0004"  # the revisions above it went down; 0004 stays whole


def test_after_a_restore_the_undo_by_values_restores_the_enrollments(restored):
    url, engine, before = restored
    result = alembic(url, "-x", "undo_after_move=values", "downgrade", "0003")
    assert result.returncode == 0, result.stdout + result.stderr
    assert rows(engine) == before
    assert current(url) == "0003"
    assert record_size(engine) == 0


def test_by_values_keeps_what_the_application_made_its_own_before_the_move(pg_server, deployed):
    # Before the dump a student of a pair the backfill created leaves and comes back (the
    # sync trigger claims the enrollment), and the application deactivates another one.
    url, engine, before = deployed
    with engine.begin() as conn:
        claimed = conn.execute(
            text(
                "SELECT gm.id AS membership, e.id FROM course_enrollments e"
                " JOIN groups g ON g.course_id = e.course_id"
                " JOIN group_members gm ON gm.group_id = g.id AND gm.user_id = e.student_id"
                " WHERE gm.active AND e.id = (SELECT min(x) FROM enrollment_backfill_batches,"
                " unnest(created) AS x) LIMIT 1"
            )
        ).one()
        conn.execute(
            text("UPDATE group_members SET active = false WHERE id = :m"),
            {"m": claimed.membership},
        )
    with engine.begin() as conn:  # ... and the student comes back: the pair is claimed
        conn.execute(
            text("UPDATE group_members SET active = true WHERE id = :m"),
            {"m": claimed.membership},
        )
        changed = conn.execute(
            text(
                "UPDATE course_enrollments SET active = false WHERE id = (SELECT max(x)"
                " FROM enrollment_backfill_batches, unnest(created) AS x) RETURNING id"
            )
        ).scalar_one()
    target = move(pg_server, url)
    moved = create_engine(target)
    try:
        result = alembic(target, "-x", "undo_after_move=values", "downgrade", "0003")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "kept 2 recorded enrollments as they are" in result.stdout + result.stderr
        after = {r[0]: r for r in rows(moved)}
        assert after[claimed.id][3] is True
        assert after[changed][3] is False
        expected = {r[0]: r for r in before}
        expected[claimed.id] = after[claimed.id]
        expected[changed] = after[changed]
        assert after == expected
    finally:
        moved.dispose()
        pg_server.drop_database(target)


def test_vacuum_full_and_cluster_are_no_move(deployed):
    url, engine, before = deployed
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM FULL course_enrollments"))
        conn.execute(text("VACUUM FULL enrollment_backfill_batches"))
        conn.execute(text("CLUSTER course_enrollments USING course_enrollments_pkey"))
    result = alembic(url, "downgrade", "0003")
    assert result.returncode == 0, result.stdout + result.stderr
    assert rows(engine) == before
    assert record_size(engine) == 0
