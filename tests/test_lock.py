"""One lock: the command's backfill, the backfill revisions and the undo never run at once;
whoever waits says who holds it (pid, application_name, since when)."""

from __future__ import annotations

import re

import psycopg2
import pytest
from sqlalchemy import text

from enrollments_phase1 import lock
from enrollments_phase1.names import Tables
from tests.helpers import (
    HEAD,
    WAITING_ON_LOCK,
    Background,
    alembic,
    enrollments,
    libpq_url,
    psql,
    upgrade,
    wait_until,
)
from tests.roles import deploy

ZOE_MATH = "SELECT 1 FROM course_enrollments WHERE course_id = 1 AND student_id = 2 FOR UPDATE"

HOLDERS = {
    "the command holds it": (
        ["enrollments", "backfill", "--commit", "--lock-timeout", "60s"],
        ["alembic", "upgrade", "head"],
    ),
    "an upgrade holds it": (
        ["alembic", "-x", "lock_timeout=60s", "upgrade", "head"],
        ["enrollments", "backfill", "--commit"],
    ),
}


@pytest.mark.parametrize("case", HOLDERS)
def test_the_second_writer_waits_and_names_the_first(database_url, story, case):
    first_command, second_command = HOLDERS[case]
    upgrade(story, "0003")
    holder = psycopg2.connect(libpq_url(database_url))
    holder.cursor().execute(ZOE_MATH)  # keeps the first writer inside its backfill
    try:
        first = Background(first_command, database_url)
        wait_until(story, WAITING_ON_LOCK, app=first_command[0])
        pid = wait_until(
            story, "SELECT pid FROM (" + lock.holder_sql(Tables()) + ") AS h"
        )  # its lock session
        second = Background(second_command, database_url)
        line = second.wait_for("waiting for the enrollments lock")
        assert re.search(
            rf"held by pid {pid} \({first_command[0]}\) since \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d UTC",
            line,
        ), line
    finally:
        holder.rollback()
        holder.close()
    assert first.finish().returncode == 0
    assert second.finish().returncode == 0
    assert alembic(database_url, "current").stdout.strip() == f"{HEAD} (head)"


def test_a_lock_session_ended_by_someone_else_is_named_as_such(database_url, legacy):
    # A reaper (a job ending sessions idle in transaction, pg_terminate_backend) ends the
    # lock session while a batch waits: 1.2.0 blamed lock_timeout.
    from bench.generate import generate
    from tests.helpers import LATE_INACTIVE

    with legacy.begin() as conn:
        generate(conn, 300)
    upgrade(legacy, "0003")
    with legacy.connect() as conn:
        held = conn.execute(text(LATE_INACTIVE)).scalar_one()
    holder = psycopg2.connect(libpq_url(database_url))
    holder.cursor().execute("SELECT 1 FROM course_enrollments WHERE id = %s FOR UPDATE", (held,))
    try:
        run = Background(
            ["enrollments", "backfill", "--commit", "--batch-size", "5", "--lock-patience", "5min"],
            database_url,
        )
        wait_until(legacy, WAITING_ON_LOCK, app="enrollments")
        with legacy.connect() as conn:
            ended = (
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND application_name = 'enrollments'"
                        " AND state = 'idle in transaction'"
                    )
                )
                .scalars()
                .all()
            )
        assert ended == [True]
        result = run.finish()
    finally:
        holder.rollback()
        holder.close()
    assert result.returncode == 75, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "lost the enrollments lock: its session (pid " in line
    assert "was ended while this run held it" in line
    assert "idle_transaction_timeout" in line and "pg_terminate_backend" in line
    assert "lock_timeout" not in line.replace("idle_transaction_timeout", "")


# --- who may hold it -------------------------------------------------------------------
def _hold(roles, role: str, *statements: str):
    """A session of ``role`` that ran ``statements`` in a transaction it keeps open."""
    conn = roles.connect(role)
    cur = conn.cursor()
    for statement in statements:
        cur.execute(statement)
    return conn


def _refused(roles, role: str, statement: str) -> bool:
    conn = roles.connect(role)
    try:
        conn.cursor().execute(statement)
    except psycopg2.errors.InsufficientPrivilege:
        return True
    finally:
        conn.close()
    return False


