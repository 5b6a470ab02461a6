"""What ``migrations/env.py`` needs, kept out of it: settings, the online session, the run.

This is plumbing shared by every revision, like Alembic itself: it never holds the SQL of a
revision (that lives in ``migrations/shared/vN``), only how a run reads its ``-x``
settings, connects, locks and reports errors. The psql script of an offline run is
:mod:`enrollments_phase1.offline_script`'s.

Settings come from ``alembic -x key=value``; their names, defaults and checks are
:mod:`enrollments_phase1.settings`' (docs/commands.md lists them).

Every statement of a writing run (``upgrade``, ``downgrade``, ``stamp``) runs with
``search_path = pg_catalog, pg_temp`` and its settings, all ``SET LOCAL`` in each
transaction: nothing planted in a writable schema can stand in for a built-in operator or
function, and nothing is left on a connection that a pooler hands to another client.

The revisions' helpers find the run in progress through :func:`current_run`: its settings,
the schema of the legacy tables, whether it runs inside a caller's transaction (a test's),
and offline the script being written.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from alembic import context
from alembic.util import CommandError
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from enrollments_phase1 import lock
from enrollments_phase1.batching import BatchSettings
from enrollments_phase1.db import (
    LITERAL,
    POOLER_NOTE,
    behind_pooler,
    check_pool_room,
    clear_transaction_prelude,
    connect_error,
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
from enrollments_phase1.names import Tables, resolve_schemas
from enrollments_phase1.names import quote_literal as _literal
from enrollments_phase1.offline_script import OfflineScript
from enrollments_phase1.schema import check_stamp_target
from enrollments_phase1.settings import SETTINGS, X_OPTIONS, SettingError
from enrollments_phase1.terminal import interrupted_line

log = logging.getLogger("migrations")


@dataclass(frozen=True)
class MigrationSettings:
    """The ``-x`` options of one alembic run, read and checked (:data:`SETTINGS`)."""

    lock_timeout: str
    lock_patience: str
    statement_timeout: str
    backfill_batch_size: int | None
    backfill_one_statement: bool
    max_replica_lag: str
    max_replica_lag_explicit: bool  # given with -x: a lag hidden from the role stops the run
    pause_patience: str
    hold_on_vacuum: bool
    max_xmin_age: str
    max_archive_backlog: int
    coverage_gate: str
    drop_legacy_schema: bool
    legacy_schema: str | None
    undo_referenced: str
    undo_after_move: str

    @classmethod
    def options(cls) -> tuple[str, ...]:
        """The ``-x`` options."""
        return X_OPTIONS

    @classmethod
    def from_x_arguments(cls, x: dict[str, str]) -> MigrationSettings:
        unknown = sorted(set(x) - set(X_OPTIONS))
        if unknown:
            raise CommandError(
                f"unknown -x option(s): {', '.join(unknown)} (known: {', '.join(sorted(X_OPTIONS))})"
            )
        values = {}
        for name in X_OPTIONS:
            try:
                values[name] = SETTINGS[name].value(x.get(name))
            except SettingError as exc:
                raise CommandError(f"-x {name}: {exc}") from None
        return cls(**values, max_replica_lag_explicit="max_replica_lag" in x)

    @classmethod
    def current(cls) -> MigrationSettings:
        """The settings of the alembic run in progress (for use inside revisions)."""
        return current_run().settings

    @property
    def batch(self) -> BatchSettings:
        """How the backfill and its undo batch: adaptive unless a size is given."""
        return BatchSettings(
            fixed_size=self.backfill_batch_size,
            max_replica_lag=duration_seconds(self.max_replica_lag),
            lag_bound_explicit=self.max_replica_lag_explicit,
            lag_option="-x max_replica_lag",
            patience_seconds=duration_seconds(self.lock_patience),
            pause_patience_seconds=duration_seconds(self.pause_patience),
            hold_on_vacuum=self.hold_on_vacuum,
            max_xmin_age=duration_seconds(self.max_xmin_age),
            max_archive_backlog=self.max_archive_backlog,
            x_options=True,
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


# --- the run in progress -------------------------------------------------------------------
@dataclass(frozen=True)
class MigrationRun:
    """One alembic run, as its revisions' helpers see it."""

    settings: MigrationSettings
    legacy_schema: str
    in_caller_transaction: bool = False  # online, inside a transaction a caller (a test) holds
    script: OfflineScript | None = None  # offline: the script being written


_RUN: ContextVar[MigrationRun | None] = ContextVar("enrollments_migration_run", default=None)


def current_run() -> MigrationRun:
    """The run in progress; outside one (a helper called on its own), defaults."""
    run = _RUN.get()
    if run is None:
        return MigrationRun(MigrationSettings.from_x_arguments({}), "public")
    return run


