"""Concurrent index builds that neither block writes nor give up on old transactions.

``CREATE INDEX CONCURRENTLY`` waits for every transaction older than its snapshot, and
PostgreSQL counts that wait against ``lock_timeout``. It takes only SHARE UPDATE EXCLUSIVE,
which blocks no reads or writes, so waiting harms nobody: it runs with no ``lock_timeout``
of ours, and names the sessions it waits for every few seconds. It cannot run in a
transaction, so a ``SET LOCAL`` cannot reach it:

- on a direct connection (the session is ours alone), ``lock_timeout`` is set to 0 for
  the build and reset right after;
- through a connection pooler a session-level ``SET`` could be left on a server connection
  another client gets next, so nothing is set: the build runs with the server's own
  ``lock_timeout`` (0 unless the role or the database sets one);
- in the script, likewise nothing is set (psql may be talking to a pooler).

An INVALID leftover of an interrupted build is dropped with ``DROP INDEX CONCURRENTLY``
first (offline through psql's ``\\gexec``), and the revision checks ``indisvalid`` before
it is recorded as applied (offline in the transaction that records it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from alembic.util import CommandError
from sqlalchemy import text
from sqlalchemy.engine import Connection

from enrollments_phase1.db import KEEP, behind_pooler
from enrollments_phase1.migration_env import MigrationSettings
from enrollments_phase1.migrations.shared.v4.definition import Tables, quote_literal
from enrollments_phase1.migrations.shared.v4.run import (
    can_autocommit,
    execute_sql,
    is_offline,
    outside_transaction,
    run_sql,
    tables,
    write_raw,
)

log = logging.getLogger("migrations")

REPORT_EVERY_SECONDS = 5.0

# The sessions a build on ``relid`` waits for (found through its progress row: through a
# pooler, the build may run on another server connection than the one that answered).
BLOCKERS_SQL = """SELECT a.pid, coalesce(nullif(a.application_name, ''), 'no application_name')
       AS application_name, a.state, a.xact_start
