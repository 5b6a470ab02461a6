"""What ``migrations/env.py`` needs, kept out of it: settings, connection, lock, guards.

This is plumbing shared by every revision, like Alembic itself: it never holds the SQL of a
revision (that lives in ``migrations/shared/vN``), only how a run connects, locks, reports
errors, and how the offline script guards itself.

Settings come from ``alembic -x key=value``:

- ``lock_timeout`` (default ``500ms``): how long one attempt of a statement waits for a
  lock, online and in the ``--sql`` script alike; the application's writes never queue
  behind a request of ours for longer. A step that gives up is retried with backoff and
  jitter, naming who holds the lock, for up to ``lock_patience``.
- ``lock_patience`` (default ``10min``): how long a step keeps retrying for its locks
  before the run stops with one line.
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
- ``undo_referenced`` (``keep``): what the undo below 0004 does with a recorded enrollment
  another table references: ``keep`` leaves it as it is (and counts it); ``refuse`` stops
  before any change, naming the tables.
- ``legacy_schema`` (online: found through the URL's search_path; offline: ``public``): the
  schema of the legacy tables, which every statement names. Offline the script checks it
  before it changes anything.

Every statement of a writing run (``upgrade``, ``downgrade``, ``stamp``) runs with
``search_path = pg_catalog, pg_temp`` and its settings, all ``SET LOCAL`` in each
transaction: nothing planted in a writable schema can stand in for a built-in operator or
function, and nothing is left on a connection that a pooler hands to another client.
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

from enrollments_phase1 import lock
from enrollments_phase1.batching import BatchSettings
from enrollments_phase1.db import (
    KEEP,
    POOLER_NOTE,
    behind_pooler,
    clear_transaction_prelude,
    connect_error,
    duration_problem,
    duration_seconds,
    install_interrupt_handling,
    interrupted,
    local_settings_sql,
    make_engine,
    resolve_url,
    run_settings,
    set_transaction_prelude,
    stop_if_interrupted,
    translate_db_error,
)
from enrollments_phase1.errors import ALEMBIC_ADVICE, EX_INTERRUPTED, EnrollmentsError
from enrollments_phase1.names import resolve_schemas
from enrollments_phase1.terminal import interrupted_line

log = logging.getLogger("migrations")

GATE_MODES = ("abort", "warn")
MAX_BATCH = 1_000_000


def _duration(name: str, value: str, keep: bool = False) -> str:
    """A duration -x may set; ``keep`` (the role's setting) where the option is a timeout
    PostgreSQL sets, which is also held to what PostgreSQL takes."""
    value = value.strip()
    if keep and value == KEEP:
        return value
    problem = duration_problem(value, timeout=keep)
    if problem:
        hint = " (or keep: the role's setting)" if keep else ""
        raise CommandError(f"-x {name}: {problem}{hint}")
    return value


UNDO_REFERENCED = ("keep", "refuse")


def _choice(name: str, value: str) -> str:
    if value not in UNDO_REFERENCED:
        raise CommandError(f"-x {name}={value!r} must be one of {', '.join(UNDO_REFERENCED)}")
    return value


def _schema(value: str | None) -> str | None:
    if value is None:
        return None
    if not value or len(value.encode()) > 63 or "\x00" in value:
        raise CommandError(f"-x legacy_schema={value!r} is not a schema name")
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

    lock_timeout: str = "500ms"
    lock_patience: str = "10min"
    statement_timeout: str = "0"
    backfill_batch_size: int | None = None
    backfill_one_statement: bool = False
    max_replica_lag: str = "10s"
    max_replica_lag_explicit: bool = False  # given with -x: hidden lag stops the run
    coverage_gate: str = "abort"
    drop_legacy_schema: bool = False
    legacy_schema: str | None = None
    undo_referenced: str = "keep"

    @classmethod
    def options(cls) -> set[str]:
        """The ``-x`` options (every field but what follows from them)."""
        return {f.name for f in fields(cls)} - {"max_replica_lag_explicit"}

    @classmethod
    def from_x_arguments(cls, x: dict[str, str]) -> MigrationSettings:
        known = cls.options()
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
            lock_patience=_duration("lock_patience", x.get("lock_patience", cls.lock_patience)),
            statement_timeout=_duration(
                "statement_timeout", x.get("statement_timeout", cls.statement_timeout), keep=True
            ),
            backfill_batch_size=int(batch) if batch else None,
            backfill_one_statement=_flag("backfill_one_statement", x.get("backfill_one_statement")),
            max_replica_lag=_duration(
                "max_replica_lag", x.get("max_replica_lag", cls.max_replica_lag)
            ),
            max_replica_lag_explicit="max_replica_lag" in x,
            coverage_gate=gate,
            drop_legacy_schema=_flag("drop_legacy_schema", x.get("drop_legacy_schema")),
            legacy_schema=_schema(x.get("legacy_schema")),
            undo_referenced=_choice("undo_referenced", x.get("undo_referenced", "keep")),
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
            lag_bound_explicit=self.max_replica_lag_explicit,
            lag_option="-x max_replica_lag",
            patience_seconds=duration_seconds(self.lock_patience),
        )

    def settings(self) -> list[tuple[str, str]]:
        """(name, value) of what every transaction of a writing run sets: the pinned
        search_path and the timeouts (``enrollments_phase1.db.run_settings``)."""
        return run_settings(self.lock_timeout, self.statement_timeout)

    def local_sql(self) -> list[str]:
        """``SET LOCAL`` of :meth:`settings`, first in every transaction."""
        return local_settings_sql(self.settings())

    def plpgsql_sql(self) -> str:
        """The same for a PL/pgSQL block, after each ``COMMIT`` it runs."""
        return "\n".join(
            f"PERFORM pg_catalog.set_config('{name}', {_literal(value)}, true);"
            for name, value in self.settings()
        )


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


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


WRITING_COMMANDS = {"upgrade", "downgrade", "stamp"}


def _where_it_stands() -> str:
    """After a failed upgrade, downgrade or stamp: where to look. Not after a failed
    ``alembic current``: that would send the user round in a circle."""
    cmd = getattr(getattr(context.config, "cmd_opts", None), "cmd", None)
    name = getattr(cmd[0], "__name__", "") if isinstance(cmd, tuple) and cmd else ""
    return (
        " (alembic current shows the last completed revision)" if name in WRITING_COMMANDS else ""
    )


def _fail_interrupted() -> None:
    """Ctrl-C: one line, exit 130 (Alembic's own ``FAILED:`` would exit 255)."""
    interrupted_line()
    print(
        "FAILED: interrupted: the running statement was cancelled on the server and its "
        f"transaction rolled back{_where_it_stands()}",
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
            f"{translate_db_error(cause, ALEMBIC_ADVICE)}{_where_it_stands()}"
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


@dataclass(frozen=True)
class RunSchemas:
    """Where this run finds the legacy tables and ``alembic_version``."""

    legacy: str
    version: str


def run_schemas(connection: Connection, settings: MigrationSettings) -> RunSchemas:
    """Where the legacy tables and ``alembic_version`` are, through the session's own
    search_path (the URL's), before the run pins it: ``-x legacy_schema`` when given;
    else the schema of ``group_members`` (the other legacy tables must be in the same
    one); on an empty database, where revision 0001 would create them."""
    found = resolve_schemas(connection)
    if settings.legacy_schema is not None:
        legacy = settings.legacy_schema
    elif found.legacy is not None:
        if len(found.spread) > 1:
            raise CommandError(
                f"the legacy tables are split over schemas {', '.join(found.spread)} "
                f"(search_path {found.search_path}): name theirs with -x legacy_schema=NAME"
            )
        legacy = found.legacy
    elif found.creation is not None:
        legacy = found.creation
    else:
        raise CommandError(
            f"no schema of the search_path ({found.search_path}) exists to hold the legacy "
            "tables: name it with -x legacy_schema=NAME"
        )
    return RunSchemas(legacy=legacy, version=found.version or legacy)


@contextlib.contextmanager
def migration_session(connection: Connection, settings: MigrationSettings) -> Iterator[RunSchemas]:
    """Hold the enrollments lock (writing commands only) and set up every transaction.

    The lock is taken before ``context.configure()``, so a second ``alembic upgrade`` reads
    ``alembic_version`` only after the first one has finished. It is held by a lock
    session of its own (``enrollments_phase1.lock``); every transaction of the run then checks, first,
    that the lock session still holds it, and sets the run's settings ``SET LOCAL``.
    Read-only commands (current, check, history) take no lock and never wait for it; their
    transactions get the run's timeouts too (``SET LOCAL``), so that a table lock held by
    someone else cannot hold them for ever.
    """
    writing = is_writing_command()
    in_caller_transaction = connection.in_transaction()
    schemas = run_schemas(connection, settings)
    context.config.attributes["legacy_schema"] = schemas.legacy
    pooled = behind_pooler(connection)
    if not in_caller_transaction:
        connection.rollback()
    holder: lock.LockSession | None = None
    restore: list[tuple[str, str]] = []
    try:
        if writing and in_caller_transaction:  # the caller's transaction: no waiting in it
            if not connection.exec_driver_sql(lock.TRY_SQL).scalar_one():
                raise CommandError(
                    f"the enrollments lock is held by {lock.describe_holder(connection)}"
                )
            # Its settings last as long as the caller's transaction: put them back after.
            restore = [
                (name, connection.exec_driver_sql(f"SHOW {name}").scalar_one())
                for name, _ in settings.settings()
            ]
            for statement in settings.local_sql():
                connection.exec_driver_sql(statement)
        elif writing:
            if pooled:
                log.info("%s", POOLER_NOTE)
            holder = lock.LockSession(connection.engine, "alembic")
            pid = holder.acquire(report=_report, patience=duration_seconds(settings.lock_patience))
            set_transaction_prelude(
                connection,
                [*settings.local_sql(), lock.verify_sql(pid, "this migration")],
            )
        elif not in_caller_transaction:  # read-only: no lock, but every wait still ends
            timeouts = [(n, v) for n, v in settings.settings() if n.endswith("_timeout")]
            set_transaction_prelude(connection, local_settings_sql(timeouts))
        yield schemas
    finally:
        with contextlib.suppress(SQLAlchemyError):  # the connection may be what failed
            if connection.in_transaction() and not in_caller_transaction:
                connection.rollback()
            for name, value in restore:
                connection.exec_driver_sql(
                    f"SELECT pg_catalog.set_config({_literal(name)}, {_literal(value)}, true)"
                )
        clear_transaction_prelude(connection)
        if holder is not None:
            holder.release()


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


def _q(schema: str) -> str:
    return '"' + schema.replace('"', '""') + '"'


def start_check_sql(script, start: str | None, destination: str | None, schema: str) -> str:
    """A DO block that stops the script unless the database stands where it starts.

    From ``start`` it needs ``alembic_version`` (in ``schema``) to hold exactly ``start``;
    from base it needs no ``alembic_version`` and no legacy tables (those are stamped, not
    created). Either way, legacy tables found in another schema than ``schema`` stop it,
    naming the ``-x legacy_schema`` to write the script with.
    """
    again = _command(script, start, destination)
    version = f"{_q(schema)}.alembic_version"
    elsewhere = f"""    SELECT pg_catalog.string_agg(DISTINCT n.nspname, ', ') INTO elsewhere
    FROM pg_catalog.pg_class AS c
    JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
    WHERE c.relname = 'group_members' AND c.relkind IN ('r', 'p') AND n.nspname <> {_literal(schema)};
    IF pg_catalog.to_regclass({_literal(_q(schema) + ".group_members")}) IS NULL AND elsewhere IS NOT NULL THEN
        RAISE EXCEPTION 'the legacy tables are in schema %, but this script was written for schema {schema.replace("'", "''").replace("%", "%%")}; nothing was changed', elsewhere
            USING HINT = 'write the script for that schema: alembic -x legacy_schema=' || elsewhere || ' ' || replace('{again}', '{{found}}', {"'base'" if start is None else _literal(start)});
    END IF;"""
    if start is None:
        body = f"""{elsewhere}
    IF pg_catalog.to_regclass({_literal(version)}) IS NOT NULL THEN
        SELECT coalesce(pg_catalog.string_agg(version_num, ', '), 'no revision') INTO found
        FROM {version};
        RAISE EXCEPTION 'this script starts from an empty database, but this one is under Alembic already (at %); nothing was changed', found
            USING HINT = 'write the script from its revision: ' || replace('{again}', '{{found}}', found)
                || ', or run alembic upgrade {destination or "head"} online';
    END IF;
    IF pg_catalog.to_regclass({_literal(_q(schema) + ".schools")}) IS NOT NULL THEN
        RAISE EXCEPTION 'this database has the legacy tables but no alembic_version: it was never stamped; nothing was changed'
            USING HINT = 'run alembic stamp 0001 once (it records that the legacy schema is there), then write the script with '
                || replace('{again}', '{{found}}', '0001');
    END IF;"""
    else:
        body = f"""{elsewhere}
    IF pg_catalog.to_regclass({_literal(version)}) IS NOT NULL THEN
        SELECT pg_catalog.string_agg(version_num, ', ') INTO found FROM {version};
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
    elsewhere text;
BEGIN
{body}
END
$start$"""


def moved_check_sql(heads: set[str], schema: str) -> str:
    """A DO block that stops the script unless ``alembic_version`` now holds ``heads``."""
    want = ", ".join(sorted(heads))
    return f"""-- Stop unless the revision above moved alembic_version to {want or "base"}.
DO $moved$
BEGIN
    IF (SELECT coalesce(pg_catalog.string_agg(version_num, ', ' ORDER BY version_num), '') FROM {_q(schema)}.alembic_version)
       IS DISTINCT FROM '{want}' THEN
        RAISE EXCEPTION 'alembic_version did not move to {want or "base"}: the database is not where this script expects';
    END IF;
END
$moved$"""


def version_guard_sql(expected: str | None, schema: str, again: str) -> str:
    """A DO block that stops its transaction unless ``alembic_version`` holds ``expected``
    (None: base, no revision), where the script stands if every step before it committed.

    Every transaction of the script starts with it. Run without ``ON_ERROR_STOP``, psql
    goes on after a failed statement: a check that failed rolled back the transaction
    that would have moved ``alembic_version``, so every later transaction stops here, and
    nothing of a revision past a failed check is applied."""
    version = f"{_q(schema)}.alembic_version"
    want = expected or ""
    return f"""DO $where$
DECLARE
    found text := '';
BEGIN
    IF pg_catalog.to_regclass({_literal(version)}) IS NOT NULL THEN
        SELECT coalesce(pg_catalog.string_agg(version_num, ', ' ORDER BY version_num), '') INTO found FROM {version};
    END IF;
    IF found IS DISTINCT FROM '{want}' THEN
        RAISE EXCEPTION 'this step expects the database at {expected or "base"}, but it is at %: a step before it failed; nothing more of this script is applied', coalesce(nullif(found, ''), 'base')
            USING HINT = 'fix what failed first, then write the script again from where the database stands: ' || replace('{again}', '{{found}}', coalesce(nullif(found, ''), 'base'));
    END IF;
END
$where$"""


def offline_transaction_prelude() -> list[str]:
    """What the script runs first in each transaction it opens: the settings, the lock,
    and the guard on where the script stands (:func:`version_guard_sql`)."""
    attributes = context.config.attributes
    guard = version_guard_sql(
        attributes.get("expected_version"), attributes["legacy_schema"], attributes["again"]
    )
    return [*attributes.get("transaction_prelude", []), guard]


def offline_autocommit_guard() -> tuple[str, str]:
    """What the script writes around the statements it runs outside a transaction (an
    index built concurrently, a batched backfill): psql's ``\\if`` runs them only where
    ``alembic_version`` holds what this point of the script expects (as
    :func:`version_guard_sql` does for a transaction). A query that fails leaves the
    variable unset, which ``\\if`` takes as false."""
    attributes = context.config.attributes
    version = f"{_q(attributes['legacy_schema'])}.alembic_version"
    want = attributes.get("expected_version") or ""
    opening = f"""-- Only where the database stands at {want or "base"}: a step before this one failed otherwise.
\\unset enrollments_on_track
SELECT coalesce(pg_catalog.string_agg(version_num, ', ' ORDER BY version_num), '') OPERATOR(pg_catalog.=) '{want}' AS enrollments_on_track
FROM {version}
\\gset
\\if :enrollments_on_track"""
    closing = """\\else
\\echo 'skipped: the database is not where this step expects (a step before it failed)'
\\endif"""
    return opening, closing


STOP_ON_ERROR = """\\set ON_ERROR_STOP on
-- psql stops at the first error, however it was started (the checks below rely on it).
-- Every transaction below starts with the run's settings (SET LOCAL: nothing is left on
-- the connection) and takes the enrollments lock for itself."""


def offline_schema(settings: MigrationSettings) -> str:
    return settings.legacy_schema or "public"


def offline_prelude(settings: MigrationSettings, purpose: str) -> list[str]:
    """What the script runs first in every transaction: the settings, then the lock."""
    return [*settings.local_sql(), lock.take_in_transaction_sql(purpose)]


def write_offline_prologue(settings: MigrationSettings) -> None:
    """The top of the script: stop on error, then the start check in a transaction of its
    own; and every later ``BEGIN`` followed by the run's settings and the lock."""
    script = context.script
    start = context.get_starting_revision_argument()
    destination = context.get_revision_argument()
    schema = offline_schema(settings)
    context.config.attributes["legacy_schema"] = schema
    impl = context.get_context().impl
    where = f"{start or 'base'}:{destination or 'base'}"
    prelude = offline_prelude(settings, f"alembic {where} --sql")
    context.config.attributes["transaction_prelude"] = prelude
    context.config.attributes["expected_version"] = start
    context.config.attributes["again"] = _command(script, start, destination)
    impl.static_output(STOP_ON_ERROR)
    impl.static_output("BEGIN;")
    for statement in prelude:
        impl.static_output(statement + ";")
    impl.static_output(start_check_sql(script, start, destination, schema) + ";")
    impl.static_output("COMMIT;")
    emit_begin = impl.emit_begin

    def begin_with_prelude() -> None:
        emit_begin()
        for statement in offline_transaction_prelude():
            impl.static_output(statement + ";")

    impl.emit_begin = begin_with_prelude


def after_each_revision(ctx, step, heads, run_args) -> None:
    """``on_version_apply``: online, stop if Ctrl-C came while the revision ran (this
    revision then rolls back); offline, check that the version moved before committing."""
    if not ctx.as_sql:
        stop_if_interrupted()
        return
    schema = ctx.config.attributes.get("legacy_schema", "public") if ctx.config else "public"
    ctx.impl.static_output(moved_check_sql(set(heads), schema) + ";")
    if ctx.config:
        ctx.config.attributes["expected_version"] = ", ".join(sorted(heads)) or None