@contextlib.contextmanager
def running(run: MigrationRun) -> Iterator[MigrationRun]:
    token = _RUN.set(run)
    try:
        yield run
    finally:
        _RUN.reset(token)


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
    that the lock session still holds it, and sets the run's settings ``SET LOCAL``. The
    run is :func:`current_run` until it ends.
    Read-only commands (current, check, history) take no lock and never wait for it; their
    transactions get the run's timeouts too (``SET LOCAL``), so that a table lock held by
    someone else cannot hold them for ever.
    """
    writing = is_writing_command()
    in_caller_transaction = connection.in_transaction()
    schemas = run_schemas(connection, settings)
    pooled = behind_pooler(connection)
    if not in_caller_transaction:
        connection.rollback()
    holder: lock.LockSession | None = None
    restore: list[tuple[str, str]] = []
    try:
        if writing and in_caller_transaction:  # the caller's transaction: no waiting in it
            # The lock table is used where it exists, never made here: a harness comparing
            # the schema around a revision (pytest-alembic) runs in its own transaction.
            t = Tables(schemas.legacy)
            if connection.exec_driver_sql(f"SELECT {lock.table_sql(t)} IS NULL").scalar_one():
                if not connection.exec_driver_sql(lock.TRY_SQL).scalar_one():
                    raise CommandError(
                        f"the enrollments lock is held by {lock.describe_holder(connection, t)}"
                    )
            else:
                try:
                    connection.exec_driver_sql(
                        lock.take_in_transaction_sql("this migration", t),
                        execution_options=LITERAL,
                    )
                except DBAPIError as exc:
                    raise CommandError(str(exc.orig).splitlines()[0]) from None
            # Its settings last as long as the caller's transaction: put them back after.
            restore = [
                (name, connection.exec_driver_sql(f"SHOW {name}").scalar_one())
                for name, _ in settings.settings()
            ]
            for statement in settings.local_sql():
                connection.exec_driver_sql(statement)
        elif writing:
            warn_if_superuser(connection, Tables(schemas.legacy))
            if pooled:
                log.info("%s", POOLER_NOTE)
                room = _room_needed(connection, Tables(schemas.legacy))  # before the lock
            holder = lock.LockSession(connection.engine, "alembic", Tables(schemas.legacy))
            pid = holder.acquire(report=_report, patience=duration_seconds(settings.lock_patience))
            if pooled:
                check_pool_room(connection, *room)
            set_transaction_prelude(
                connection,
                [
                    *settings.local_sql(),
                    lock.verify_sql(pid, "this migration", Tables(schemas.legacy)),
                ],
            )
        elif not in_caller_transaction:  # read-only: no lock, but every wait still ends
            timeouts = [(n, v) for n, v in settings.settings() if n.endswith("_timeout")]
            set_transaction_prelude(connection, local_settings_sql(timeouts))
        with running(MigrationRun(settings, schemas.legacy, in_caller_transaction)):
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


def superuser_words(role: str, owner: str | None) -> str:
    """The warning for a migration run by a superuser (online and in the script)."""
    return (
        f"alembic runs as superuser {role}: the sync trigger's functions it installs run as "
        "their owner, with every privilege; run the migrations as "
        + (f"{owner}, the owner of the legacy tables" if owner else "a role without SUPERUSER")
    )


def warn_if_superuser(connection: Connection, t: Tables) -> None:
    """The audit warns of a superuser's functions after the fact: say it before."""
    with connection.begin():
        row = connection.exec_driver_sql(
            "SELECT r.rolsuper, r.rolname, (SELECT o.rolname FROM pg_catalog.pg_class AS c"
            " JOIN pg_catalog.pg_roles AS o ON o.oid = c.relowner"
            f" WHERE c.oid = {t.regclass('group_members')} AND NOT o.rolsuper) AS owner"
            " FROM pg_catalog.pg_roles AS r WHERE r.rolname = current_user"
        ).one()
    if row.rolsuper:
        log.warning("%s", superuser_words(row.rolname, row.owner))


def _room_needed(connection: Connection, t: Tables) -> tuple[int, str, str]:
    """Through a pooler, what the run needs at once (see ``check_pool_room``): the lock
    session, the migration and, while the index may still be built, the watcher that
    reports what its build waits for. Asked before the lock session holds a connection."""
    # The helpers' query (imported here: they import this module).
    from enrollments_phase1.migrations.shared.v4.indexes import validity_sql

    with connection.begin():
        built = connection.exec_driver_sql(
            validity_sql(t, "ix_course_enrollment_course_active")
        ).scalar()
    if built:
        return 2, "alembic", "the enrollments lock's session and the migration's"
    return (
        3,
        "alembic",
        "the enrollments lock's session, the migration's, and one that reports what the "
        "index build waits for",
    )


def in_revisions(name: str | None, type_: str, parent_names: dict) -> bool:
    """Autogenerate's ``include_name``: the enrollments lock's table, made by the first run
    that writes (as ``alembic_version`` is) and kept by every downgrade, is in no revision."""
    return not (type_ == "table" and name == lock.TABLE)


# --- offline --------------------------------------------------------------------------
def offline_schema(settings: MigrationSettings) -> str:
    return settings.legacy_schema or "public"


@contextlib.contextmanager
def offline_run(settings: MigrationSettings) -> Iterator[MigrationRun]:
    """An offline run: the script's prologue written, its guards following every ``BEGIN``
    (:class:`enrollments_phase1.offline_script.OfflineScript`)."""
    schema = offline_schema(settings)
    script = OfflineScript.start(
        impl=context.get_context().impl,
        script_directory=context.script,
        start=context.get_starting_revision_argument(),
        destination=context.get_revision_argument(),
        schema=schema,
        settings_sql=settings.local_sql(),
    )
    with running(MigrationRun(settings, schema, script=script)) as run:
        yield run


def after_each_revision(ctx, step, heads, run_args) -> None:
    """``on_version_apply``: online, stop if Ctrl-C came while the revision ran (this
    revision then rolls back), and refuse a stamp onto a database without the legacy
    tables (the stamp's transaction rolls back); offline, check that the version moved
    before committing (the script's start check verifies the legacy tables)."""
    run = current_run()
    script = run.script
    if script is None:
        stop_if_interrupted()
        if step.is_stamp and step.up_revision_ids:
            check_stamp_target(ctx.connection, Tables(run.legacy_schema))
        return
    script.revision_applied(set(heads))
