"""Revision 0002: the (course_id, active) index, concurrent, re-runnable, self-healing."""

from sqlalchemy import text

from tests.helpers import alembic, load_story, psql, upgrade

INDEX = "ix_course_enrollment_course_active"


def index_state(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                text(
                    "SELECT i.indisvalid, pg_get_indexdef(i.indexrelid) FROM pg_index i"
                    " WHERE i.indexrelid = to_regclass(:name)"
                ),
                {"name": INDEX},
            )
        ]


def test_upgrade_builds_a_valid_index(database_url, engine):
    assert alembic(database_url, "upgrade", "0002").returncode == 0
    assert index_state(engine) == [
        (
            True,
            f"CREATE INDEX {INDEX} ON public.course_enrollments USING btree (course_id, active)",
        )
    ]


def test_upgrade_recovers_an_invalid_index_left_by_an_interrupted_build(
    pg_server, database_url, engine
):
    upgrade(engine, "0001")
    load_story(engine)
    # An interrupted CREATE INDEX CONCURRENTLY leaves an INVALID index behind; a failing
    # one does the same (a unique index over duplicate values).
    failed = psql(
        pg_server,
        database_url,
        f"CREATE UNIQUE INDEX CONCURRENTLY {INDEX} ON course_enrollments (active);",
    )
    assert failed.returncode != 0
    assert index_state(engine)[0][0] is False

    result = alembic(database_url, "upgrade", "0002")

    assert result.returncode == 0, result.stdout + result.stderr
    valid, definition = index_state(engine)[0]
    assert valid and definition.endswith("(course_id, active)")


def test_index_script_runs_twice(pg_server, database_url, engine):
    upgrade(engine, "0001")
    script = alembic(None, "upgrade", "0001:0002", "--sql").stdout
    body = script.split("-- Running upgrade 0001 -> 0002")[1].split("UPDATE alembic_version")[0]
    for _ in range(2):
        result = psql(pg_server, database_url, "COMMIT;" + body.replace("BEGIN;", "", 1))
        assert result.returncode == 0, result.stderr
    assert index_state(engine)[0][0] is True
