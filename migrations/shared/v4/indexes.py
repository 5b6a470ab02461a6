"""Concurrent index builds that neither block writes nor give up on old transactions.

``CREATE INDEX CONCURRENTLY`` waits for every transaction older than its snapshot, and
PostgreSQL counts that wait against ``lock_timeout``. It takes only SHARE UPDATE EXCLUSIVE,
which blocks no reads or writes, so waiting harms nobody: it runs with no ``lock_timeout``
of ours, and names the sessions it waits for every few seconds. It cannot run in a
transaction, so a ``SET LOCAL`` cannot reach it:

- on a direct connection (the session is ours alone), ``lock_timeout`` is set to 0 for
  the build and reset right after;
- through a connection pooler a session-level ``SET`` could be left on a server connection
  another client gets next, and a transaction cannot hold the build, so nothing can be
  set: the build runs with the server's own ``lock_timeout`` and ``statement_timeout``
  (those of the role or the database; many managed databases set them). It says so
  first; a build that the server's ``lock_timeout`` ends is dropped and retried with
  backoff until the run's ``lock_patience``; one that a timeout stops for good ends with
  the exact change to make (:func:`what_to_change`);
- in the script, likewise nothing is set (psql may be talking to a pooler).

An INVALID leftover of an interrupted build is dropped with ``DROP INDEX CONCURRENTLY``
first (offline through psql's ``\\gexec``), and the revision checks ``indisvalid`` before
it is recorded as applied (offline in the transaction that records it).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from alembic.util import CommandError
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from enrollments_phase1.db import KEEP, behind_pooler, duration_seconds, stop_if_interrupted
from enrollments_phase1.migration_env import MigrationSettings
from enrollments_phase1.migrations.shared.v4.definition import Tables, quote_literal
from enrollments_phase1.migrations.shared.v4.headers import header
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


def waits_notice_sql(table: str, name: str) -> str:
    """Offline, just before the build: a NOTICE naming the transactions it will wait for
    (those holding a snapshot or a transaction id now); psql prints nothing while it waits."""
    return f"""DO $waits$
DECLARE
    older text;
BEGIN
    SELECT pg_catalog.string_agg(pg_catalog.format('pid %s (%s, %s, transaction open since %s)', a.pid,
               coalesce(nullif(a.application_name, ''), 'no application_name'), a.state,
               pg_catalog.to_char(a.xact_start, 'HH24:MI:SS')), '; ' ORDER BY a.xact_start)
    INTO older
    FROM pg_catalog.pg_stat_activity AS a
    WHERE a.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()
      AND (a.backend_xmin IS NOT NULL OR a.backend_xid IS NOT NULL)
      AND a.datname OPERATOR(pg_catalog.=) pg_catalog.current_database();
    RAISE NOTICE 'building {name} on {table.replace("'", "''")}: it waits for %',
        coalesce('these transactions to end: ' OPERATOR(pg_catalog.||) older, 'no older transaction (none is open now)');
END
$waits$"""


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


# The timeouts a statement gets through a pooler, and where each was set.
SERVER_TIMEOUTS_SQL = """SELECT s.name, pg_catalog.current_setting(s.name) AS value, s.source,
    current_user AS role, pg_catalog.current_database() AS database
FROM pg_catalog.pg_settings AS s
WHERE s.name IN ('lock_timeout', 'statement_timeout') AND s.setting <> '0'
ORDER BY s.name"""

SOURCES = {
    "user": "for the role",
    "database": "for the database",
    "database user": "for the role in this database",
    "configuration file": "in the server's configuration",
    "default": "by default",
}


def server_timeouts(connection: Connection) -> dict[str, str]:
    """Through a pooler: the server's timeouts that are not 0, in words ("1s, set for the
    role"), by name; with the role and the database, for :func:`what_to_change`."""
    rows = connection.exec_driver_sql(SERVER_TIMEOUTS_SQL).all()
    found = {r.name: f"{r.value}, set {SOURCES.get(r.source, r.source)}" for r in rows}
    if rows:
        found["role"], found["database"] = rows[0].role, rows[0].database
    return found


def what_to_change(name: str, timeouts: dict[str, str]) -> str:
    """What to change when the server's ``name`` stops an index build through a pooler."""
    role = timeouts.get("role", "the deploy's role")
    database = timeouts.get("database", "this database")
    return (
        f"through the pooler the build runs with the server's {name} "
        f"({timeouts.get(name, 'not 0')}), which -x {name} cannot change: a pooler gives "
        f"the build no session of its own. Run the upgrade once on a direct "
        f"connection to the server (there the build sets its own), or let the deploy's "
        f'role build with none: ALTER ROLE "{role}" IN DATABASE "{database}" SET {name} = 0 '
        "(new server connections get it), then run the upgrade again"
    )


def build_patiently(connection: Connection, build, name: str) -> None:
    """Run ``build`` (it drops an INVALID leftover and builds ``name``); through a pooler,
    say first which of the server's timeouts the build gets, retry it with backoff and
    jitter when the server's lock_timeout ends it, until the run's lock_patience, and end
    with :func:`what_to_change` when a timeout stops it for good."""
    if not behind_pooler(connection):
        build()
        return
    timeouts = server_timeouts(connection)
    for setting in ("lock_timeout", "statement_timeout"):
        if setting in timeouts:
            log.warning(
                "building %s through the pooler: it runs with the server's %s (%s), as no "
                "session of its own can set another%s",
                name,
                setting,
                timeouts[setting],
                "; retried until lock_patience when it gives up"
                if setting == "lock_timeout"
                else "",
            )
    patience = duration_seconds(MigrationSettings.current().lock_patience)
    started = time.monotonic()
    attempt = 0
    while True:
        try:
            build()
            return
        except DBAPIError as exc:
            code = getattr(exc.orig, "pgcode", None)
            if code not in ("55P03", "57014"):
                raise
            setting = "lock_timeout" if code == "55P03" else "statement_timeout"
            if code == "57014" or time.monotonic() - started >= patience:
                raise CommandError(
                    f"building {name}: {what_to_change(setting, timeouts)}"
                ) from None
            attempt += 1
            log.warning(
                "building %s: the server's lock_timeout (%s) ended it (attempt %d); retrying",
                name,
                timeouts.get("lock_timeout", "not 0"),
                attempt,
            )
            time.sleep(min(5.0, random.uniform(0, 0.2 * 2 ** min(attempt, 6))))
            stop_if_interrupted()


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
            header("index")
            write_raw(drop_invalid_sql(t, name))
            run_sql(waits_notice_sql(target, name))
            run_sql(
                f"-- Build {name} without blocking writes to {table}. The build waits for every\n"
                "-- older transaction, blocking nobody meanwhile; it runs with the server's\n"
                f"-- lock_timeout (0 unless the role or the database sets one).\n{create}"
            )
        run_sql(check_valid_sql(t, name))  # in the transaction that records the revision
        return
    with outside_transaction() as connection:

        def build() -> None:
            if index_validity(connection, t, name) is False:
                log.warning("%s is INVALID (an interrupted build): dropping it concurrently", name)
                _unbounded(
                    connection,
                    f"DROP INDEX CONCURRENTLY IF EXISTS {getattr(t, name)}",
                    target,
                    f"dropping the INVALID {name}",
                )
            _unbounded(connection, create, target, f"building {name}")

        build_patiently(connection, build, name)
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
