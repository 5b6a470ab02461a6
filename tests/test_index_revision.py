"""Revision 0002: the (course_id, active) index, concurrent, re-runnable, self-healing."""

from sqlalchemy import text

from tests.helpers import HEAD, alembic, load_story, psql, upgrade

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
    body = script.split("-- Running upgrade 0001 -> 0002")[1].split(
        "UPDATE public.alembic_version"
    )[0]
    for _ in range(2):
        result = psql(pg_server, database_url, "COMMIT;" + body.replace("BEGIN;", "", 1))
        assert result.returncode == 0, result.stderr
    assert index_state(engine)[0][0] is True


def test_an_old_transaction_elsewhere_makes_the_build_wait_not_fail(database_url, engine):
    """An 8-second REPEATABLE READ transaction (a report, a pg_dump) during the upgrade:
    1.0.0's build gave up after lock_timeout (5 s) and left an INVALID index."""
    import time

    import psycopg2

    from tests.helpers import Background, libpq_url, wait_until

    upgrade(engine, "0001")
    load_story(engine)
    report = psycopg2.connect(libpq_url(database_url), application_name="a long report")
    report.set_session(isolation_level="REPEATABLE READ")
    cur = report.cursor()
    cur.execute("SELECT count(*) FROM group_members")  # the snapshot is taken
    opened = time.monotonic()
    report_pid = report.get_backend_pid()
    try:
        run = Background(["alembic", "upgrade", "head"], database_url)
        build_waits = (
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'alembic'"
            " AND datname = current_database() AND wait_event_type = 'Lock'"
            " AND query LIKE 'CREATE INDEX CONCURRENTLY%'"
        )
        wait_until(engine, build_waits)
        # While it waits, a read-only command answers (it never takes the lock): it is done
        # and the build still waits.
        current = alembic(database_url, "current")
        assert current.stdout.strip() == "0001"
        assert run.proc.poll() is None and wait_until(engine, build_waits, timeout=1)
        line = run.wait_for("waits for 1 older transaction(s) to finish")
        assert f"pid {report_pid} (a long report, idle in transaction" in line
        time.sleep(max(0.0, 8 - (time.monotonic() - opened)))  # the report runs for 8 s
    finally:
        report.rollback()
        report.close()
    result = run.finish()
    assert result.returncode == 0, result.stdout + result.stderr
    assert index_state(engine)[0][0] is True
    assert alembic(database_url, "current").stdout.strip() == f"{HEAD} (head)"


def test_the_script_drops_an_invalid_index_concurrently_and_builds_it(
    pg_server, database_url, engine
):
    upgrade(engine, "0001")
    load_story(engine)
    failed = psql(
        pg_server,
        database_url,
        f"CREATE UNIQUE INDEX CONCURRENTLY {INDEX} ON course_enrollments (active);",
    )
    assert failed.returncode != 0 and index_state(engine)[0][0] is False

    result = psql(pg_server, database_url, alembic(None, "upgrade", "0001:0002", "--sql").stdout)

    assert result.returncode == 0, result.stderr
    valid, definition = index_state(engine)[0]
    assert valid and definition.endswith("(course_id, active)")


def test_online_recovery_drops_the_invalid_index_concurrently(pg_server, database_url, engine):
    upgrade(engine, "0001")
    load_story(engine)
    psql(
        pg_server,
        database_url,
        f"CREATE UNIQUE INDEX CONCURRENTLY {INDEX} ON course_enrollments (active);",
    )
    result = alembic(database_url, "upgrade", "0002")
    assert result.returncode == 0, result.stderr
    assert f"{INDEX} is INVALID (an interrupted build): dropping it concurrently" in result.stderr
    assert index_state(engine)[0][0] is True


def test_the_script_names_the_transactions_its_build_waits_for(pg_server, database_url, engine):
    """psql prints nothing while a concurrent build waits: the script names, just before
    the build, the transactions it will wait for."""
    import threading

    import psycopg2

    from tests.helpers import libpq_url, wait_until

    upgrade(engine, "0001")
    load_story(engine)
    script = alembic(None, "upgrade", "0001:0002", "--sql").stdout
    report = psycopg2.connect(libpq_url(database_url), application_name="a long report")
    report.set_session(isolation_level="REPEATABLE READ")
    report.cursor().execute("SELECT count(*) FROM group_members")  # the snapshot is taken
    done = {}
    dba = threading.Thread(target=lambda: done.update(run=psql(pg_server, database_url, script)))
    dba.start()
    try:
        wait_until(
            engine,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND query LIKE 'CREATE INDEX CONCURRENTLY%'",
        )
    finally:
        report.rollback()
        report.close()
        dba.join(timeout=60)
    result = done["run"]
    assert result.returncode == 0, result.stderr
    assert (
        f'building {INDEX} on "public".course_enrollments: it waits for these transactions'
        " to end: pid "
    ) in result.stderr
    assert "(a long report, idle in transaction, transaction open since " in result.stderr
    assert index_state(engine)[0][0] is True