def test_a_role_that_may_not_deploy_can_neither_hold_nor_fake_the_lock(pg_server, roles):
    deploy(pg_server, roles, "fresh")
    owner = roles.url(roles.owner)
    assert alembic(owner, "downgrade", "0003").returncode == 0
    roles.admin(f'GRANT pg_read_all_data TO "{roles.reader}"')
    table = f"public.{lock.TABLE}"
    # No role without INSERT, UPDATE, DELETE or TRUNCATE on the lock table may take a lock
    # that conflicts with the deploy's: not the application (it writes the legacy tables).
    for role in (roles.hostile, roles.app):
        for mode in ("EXCLUSIVE", "ROW EXCLUSIVE", "SHARE", "ACCESS EXCLUSIVE"):
            assert _refused(roles, role, f"LOCK TABLE {table} IN {mode} MODE"), (role, mode)
    # Any role may take an advisory lock, and a companion key saying since when.
    hostile = _hold(
        roles,
        roles.hostile,
        f"SELECT pg_advisory_xact_lock({lock.LOCK_KEY})",
        f"SELECT pg_advisory_xact_lock({lock.SINCE_CLASS}, 1)",
    )
    # A reader (pg_read_all_data) may lock it for reading: that does not stop a deploy.
    reader = _hold(roles, roles.reader, f"LOCK TABLE {table} IN ACCESS SHARE MODE")
    hostile_pid = hostile.get_backend_pid()
    try:
        backfill = enrollments(owner, "backfill", "--commit", "--lock-patience", "20s")
        upgraded = alembic(owner, "-x", "lock_patience=20s", "upgrade", "head")
        script = alembic(owner, "downgrade", "head:0003", "--sql")
        downgraded = psql(pg_server, owner, script.stdout)
    finally:
        hostile.rollback()
        hostile.close()
        reader.rollback()
        reader.close()
    warning = (
        f"pid {hostile_pid} (role {roles.hostile}, no application_name) holds the advisory "
        "lock of releases before 1.3 but may not run a deploy"
    )
    assert backfill.returncode == 0, backfill.stderr
    assert warning in backfill.stderr
    assert upgraded.returncode == 0, upgraded.stderr
    assert warning in upgraded.stderr
    assert downgraded.returncode == 0, downgraded.stderr
    assert warning in downgraded.stderr
    assert alembic(owner, "current").stdout.strip() == "0003"


def test_a_deployer_of_an_older_release_holding_the_advisory_lock_is_waited_for(pg_server, roles):
    deploy(pg_server, roles, "fresh")
    owner = roles.url(roles.owner)
    older = _hold(roles, roles.owner, f"SELECT pg_advisory_xact_lock({lock.LOCK_KEY})")
    older_pid = older.get_backend_pid()
    try:
        result = alembic(owner, "-x", "lock_patience=2s", "downgrade", "0003")
    finally:
        older.rollback()
        older.close()
    assert result.returncode != 0, result.stderr
    assert result.stdout.startswith("FAILED: gave up waiting for the enrollments lock after")
    assert f"held by pid {older_pid} (no application_name)" in result.stdout
    assert alembic(owner, "current").stdout.strip() == f"{HEAD} (head)"


def test_a_lock_table_planted_by_another_role_is_refused(pg_server, roles):
    roles.open_public()
    deploy(pg_server, roles, "fresh")
    owner = roles.url(roles.owner)
    assert alembic(owner, "downgrade", "0003").returncode == 0
    roles.admin(f"DROP TABLE public.{lock.TABLE}")
    planted = roles.connect(roles.hostile)
    planted.autocommit = True
    planted.cursor().execute(f"CREATE TABLE public.{lock.TABLE} ()")
    planted.close()

    online = alembic(owner, "upgrade", "head")
    offline = psql(pg_server, owner, alembic(owner, "upgrade", "0003:head", "--sql").stdout)

    belongs = f"{lock.TABLE} belongs to {roles.hostile}, a role that neither runs this deploy"
    assert online.returncode != 0, online.stderr
    assert online.stdout.startswith("FAILED: schema not as expected: ")
    assert belongs in online.stdout
    assert offline.returncode != 0
    assert belongs in offline.stderr
    assert alembic(owner, "current").stdout.strip() == "0003"
