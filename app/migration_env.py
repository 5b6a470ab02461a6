"""What ``migrations/env.py`` needs, kept out of it: settings, connection, lock, guards.

This is plumbing shared by every revision, like Alembic itself: it never holds the SQL of a
revision (that lives in ``migrations/shared/vN``), only how a run connects, locks, reports
errors, and how the offline script guards itself.

Settings come from ``alembic -x key=value``:

- ``lock_timeout`` (default ``5s``): how long a statement may wait for a lock. Set for the
  whole run, online and in the ``--sql`` script alike. (A concurrent index build does not
  count its wait for older transactions against it.)
- ``statement_timeout`` (default ``0``, none): a cap on each statement.
- ``backfill_batch_size`` (default: adaptive): a fixed number of memberships per batch of
  the backfill and of its undo, instead of sizes that follow a 100 ms target.
- ``backfill_one_statement`` (``no``): ``yes`` runs the backfill as one statement (one
  transaction) instead of batches.
- ``max_replica_lag`` (default ``10s``): before each batch, wait while a standby is further
  behind; ``0`` does not wait.
- ``coverage_gate`` (``abort`` by default, or ``warn``): what the coverage gate does below
  100%. ``warn`` is for emergencies and is logged loudly.
- ``drop_legacy_schema`` (``no``): ``yes`` lets ``downgrade base`` drop legacy tables that
  hold rows (tests, empty databases).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass, fields

from alembic import context
from alembic.util import CommandError
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from app import lock
from app.batching import BatchSettings
from app.db import (
    KEEP,
    connect_error,
    duration_seconds,
    install_interrupt_handling,
    interrupted,
    is_duration,
    make_engine,
    resolve_url,
    timeout_sql,
    translate_db_error,
)
from app.errors import ALEMBIC_ADVICE, EX_INTERRUPTED, EnrollmentsError

log = logging.getLogger("migrations")

GATE_MODES = ("abort", "warn")
MAX_BATCH = 1_000_000


def _duration(name: str, value: str, keep: bool = False) -> str:
    value = value.strip()
    if keep and value == KEEP:
        return value
    if not is_duration(value):
        raise CommandError(
            f"-x {name}={value!r} is not a PostgreSQL duration (for example 5s, 1.5s, 500ms, "
            f"2 min){' or keep' if keep else ''}"
        )
    return value


YES = ("yes", "true", "on", "1")
NO = ("no", "false", "off", "0")


def _flag(name: str, value: str | None) -> bool:
    if value is None:
        return False
    if value.lower() in YES + NO:
        return value.lower() in YES
    raise CommandError(f"-x {name}={value!r} must be yes or no")


@dataclass(frozen=True)
class MigrationSettings:
    """The ``-x`` options of one alembic run, checked."""

    lock_timeout: str = "5s"
    statement_timeout: str = "0"
    backfill_batch_size: int | None = None
    backfill_one_statement: bool = False
    max_replica_lag: str = "10s"
    coverage_gate: str = "abort"
    drop_legacy_schema: bool = False

    @classmethod
    def from_x_arguments(cls, x: dict[str, str]) -> MigrationSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(x) - known)
        if unknown:
            raise CommandError(
                f"unknown -x option(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        batch = x.get("backfill_batch_size")
        if batch is not None and (not batch.isdigit() or not 0 < int(batch) <= MAX_BATCH):
            raise CommandError(
                f"-x backfill_batch_size={batch!r} must be an integer from 1 to {MAX_BATCH:,}"
            )
        gate = x.get("coverage_gate", "abort")
        if gate not in GATE_MODES:
            raise CommandError(f"-x coverage_gate={gate!r} must be one of {', '.join(GATE_MODES)}")
        return cls(
            lock_timeout=_duration(
                "lock_timeout", x.get("lock_timeout", cls.lock_timeout), keep=True
            ),
            statement_timeout=_duration(
                "statement_timeout", x.get("statement_timeout", cls.statement_timeout), keep=True
            ),
            backfill_batch_size=int(batch) if batch else None,
            backfill_one_statement=_flag("backfill_one_statement", x.get("backfill_one_statement")),
            max_replica_lag=_duration(
                "max_replica_lag", x.get("max_replica_lag", cls.max_replica_lag)
            ),
            coverage_gate=gate,
            drop_legacy_schema=_flag("drop_legacy_schema", x.get("drop_legacy_schema")),
        )

    @classmethod
    def current(cls) -> MigrationSettings:
        """The settings of the alembic run in progress (for use inside revisions)."""
        return cls.from_x_arguments(context.get_x_argument(as_dictionary=True))

    @property
    def batch(self) -> BatchSettings:
        """How the backfill and its undo batch: adaptive unless a size is given."""
        return BatchSettings(
            fixed_size=self.backfill_batch_size,
            max_replica_lag=duration_seconds(self.max_replica_lag),
        )

    def session_sql(self) -> list[str]:
        """``SET`` statements for the migration session, online and offline alike (none
        for a timeout set to ``keep``: the role's or the database's setting stays)."""
        return timeout_sql("lock_timeout", self.lock_timeout) + timeout_sql(
            "statement_timeout", self.statement_timeout
        )


def is_writing_command() -> bool:
    """True for upgrade, downgrade and stamp; False for current, history, check, show.

    Alembic gives a destination revision only to the commands that move the database.
    """
    try:
        context.get_revision_argument()
    except KeyError:
        return False
    return True


# --- online ---------------------------------------------------------------------------
def online_connectable(config) -> Connection | Engine:
    """The connection handed in by a test, else an engine for ``DATABASE_URL``."""
    connectable = config.attributes.get("connection")
    if connectable is not None:
        return connectable
    try:
        url = resolve_url(config.get_main_option("sqlalchemy.url") or None)
    except EnrollmentsError as exc:
        raise CommandError(str(exc)) from None
    install_interrupt_handling()
    return make_engine(url, application_name="alembic")


def _fail_interrupted() -> None:
    """Ctrl-C: one line, exit 130 (Alembic's own ``FAILED:`` would exit 255)."""
    print(
        "FAILED: interrupted: the running statement was cancelled on the server and its "
        "transaction rolled back (alembic current shows the last completed revision)",
        flush=True,
    )
    raise SystemExit(EX_INTERRUPTED)


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """A database error during the run becomes Alembic's one-line ``FAILED: ...``.

    Lock and statement timeouts, a lost connection, permissions: the revision that was
    running rolled back; ``alembic current`` shows the last one that completed. Any other
    unexpected exception is one line too, naming its type (a bug to report).
    """
    try:
        yield
    except KeyboardInterrupt:
        _fail_interrupted()
    except CommandError:
        raise
    except SQLAlchemyError as exc:
        # Cleanup after a lost connection (Alembic leaving an autocommit block) raises
        # its own error; the cause worth reporting is the driver error behind it.
        cause: BaseException = exc
        while not isinstance(cause, DBAPIError) and cause.__context__ is not None:
            cause = cause.__context__
        if interrupted():
            _fail_interrupted()
        raise CommandError(
            f"{translate_db_error(cause, ALEMBIC_ADVICE)} "
            "(alembic current shows the last completed revision)"
        ) from None
    except EnrollmentsError as exc:
        raise CommandError(str(exc)) from None
    except Exception as exc:
        if getattr(context.config.cmd_opts, "cmd", None) is None:  # a library call: let it be
            raise
        log.debug("unexpected error", exc_info=True)
        raise CommandError(
            f"internal error: {type(exc).__name__}: {exc} (a bug; please report it)"
        ) from None


@contextlib.contextmanager
def connected(connectable) -> Iterator[Connection]:
    """A connection from ``connectable``; a connect failure becomes a one-line error.

    ``connectable`` is a Connection (used as is) or anything whose ``connect()`` gives a
    context manager: an Engine, or the wrapper pytest-alembic hands in.
    """
    if isinstance(connectable, Connection):
        yield connectable
        return
    try:
        manager = connectable.connect()
    except DBAPIError as exc:
        raise CommandError(str(connect_error(exc, connectable.url))) from None
    with manager as connection:
        yield connection


def _report(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def migration_session(connection: Connection, settings: MigrationSettings) -> Iterator[None]:
    """Hold the enrollments lock (writing commands only) and the session settings.

    The lock is taken before ``context.configure()``, so a second ``alembic upgrade`` reads
    ``alembic_version`` only after the first one has finished. Its wait is not bounded by
    ``lock_timeout`` (set afterwards). Read-only commands (current, check, history) take
    no lock and never wait.
    """
    writing = is_writing_command()
    in_caller_transaction = connection.in_transaction()
    if writing and in_caller_transaction:  # the caller's transaction: no waiting inside it
        if not connection.exec_driver_sql(lock.TRY_SQL).scalar_one():
            holder = lock.describe_holder(connection)
            raise CommandError(f"the enrollments lock is held by {holder}")
    elif writing:
        lock.take(connection, "alembic", report=_report)
    for statement in settings.session_sql():
        connection.exec_driver_sql(statement)
    if not in_caller_transaction:
        connection.commit()
    try:
        yield
    finally:
        with contextlib.suppress(SQLAlchemyError):  # the connection may be what failed
            if connection.in_transaction() and not in_caller_transaction:
                connection.rollback()
            connection.exec_driver_sql("RESET lock_timeout")
            connection.exec_driver_sql("RESET statement_timeout")
            if not in_caller_transaction:
                connection.commit()
        if writing and in_caller_transaction:
            with contextlib.suppress(SQLAlchemyError):
                connection.exec_driver_sql(f"SELECT pg_advisory_unlock({lock.LOCK_KEY})")
        elif writing:
            lock.release(connection)


# --- offline --------------------------------------------------------------------------
def _is_downgrade(script, start: str | None, destination: str | None) -> bool:
    if start is None:
        return False
    if destination is None:
        return True
    return destination in {rev.revision for rev in script.walk_revisions("base", start)}


def _command(script, start: str | None, destination: str | None) -> str:
    verb = "downgrade" if _is_downgrade(script, start, destination) else "upgrade"
    return f"alembic {verb} {{found}}:{destination or 'base'} --sql"


def start_check_sql(script, start: str | None, destination: str | None) -> str:
    """A DO block that stops the script unless the database stands where it starts.

    From ``start`` it needs ``alembic_version`` to hold exactly ``start``; from base it
    needs no ``alembic_version`` and no legacy tables (those are stamped, not created).
    """
    again = _command(script, start, destination)
    if start is None:
        body = f"""    IF to_regclass('alembic_version') IS NOT NULL THEN
        SELECT coalesce(string_agg(version_num, ', '), 'no revision') INTO found
        FROM alembic_version;
        RAISE EXCEPTION 'this script starts from an empty database, but this one is under Alembic already (at %); nothing was changed', found
            USING HINT = 'write the script from its revision: ' || replace('{again}', '{{found}}', found)
                || ', or run alembic upgrade {destination or "head"} online';
    END IF;
    SELECT string_agg(DISTINCT n.nspname, ', ') INTO found FROM pg_class AS c
    JOIN pg_namespace AS n ON n.oid = c.relnamespace
    WHERE c.relname = 'schools' AND c.relkind IN ('r', 'p')
      AND n.nspname <> ALL (current_schemas(false));
    IF to_regclass('schools') IS NULL AND found IS NOT NULL THEN
        RAISE EXCEPTION 'the legacy tables are in schema %, which the search_path (%) does not show: this script would create empty ones beside them; nothing was changed', found, current_setting('search_path')
            USING HINT = 'put that schema first on the search_path (SET search_path = ' || found || ') before running the script';
    END IF;
    IF to_regclass('schools') IS NOT NULL THEN
        RAISE EXCEPTION 'this database has the legacy tables but no alembic_version: it was never stamped; nothing was changed'
            USING HINT = 'run alembic stamp 0001 once (it records that the legacy schema is there), then write the script with '
                || replace('{again}', '{{found}}', '0001');
    END IF;"""
    else:
        body = f"""    IF to_regclass('alembic_version') IS NOT NULL THEN
        SELECT string_agg(version_num, ', ') INTO found FROM alembic_version;
    END IF;
    IF found IS DISTINCT FROM '{start}' THEN
        RAISE EXCEPTION 'this script starts at revision {start}, but the database is at %; nothing was changed',
            coalesce(found, 'no revision (no alembic_version)')
            USING HINT = CASE
                WHEN found IS NULL
                THEN 'an empty database takes alembic upgrade head --sql; a legacy database is stamped first: alembic stamp 0001'
                WHEN found = '{destination or ""}'
                THEN 'the database is at {destination or "base"} already: there is nothing to run'
                ELSE 'write the script from where the database is: ' || replace('{again}', '{{found}}', found)
            END;
    END IF;"""
    return f"""-- Stop unless the database stands at {start or "base (an empty database)"}, where this script starts.
DO $start$
DECLARE
    found text;
BEGIN
{body}
END
$start$"""


def moved_check_sql(heads: set[str]) -> str:
    """A DO block that stops the script unless ``alembic_version`` now holds ``heads``."""
    want = ", ".join(sorted(heads))
    return f"""-- Stop unless the revision above moved alembic_version to {want or "base"}.
DO $moved$
BEGIN
    IF (SELECT coalesce(string_agg(version_num, ', ' ORDER BY version_num), '') FROM alembic_version)
       IS DISTINCT FROM '{want}' THEN
        RAISE EXCEPTION 'alembic_version did not move to {want or "base"}: the database is not where this script expects';
    END IF;
END
$moved$"""


STOP_ON_ERROR = """\\set ON_ERROR_STOP on
-- psql stops at the first error, however it was started (the checks below rely on it)"""


def write_offline_prologue(settings: MigrationSettings) -> None:
    """The top of the script: stop on error, session settings, the lock, the start check."""
    script = context.script
    start = context.get_starting_revision_argument()
    destination = context.get_revision_argument()
    impl = context.get_context().impl
    impl.static_output(STOP_ON_ERROR)
    for statement in settings.session_sql():
        context.execute(statement)
    where = f"{start or 'base'}:{destination or 'base'}"
    impl.static_output(lock.take_or_raise_sql(f"alembic {where} --sql") + ";")
    impl.static_output(start_check_sql(script, start, destination) + ";")


def after_each_revision(ctx, step, heads, run_args) -> None:
    """``on_version_apply``: offline, check that the version moved before committing."""
    if ctx.as_sql:
        ctx.impl.static_output(moved_check_sql(set(heads)) + ";")