FROM pg_catalog.pg_stat_progress_create_index AS p
CROSS JOIN LATERAL pg_catalog.unnest(pg_catalog.pg_blocking_pids(p.pid)) AS b(pid)
JOIN pg_catalog.pg_stat_activity AS a ON a.pid = b.pid
WHERE p.relid = pg_catalog.to_regclass(:table)
ORDER BY a.xact_start"""


def _index(t: Tables, name: str) -> str:
    return quote_literal(getattr(t, name))


def validity_sql(t: Tables, name: str) -> str:
    return (
        "SELECT i.indisvalid FROM pg_catalog.pg_index AS i"
        f" WHERE i.indexrelid = pg_catalog.to_regclass({_index(t, name)})"
    )


def drop_invalid_sql(t: Tables, name: str) -> str:
    """Offline: a query that yields ``DROP INDEX CONCURRENTLY`` for an INVALID ``name``.

    psql's ``\\gexec`` runs what it yields: nothing when the index is valid or absent. It
    runs outside a transaction (so without the run's pinned search_path): every function
    and operator in it is qualified.
    """
    return f"""-- If an interrupted CREATE INDEX CONCURRENTLY left {name} INVALID, drop it without
-- blocking writes: this query yields that DROP INDEX CONCURRENTLY and psql's \\gexec runs
-- it (it yields nothing when the index is valid or absent).
SELECT pg_catalog.format('DROP INDEX CONCURRENTLY IF EXISTS %I.%I', n.nspname, c.relname)
FROM pg_catalog.pg_index AS i
JOIN pg_catalog.pg_class AS c ON c.oid OPERATOR(pg_catalog.=) i.indexrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
WHERE i.indexrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass({_index(t, name)}) AND NOT i.indisvalid
\\gexec"""


def check_valid_sql(t: Tables, name: str) -> str:
    """A DO block that stops the script unless ``name`` exists and is valid."""
    return f"""-- Stop before recording this revision unless {name} is there and valid.
DO $valid$
BEGIN
    IF NOT EXISTS ({validity_sql(t, name).replace("SELECT i.indisvalid", "SELECT 1", 1)} AND i.indisvalid) THEN
        RAISE EXCEPTION 'index {name} is missing or INVALID after its build'
            USING HINT = 'run the script of this revision again: it drops an INVALID index and builds it anew';
    END IF;
END
$valid$"""


def index_validity(connection: Connection, t: Tables, name: str) -> bool | None:
    """True valid, False INVALID, None absent."""
    return connection.exec_driver_sql(validity_sql(t, name)).scalar()


def _describe(rows) -> str:
    return "; ".join(
        f"pid {r.pid} ({r.application_name}, {r.state or 'unknown state'}, transaction open "
        f"since {r.xact_start:%H:%M:%S %Z})"
        if r.xact_start
        else f"pid {r.pid} ({r.application_name}, {r.state or 'unknown state'})"
        for r in rows
    )


@contextmanager
def reporting_waits(connection: Connection, table: str, what: str) -> Iterator[None]:
    """While a build on ``table`` runs, log every few seconds whom it waits for."""
    done = threading.Event()

    def watch() -> None:
        try:
            with connection.engine.connect() as watcher:
                while not done.wait(REPORT_EVERY_SECONDS):
                    with watcher.begin():
                        rows = watcher.execute(text(BLOCKERS_SQL), {"table": table}).all()
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


def _unbounded(connection: Connection, sql: str, table: str, what: str) -> None:
    """Run a concurrent index statement with no lock_timeout of ours, reporting its waits:
    on a direct connection with ``lock_timeout = 0`` (and the run's statement_timeout) for
    that statement only; through a pooler with the server's settings."""
    settings = MigrationSettings.current()
    session = [] if behind_pooler(connection) else ["lock_timeout = 0"]
    if session and settings.statement_timeout != KEEP:
        session.append(f"statement_timeout = {quote_literal(settings.statement_timeout)}")
    for setting in session:
        connection.exec_driver_sql(f"SET {setting}")
    try:
        with reporting_waits(connection, table, what):
            execute_sql(connection, sql)
    finally:
        for setting in session:
            connection.exec_driver_sql(f"RESET {setting.split(' = ')[0]}")


def create_index_concurrently(name: str, table: str, columns: list[str]) -> None:
    """Build an index without blocking writes; re-runnable; recovers an INVALID one."""
    t = tables()
    target = getattr(t, table)
    create = f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {target} ({', '.join(columns)})"
    if not can_autocommit():
        log.warning("inside the caller's transaction: building %s without CONCURRENTLY", name)
        run_sql(f"CREATE INDEX IF NOT EXISTS {name} ON {target} ({', '.join(columns)})")
        return
    if is_offline():
        with outside_transaction():
            write_raw(drop_invalid_sql(t, name))
            run_sql(
                f"-- Build {name} without blocking writes to {table}. The build waits for every\n"
                "-- older transaction, blocking nobody meanwhile; it runs with the server's\n"
                f"-- lock_timeout (0 unless the role or the database sets one).\n{create}"
            )
        run_sql(check_valid_sql(t, name))  # in the transaction that records the revision
        return
    with outside_transaction() as connection:
        if index_validity(connection, t, name) is False:
            log.warning("%s is INVALID (an interrupted build): dropping it concurrently", name)
            _unbounded(
                connection,
                f"DROP INDEX CONCURRENTLY IF EXISTS {getattr(t, name)}",
                target,
                f"dropping the INVALID {name}",
            )
        _unbounded(connection, create, target, f"building {name}")
        if index_validity(connection, t, name) is not True:
            raise CommandError(
                f"index {name} is missing or INVALID after its build; run the upgrade again "
                "(it drops an INVALID index and builds it anew)"
            )


def drop_index_concurrently(name: str) -> None:
    """Drop an index without blocking writes; re-runnable."""
    t = tables()
    if not can_autocommit():
        log.warning("inside the caller's transaction: dropping %s without CONCURRENTLY", name)
        run_sql(f"DROP INDEX IF EXISTS {getattr(t, name)}")
        return
    with outside_transaction():
        run_sql(f"DROP INDEX CONCURRENTLY IF EXISTS {getattr(t, name)}")
