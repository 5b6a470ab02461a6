"""The offline script guards itself: where it starts, that each revision moved the version,
the enrollments lock, and stopping at the first error however psql was started."""

import re
import subprocess

import psycopg2
from sqlalchemy import text

from enrollments_phase1 import lock
from enrollments_phase1.offline_script import moved_check_sql
from tests.helpers import (
    HEAD,
    Background,
    alembic,
    at_0004_with_a_gap,
    enrollments_rows,
    libpq_url,
    psql,
    record_size,
    snapshot,
    upgrade,
)


def offline_sql(*args: str) -> str:
    result = alembic(None, *args, "--sql")
    assert result.returncode == 0, result.stderr
    return result.stdout


def version(engine) -> list[str]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))]


def test_a_script_for_another_start_applies_nothing_and_names_the_real_revision(
    pg_server, database_url, story
):
    # The DBA guide's example range, applied to a database still at 0001 (already
    # backfilled by the command): 1.0.0 printed UPDATE 0 and exited 0.
    before = snapshot(story)

    result = psql(pg_server, database_url, offline_sql("upgrade", "0004:head"))

    assert result.returncode != 0
    assert "this script starts at revision 0004, but the database is at 0001" in result.stderr
    assert f"alembic upgrade 0001:{HEAD} --sql" in result.stderr
    assert version(story) == ["0001"]
    assert snapshot(story) == before
    with story.connect() as conn:
        assert (
            conn.execute(text("SELECT to_regclass('enrollment_backfill_changes')")).scalar() is None
        )


def test_the_same_script_applied_twice_stops_the_second_time(pg_server, database_url, story):
    script = offline_sql("upgrade", "0001:head")
    first = psql(pg_server, database_url, script)
    assert first.returncode == 0, first.stderr
    after_first = snapshot(story)

    second = psql(pg_server, database_url, script)

    assert second.returncode != 0
    assert f"this script starts at revision 0001, but the database is at {HEAD}" in second.stderr
    assert f"the database is at {HEAD} already: there is nothing to run" in second.stderr
    assert snapshot(story) == after_first
    assert version(story) == [HEAD]


def test_it_stops_even_when_psql_was_started_without_on_error_stop(pg_server, database_url, story):
    before = snapshot(story)
    result = subprocess.run(
        [pg_server.tool("psql"), "-X", "-q", "-d", libpq_url(database_url)],
        input=offline_sql("upgrade", "0004:head"),
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert result.stderr.count("ERROR:") == 1  # stopped at the start check, ran nothing after
    assert version(story) == ["0001"] and snapshot(story) == before


def without_stop(script: str) -> str:
    """The script as a DBA might run it by hand: the ``\\set ON_ERROR_STOP on`` removed."""
    assert script.startswith("\\set ON_ERROR_STOP on\n")
    return script.removeprefix("\\set ON_ERROR_STOP on\n")


def psql_going_on(pg_server, database_url, script: str) -> subprocess.CompletedProcess:
    """psql without ON_ERROR_STOP: it prints each error and goes on to the end."""
    return subprocess.run(
        [pg_server.tool("psql"), "-X", "-q", "-d", libpq_url(database_url)],
        input=without_stop(script),
        capture_output=True,
        text=True,
        timeout=600,
    )


def stopped(result: subprocess.CompletedProcess) -> None:
    """psql stopped itself at the step after the failed one: exit 3, and the failure and
    the stop are the only errors, besides the rest of the failed transaction refused
    ("current transaction is aborted"; 1.2.0 went on: about 30 ERROR lines, exit 0)."""
    assert result.returncode == 3, result.stderr
    errors = [
        line
        for line in result.stderr.splitlines()
        if line.startswith("ERROR:") and "current transaction is aborted" not in line
    ]
    assert len(errors) == 2, result.stderr
    assert (
        "ERROR:  a statement above failed: this script stops here, and nothing after it runs"
        in result.stderr
    )


def sync_objects(engine) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal UNION ALL"
                    " SELECT proname FROM pg_proc WHERE proname LIKE 'course_enrollments_%'"
                    " ORDER BY 1"
                )
            ).scalars()
        )


def test_without_on_error_stop_a_failed_gate_reaches_no_later_revision(
    pg_server, database_url, engine
):
    before = at_0004_with_a_gap(database_url, engine)
    objects = sync_objects(engine)

    result = psql_going_on(pg_server, database_url, offline_sql("upgrade", "0004:head"))

    assert "coverage gate before revision 0005: coverage 85.71%" in result.stderr
    assert f"alembic upgrade 0004:{HEAD} --sql" in result.stderr  # the hint: the script again
    stopped(result)
    assert version(engine) == ["0004"]
    assert enrollments_rows(engine) == before
    assert sync_objects(engine) == objects


def test_without_on_error_stop_a_wrong_start_applies_nothing(pg_server, database_url, story):
    # Every transaction checks where the script stands; what runs outside a transaction
    # (the batched backfill) is skipped by psql's \if on the same check.
    before = snapshot(story)

    result = psql_going_on(pg_server, database_url, offline_sql("upgrade", "0003:head"))

    assert "this script starts at revision 0003, but the database is at 0001" in result.stderr
    stopped(result)
    assert version(story) == ["0001"] and snapshot(story) == before
    assert sync_objects(story) == []
    with story.connect() as conn:
        assert conn.execute(text("SELECT to_regclass('enrollment_backfill_runs')")).scalar() is None


def test_without_on_error_stop_a_held_lock_applies_nothing(pg_server, database_url, story):
    upgrade(story, "0003")
    before = snapshot(story)
    with story.connect() as holder:
        holder.execute(text(lock.TRY_SQL))
        result = psql_going_on(pg_server, database_url, offline_sql("upgrade", "0003:head"))
        holder.rollback()

    assert "the enrollments lock is held by pid" in result.stderr
    assert snapshot(story) == before and version(story) == ["0003"]
    assert sync_objects(story) == []


