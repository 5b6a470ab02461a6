"""Every released state reaches a correct head: for each release (1.0.0, 1.1.0, 1.2.0) and
each revision it had, a database that release's own offline script left there (with data,
and the legacy application writing after it) goes to head with ``alembic upgrade head``;
its schema is then a fresh deploy's (functions, triggers, grants, constraints, indexes: a
normalised ``pg_dump --schema-only``), coverage is 100%, and ``alembic downgrade 0003``
gives back ``course_enrollments`` as it was before the first backfill.

The releases' scripts are fixtures (tests/fixtures/release_*/upgrade_0001_NNNN.sql, what
each release wrote for ``alembic upgrade 0001:NNNN --sql``), never regenerated. 0001 is the
legacy schema, the same in every release (production stamps it): one case.
"""

from __future__ import annotations

import subprocess

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from enrollments_phase1.coverage import audit
from tests.helpers import (
    FIXTURES,
    HEAD,
    PostgresForTests,
    downgrade,
    libpq_url,
    psql,
    upgrade,
)

RELEASES = {
    "1.0.0": ("0002", "0003", "0004", "0005"),
    "1.1.0": ("0002", "0003", "0004", "0005", "0006"),
    "1.2.0": ("0002", "0003", "0004", "0005", "0006", "0007"),
}
CASES = [("any", "0001")] + [(r, rev) for r, revs in RELEASES.items() for rev in revs]

# What the legacy application writes once the database stands there: a new student and
# her membership (the pair is eligible and has no enrollment unless a sync trigger made it).
APPLICATION_WRITES = """
WITH g AS (
    SELECT g.id AS group_id, c.school_id, g.course_id
    FROM groups AS g JOIN courses AS c ON c.id = g.course_id ORDER BY g.id LIMIT 1
),
u AS (
    INSERT INTO users (school_id, email, name)
    SELECT school_id, 'late.student@example.org', 'Late Student' FROM g RETURNING id
)
INSERT INTO group_members (school_id, group_id, user_id)
SELECT g.school_id, g.group_id, u.id FROM g, u
RETURNING user_id, (SELECT course_id FROM g)
"""


def schema_of(server: PostgresForTests, url: URL) -> str:
    """``pg_dump --schema-only``, without what differs between two dumps of one schema
    (comments, pg_dump 18's random \\restrict key, PostgreSQL 15's pg_attver stamps)."""
    dump = subprocess.run(
        [server.tool("pg_dump"), "--schema-only", "-d", libpq_url(url)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return "\n".join(
        line
        for line in dump.splitlines()
        if line.strip()
        and not line.startswith(("\\restrict", "\\unrestrict", "--"))
        and "pg_attver=" not in line
    )


def enrollments(url: URL) -> set[tuple]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                tuple(r)
                for r in conn.execute(
                    text("SELECT id, course_id, student_id, active FROM course_enrollments")
                )
            }
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def fresh_head_schema(pg_server, legacy_template) -> str:
    url = pg_server.create_database(template=legacy_template)
    engine = create_engine(url)
    try:
        upgrade(engine, "head")
        engine.dispose()
        return schema_of(pg_server, url)
    finally:
        engine.dispose()
        pg_server.drop_database(url)


@pytest.mark.parametrize(("release", "revision"), CASES, ids=[f"{r}@{v}" for r, v in CASES])
def test_every_released_state_reaches_a_correct_head(
    pg_server, legacy_template, fresh_head_schema, release, revision
):
    url = pg_server.create_database(template=legacy_template)
    engine = create_engine(url)
    try:
        before_any_backfill = enrollments(url)
        if revision != "0001":
            script = (
                FIXTURES / f"release_{release.replace('.', '_')}" / f"upgrade_0001_{revision}.sql"
            )
            applied = psql(pg_server, url, script.read_text())
            assert applied.returncode == 0, applied.stderr
        with engine.begin() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == (
                revision
            )
            late_student, late_course = conn.execute(text(APPLICATION_WRITES)).one()

        upgrade(engine, "head")

        engine.dispose()
        assert schema_of(pg_server, url) == fresh_head_schema
        with engine.begin() as conn:
            conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            report = audit(conn, limit=0)
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD
        assert report.eligible_pairs > 0
        assert (report.covered, report.missing, report.inactive) == (report.eligible_pairs, 0, 0)

        downgrade(engine, "0003")

        # The late pair's enrollment is the application's where a sync trigger made it when
        # it wrote the membership (1.1.0 and later, from 0004): kept. Elsewhere a backfill
        # made it, and the undo takes it back with the rest.
        trigger_made_it = release != "1.0.0" and revision >= "0004"
        after = enrollments(url)
        late = {row for row in after if row[1:3] == (late_course, late_student)}
        assert after - late == before_any_backfill
        assert {row[1:] for row in late} == (
            {(late_course, late_student, True)} if trigger_made_it else set()
        )
    finally:
        engine.dispose()
        pg_server.drop_database(url)
