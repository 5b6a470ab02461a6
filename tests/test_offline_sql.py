"""``alembic upgrade --sql``: the script a DBA runs with psql gives what the online run gives."""

import re
import subprocess

from sqlalchemy import create_engine, text

from tests.helpers import (
    HEAD,
    RECORDED_SQL,
    alembic,
    at_0004_with_a_gap,
    enrollments_rows,
    libpq_url,
    load_story,
    psql,
)


def offline_sql(*args: str) -> str:
    result = alembic(None, "upgrade", *args, "--sql")
    assert result.returncode == 0, result.stderr
    return result.stdout


def schema_dump(server, url) -> str:
    dump = subprocess.run(
        [server.tool("pg_dump"), "--schema-only", "--no-owner", "-d", libpq_url(url)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # pg_dump 18 writes a random \restrict key; this machine's PostgreSQL 15 stamps
    # a per-column pg_attver option that differs from run to run; comments say nothing.
    return "\n".join(
        line
        for line in dump.splitlines()
        if not line.startswith(("\\restrict", "\\unrestrict", "--")) and "pg_attver=" not in line
    )


def table_contents(url, sql: str) -> list[tuple]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql))]
    finally:
        engine.dispose()


def test_offline_script_builds_the_same_schema_as_online(pg_server, database_url):
    online = database_url
    offline = pg_server.create_database()
    try:
        assert alembic(online, "upgrade", "head").returncode == 0
        applied = psql(pg_server, offline, offline_sql("head"))
        assert applied.returncode == 0, applied.stderr
        assert schema_dump(pg_server, offline) == schema_dump(pg_server, online)
        version = "SELECT version_num FROM alembic_version"
        assert table_contents(offline, version) == table_contents(online, version) == [(HEAD,)]
    finally:
        pg_server.drop_database(offline)


def test_offline_equals_online_on_legacy_data(pg_server, database_url, engine):
    online = database_url
    offline = pg_server.create_database()
    offline_engine = create_engine(offline)
    try:
        for url, eng in ((online, engine), (offline, offline_engine)):
            assert alembic(url, "upgrade", "0001").returncode == 0
            load_story(eng)

        assert alembic(online, "upgrade", "head").returncode == 0
        applied = psql(pg_server, offline, offline_sql("0001:head"))
        assert applied.returncode == 0, applied.stderr
        # The backfill says how far it got (after its first batch, then every 5 s), and
        # the numbers are formatted (1.2.0 printed nothing until the end).
        assert re.search(
            r"NOTICE:  backfill 0004: pass 1: [\d,]+ of 5 pairs done \([\d,]+ created, "
            r"[\d,]+ reactivated so far\)",
            applied.stderr,
        ), applied.stderr
        assert "NOTICE:  backfill 0004: 3 enrollments created, 2 reactivated (" in applied.stderr

        everything = "SELECT id, course_id, student_id, active FROM course_enrollments ORDER BY id"
        record = f"{RECORDED_SQL} ORDER BY 1, 2, 3, 4"
        version = "SELECT version_num FROM alembic_version"
        for query in (everything, record, version):
            assert table_contents(offline, query) == table_contents(online, query)
        assert table_contents(online, version) == [(HEAD,)]
        assert len(table_contents(online, record)) == 5  # 3 created, 2 reactivated
    finally:
        offline_engine.dispose()
        pg_server.drop_database(offline)


def test_offline_gate_stops_psql_and_applies_nothing_after_it(pg_server, database_url, engine):
    before = at_0004_with_a_gap(database_url, engine)

    applied = psql(pg_server, database_url, offline_sql("0004:head"))

    assert applied.returncode != 0
    assert (
        "coverage gate before revision 0005: coverage 85.71%: 6 of 7 eligible (student, course)"
        " pairs have an active enrollment; 1 missing, 0 inactive" in applied.stderr
    )
    assert (
        "DETAIL:  first uncovered pairs: (student 1 Ada Lovelace <ada@north.example>, course 2"
        " Physics, missing, 1 group(s))" in applied.stderr
    )
    assert (
        "HINT:  run enrollments backfill --commit, then write the script again from there"
        f" (alembic upgrade 0004:{HEAD} --sql) and run it" in applied.stderr
    )
    assert table_contents(database_url, "SELECT version_num FROM alembic_version") == [("0004",)]
    assert enrollments_rows(engine) == before


def test_the_gates_hint_names_the_scripts_own_destination(pg_server, database_url, engine):
    """The HINT writes the script again from where the database stands to where this
    script was written to end, not always to head."""
    at_0004_with_a_gap(database_url, engine)

    applied = psql(pg_server, database_url, offline_sql("0004:0005"))

    assert applied.returncode != 0
    assert "(alembic upgrade 0004:0005 --sql) and run it" in applied.stderr


def test_offline_script_keeps_sql_as_written():
    from enrollments_phase1.migrations.shared.v4.gate import gate_sql
    from enrollments_phase1.names import Tables

    script = offline_sql("head")
    # The gate block reaches psql exactly as written: RAISE formats keep their single and
    # double % (no driver escaping), and no bind markers leak.
    hint = f"alembic upgrade 0004:{HEAD} --sql"
    assert gate_sql(Tables("public"), "0005", "abort", hint) in script
    assert "RAISE EXCEPTION 'coverage gate before revision 0005: coverage %: % of %" in script
    assert not re.search(
        r"(?<![:\w]):[A-Za-z_]\w*",
        script.replace("::", "")
        .replace(":enrollments_sync_missing", "")
        .replace(":enrollments_on_track", ""),
    )


STEPS_FROM_0001 = [
    "builds ix_course_enrollment_course_active",
    "creates the backfill's bookkeeping tables",
    "prepares the sync trigger's queue",
    "creates or replaces the sync trigger's functions",
    "installs the trigger that enrolls what the queue holds",
    "installs the sync triggers",
    "drops older sync functions",
    "writes the missing enrollments",
    "counts the eligible pairs without an active enrollment",
]


def test_each_step_of_the_script_says_what_it_locks_and_how_long_it_takes():
    script = offline_sql("0001:head")
    headers = re.findall(
        r"^-- =+\n-- Step: (.*?)\n(?:--   .*\n)*-- Locks: .+\n(?:--   .*\n)*-- Takes: .+\n"
        r"(?:--   .*\n)*-- =+$",
        script,
        re.M,
    )
    assert len(headers) == len(STEPS_FROM_0001), headers
    for header, step in zip(headers, STEPS_FROM_0001, strict=True):
        assert header.startswith(step), (header, step)
    assert script.count("-- Step: ") == len(STEPS_FROM_0001)
    # Only what runs from 0001: no repair branch for 1.0.0's databases, the sync trigger
    # installed once (1.2.0's script was 4,092 lines).
    assert "enrollments_sync_missing" not in script
    assert script.count("installs the sync triggers") == 1
    assert len(script.splitlines()) < 3_200
