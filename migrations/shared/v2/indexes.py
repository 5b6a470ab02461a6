"""Concurrent index builds that neither block writes nor give up on old transactions.

``CREATE INDEX CONCURRENTLY`` waits for every transaction older than its snapshot, and
PostgreSQL counts that wait against ``lock_timeout``: with the session's 5 s, any report
or ``pg_dump`` running for longer made the build fail and leave an INVALID index. So the
build runs with ``lock_timeout = 0`` (it takes only SHARE UPDATE EXCLUSIVE, which blocks no
reads or writes, so waiting harms nobody) and, online, names the sessions it waits for
every few seconds. An INVALID leftover of an interrupted build is dropped with ``DROP INDEX
CONCURRENTLY`` first (offline through psql's ``\\gexec``), and the revision checks
``indisvalid`` before it is recorded as applied.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from alembic import op
from alembic.util import CommandError
from sqlalchemy import text
from sqlalchemy.engine import Connection

from app.db import KEEP
from app.migration_env import MigrationSettings
from migrations.shared.v2.run import can_autocommit, execute_sql, is_offline, run_sql, write_raw

log = logging.getLogger("migrations")

REPORT_EVERY_SECONDS = 5.0

VALIDITY_SQL = "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('{name}')"

BLOCKERS_SQL = """SELECT a.pid, coalesce(nullif(a.application_name, ''), 'no application_name')
       AS application_name, a.state, a.xact_start
FROM unnest(pg_blocking_pids(:pid)) AS b(pid)
JOIN pg_stat_activity AS a ON a.pid = b.pid
ORDER BY a.xact_start"""


def restore_sql(lock_timeout: str) -> str:
    """Back to the run's ``lock_timeout`` (``keep``: the role's or database's setting)."""
    if lock_timeout == KEEP:
        return "RESET lock_timeout"
    return f"SET lock_timeout = '{lock_timeout}'"


def drop_invalid_sql(name: str) -> str:
    """Offline: a query that yields ``DROP INDEX CONCURRENTLY`` for an INVALID ``name``.

    psql's ``\\gexec`` runs what it yields: nothing when the index is valid or absent.
    """
    return f"""-- If an interrupted CREATE INDEX CONCURRENTLY left {name} INVALID, drop it without
-- blocking writes: this query yields that DROP INDEX CONCURRENTLY and psql's \\gexec runs
-- it (it yields nothing when the index is valid or absent).
SELECT format('DROP INDEX CONCURRENTLY IF EXISTS %I.%I', n.nspname, c.relname)
FROM pg_index AS i
JOIN pg_class AS c ON c.oid = i.indexrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE i.indexrelid = to_regclass('{name}') AND NOT i.indisvalid
\\gexec"""


def check_valid_sql(name: str) -> str:
    """A DO block that stops the script unless ``name`` exists and is valid."""
    return f"""-- Stop before recording this revision unless {name} is there and valid.
DO $valid$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_index WHERE indexrelid = to_regclass('{name}') AND indisvalid
    ) THEN
        RAISE EXCEPTION 'index {name} is missing or INVALID after its build'
            USING HINT = 'run the script of this revision again: it drops an INVALID index and builds it anew';
    END IF;
END
$valid$"""


def index_validity(connection: Connection, name: str) -> bool | None:
    """True valid, False INVALID, None absent."""
    return connection.exec_driver_sql(VALIDITY_SQL.format(name=name)).scalar()


def _describe(rows) -> str:
    return "; ".join(
        f"pid {r.pid} ({r.application_name}, {r.state or 'unknown state'}, transaction open "
        f"since {r.xact_start:%H:%M:%S %Z})"
        if r.xact_start
        else f"pid {r.pid} ({r.application_name}, {r.state or 'unknown state'})"
        for r in rows
    )


@contextmanager
def reporting_waits(connection: Connection, what: str) -> Iterator[None]:
    """While the block runs on ``connection``, log every few seconds whom it waits for."""
    pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    done = threading.Event()

    def watch() -> None:
        try:
            with connection.engine.connect() as watcher:
                while not done.wait(REPORT_EVERY_SECONDS):
                    with watcher.begin():
                        rows = watcher.execute(text(BLOCKERS_SQL), {"pid": pid}).all()
                    if rows:
                        log.info(
                            "%s waits for %d older transaction(s) to finish: %s",
                            what,
                            len(rows),
                            _describe(rows),
                        )
        except Exception:  # a report, never a reason to fail the build
            log.debug("cannot report what %s waits for", what, exc_info=True)

    thread = threading.Thread(target=watch, name="index-build-waits", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=REPORT_EVERY_SECONDS)


def _unbounded(connection: Connection, sql: str, what: str, lock_timeout: str) -> None:
    """Run a concurrent index statement without ``lock_timeout``, reporting its waits."""
    connection.exec_driver_sql("SET lock_timeout = 0")
    try:
        with reporting_waits(connection, what):
            execute_sql(connection, sql)
    finally:
        connection.exec_driver_sql(restore_sql(lock_timeout))


def create_index_concurrently(name: str, table: str, columns: list[str]) -> None:
    """Build an index without blocking writes; re-runnable; recovers an INVALID one."""
    create = f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {table} ({', '.join(columns)})"
    if not can_autocommit():
        log.warning("inside the caller's transaction: building %s without CONCURRENTLY", name)
        run_sql(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({', '.join(columns)})")
        return
    lock_timeout = MigrationSettings.current().lock_timeout
    with op.get_context().autocommit_block():
        if is_offline():
            write_raw(drop_invalid_sql(name))
            run_sql(
                f"-- Build {name} without blocking writes to {table}. The build waits for\n"
                "-- every older transaction: lock_timeout must not cut that wait short.\n"
                "SET lock_timeout = 0"
            )
            run_sql(create)
            run_sql(restore_sql(lock_timeout))
            run_sql(check_valid_sql(name))
            return
        connection = op.get_bind()
        if index_validity(connection, name) is False:
            log.warning("%s is INVALID (an interrupted build): dropping it concurrently", name)
            _unbounded(
                connection,
                f"DROP INDEX CONCURRENTLY IF EXISTS {name}",
                f"dropping the INVALID {name}",
                lock_timeout,
            )
        _unbounded(connection, create, f"building {name}", lock_timeout)
        if index_validity(connection, name) is not True:
            raise CommandError(
                f"index {name} is missing or INVALID after its build; run the upgrade again "
                "(it drops an INVALID index and builds it anew)"
            )


def drop_index_concurrently(name: str) -> None:
    """Drop an index without blocking writes; re-runnable."""
    if not can_autocommit():
        log.warning("inside the caller's transaction: dropping %s without CONCURRENTLY", name)
        run_sql(f"DROP INDEX IF EXISTS {name}")
        return
    with op.get_context().autocommit_block():
        run_sql(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