def test_from_base_on_an_unstamped_legacy_database_names_the_stamp(pg_server, database_url, story):
    with story.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
    before = snapshot(story)

    result = psql(pg_server, database_url, offline_sql("upgrade", "head"))

    assert result.returncode != 0
    assert "has the legacy tables but no alembic_version: it was never stamped" in result.stderr
    assert "run alembic stamp 0001 once" in result.stderr
    assert f"alembic upgrade 0001:{HEAD} --sql" in result.stderr
    assert snapshot(story) == before


def test_from_base_on_a_database_under_alembic_names_its_revision(pg_server, database_url, story):
    result = psql(pg_server, database_url, offline_sql("upgrade", "head"))
    assert result.returncode != 0
    assert "starts from an empty database, but this one is under Alembic already (at 0001)" in (
        result.stderr
    )


def test_a_downgrade_script_checks_its_start_too(pg_server, database_url, story):
    upgrade(story, "0003")
    result = psql(pg_server, database_url, offline_sql("downgrade", "0005:0004"))
    assert result.returncode != 0
    assert "this script starts at revision 0005, but the database is at 0003" in result.stderr
    assert "alembic downgrade 0003:0004 --sql" in result.stderr
    assert version(story) == ["0003"]


def test_the_script_refuses_while_someone_holds_the_enrollments_lock(
    pg_server, database_url, story
):
    before = snapshot(story)
    with story.connect() as holder:  # as a run's lock session holds it: in a transaction
        holder.execute(text(lock.TRY_SQL))
        holder.execute(text(f"SELECT {lock.SINCE_SQL}"))
        pid = holder.execute(text("SELECT pg_backend_pid()")).scalar()

        result = psql(pg_server, database_url, offline_sql("upgrade", "0001:head"))
        holder.rollback()

    assert result.returncode != 0
    assert f"the enrollments lock is held by pid {pid}" in result.stderr
    assert f"nothing more of alembic 0001:{HEAD} --sql was changed" in result.stderr
    assert snapshot(story) == before and version(story) == ["0001"]


def test_the_moved_check_stops_when_the_version_did_not_move(pg_server, database_url, legacy):
    result = psql(pg_server, database_url, moved_check_sql({"0002"}, "public") + ";")
    assert result.returncode != 0
    assert "alembic_version did not move to 0002" in result.stderr
    ok = psql(pg_server, database_url, moved_check_sql({"0001"}, "public") + ";")
    assert ok.returncode == 0, ok.stderr


def test_every_revision_is_followed_by_the_moved_check():
    script = offline_sql("upgrade", "head")
    for revision in (f"{n:04d}" for n in range(1, int(HEAD) + 1)):
        assert f"-- Stop unless the revision above moved alembic_version to {revision}." in script


def test_online_upgrade_waits_for_a_running_script(pg_server, database_url, story):
    """A DBA's psql session holding the lock makes a pipeline's upgrade wait, saying who."""
    with story.connect() as dba:  # a transaction of the script, holding the lock
        dba.execute(text(lock.TRY_SQL))
        dba.execute(text(f"SELECT {lock.SINCE_SQL}"))
        upgrade_run = Background(["alembic", "upgrade", "head"], database_url)
        line = upgrade_run.wait_for("waiting for the enrollments lock")
        assert "held by pid" in line and " since " in line
        dba.commit()
    assert upgrade_run.finish().returncode == 0
    assert version(story) == [HEAD]


def test_without_on_error_stop_a_failed_trigger_install_runs_no_backfill(
    pg_server, database_url, story
):
    # 1.2.0: the install gave up, and the backfill after it committed its records anyway,
    # with no trigger on the tables; then about 30 ERROR lines and exit 0.
    upgrade(story, "0003")
    before = enrollments_rows(story)
    script = offline_sql("-x", "lock_patience=2s", "upgrade", "0003:head")
    holder = psycopg2.connect(libpq_url(database_url), application_name="report")
    holder.cursor().execute("UPDATE group_members SET role_in_team = 'x' WHERE id = 1")
    try:
        result = psql_going_on(pg_server, database_url, script)
    finally:
        holder.rollback()
        holder.close()

    assert "installing the sync triggers: gave up after" in result.stderr
    stopped(result)
    assert version(story) == ["0003"]
    assert enrollments_rows(story) == before and record_size(story) == 0
    with story.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM enrollment_backfill_runs")).scalar() == 0


def test_without_on_error_stop_a_failed_backfill_reaches_no_later_step(
    pg_server, database_url, story
):
    # Zoë's inactive enrollment, which the backfill reactivates, is held past the patience.
    upgrade(story, "0003")
    before = enrollments_rows(story)
    script = offline_sql("-x", "lock_patience=2s", "upgrade", "0003:head")
    holder = psycopg2.connect(libpq_url(database_url))
    holder.cursor().execute(
        "SELECT 1 FROM course_enrollments WHERE course_id = 1 AND student_id = 2 FOR UPDATE"
    )
    try:
        result = psql_going_on(pg_server, database_url, script)
    finally:
        holder.rollback()
        holder.close()

    assert re.search(
        r"ERROR:  backfill 0004: gave up after \d+ attempts over [\d:]+ \(lock_patience 2s\): "
        "canceling statement due to lock timeout",
        result.stderr,
    )
    stopped(result)
    assert "coverage gate" not in result.stderr
    assert version(story) == ["0003"]
    assert enrollments_rows(story) == before and record_size(story) == 0
