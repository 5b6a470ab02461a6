"""Running a revision's SQL: executed online, written to the psql script offline.

Every transaction of a run starts with the run's prelude (``enrollments_phase1.migration_env``): the
pinned ``search_path`` and the timeouts, ``SET LOCAL``, and the enrollments lock (checked
online, taken offline). Alembic's own transactions get it from the environment; the
transactions these helpers open get it from :func:`in_transaction`. The run in progress
(its legacy schema, its caller's transaction, the offline script) is
``enrollments_phase1.migration_env.current_run()``.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator

from alembic import context, op
from alembic.util import CommandError
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from enrollments_phase1.batching import transaction
from enrollments_phase1.db import run_prelude
from enrollments_phase1.migration_env import current_run
from enrollments_phase1.migrations.shared.v4.definition import Tables

log = logging.getLogger("migrations")

NOTICE = re.compile(r"^(WARNING|NOTICE|INFO):\s+(.*)$", re.S)


def is_offline() -> bool:
    return context.is_offline_mode()


def tables() -> Tables:
    """The tables of this run, in the legacy schema the environment resolved (online: the
    connection's; offline: ``-x legacy_schema``, ``public`` by default). Outside a run (a
    helper called on its own), ``public``."""
    return Tables(current_run().legacy_schema)


@contextlib.contextmanager
def in_transaction(connection: Connection | None, isolation: str | None = None) -> Iterator[None]:
    """A transaction of its own (with the run's prelude first), online or in the script.

    Online outside a transaction, ``BEGIN`` ... ``COMMIT``; inside the caller's (a test),
    a savepoint. Offline, ``BEGIN;`` with the prelude ... ``COMMIT;`` written to the
    script (the caller is in Alembic's autocommit block). ``isolation`` (for instance
    ``REPEATABLE READ READ ONLY``) goes in the ``BEGIN``, before the prelude's queries.
    """
    begin = f"BEGIN ISOLATION LEVEL {isolation}" if isolation else "BEGIN"
    if connection is None:
        script = current_run().script
        assert script is not None
        if not script.in_autocommit:  # in Alembic's transaction: the prelude ran already
            yield
            return
        impl = op.get_context().impl
        script.step_starts()
        impl.static_output(begin + ";")
        for statement in script.transaction_prelude():
            impl.static_output(statement + ";")
        script.in_transaction = True
        try:
            yield
        finally:
            script.in_transaction = False
        impl.emit_commit()
        return
    if isolation and connection.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        connection.exec_driver_sql(begin)
        try:
            run_prelude(connection)
            yield
        except BaseException:
            with contextlib.suppress(Exception):
                connection.exec_driver_sql("ROLLBACK")
            raise
        connection.exec_driver_sql("COMMIT")
        return
    with transaction(connection):
        yield


def execute_sql(connection: Connection, sql: str) -> int:
    """Run literal SQL exactly as written (no parameter parsing); return its rowcount."""
    result = connection.exec_driver_sql(sql, execution_options={"no_parameters": True})
    return max(result.rowcount, 0)


def run_sql(sql: str) -> int | None:
    """Execute literal SQL: written to the script offline, run (rowcount back) online."""
    if is_offline():
        _offline_step_starts()
        op.execute(sql)
        return None
    return execute_sql(op.get_bind(), sql)


def _offline_step_starts() -> None:
    script = current_run().script
    if script is not None:
        script.step_starts()


def write_raw(text: str) -> None:
    """Offline only: write ``text`` to the script as is (psql meta-commands, no ``;``)."""
    op.get_context().impl.static_output(text)


def can_autocommit() -> bool:
    """False when the caller runs the migration inside a transaction of its own.

    (A test that wraps the upgrade in a transaction, for instance.) Then nothing can run
    outside a transaction, and the helpers fall back to their transactional form, saying so.
    """
    return is_offline() or not current_run().in_caller_transaction


@contextlib.contextmanager
def outside_transaction() -> Iterator[Connection | None]:
    """Alembic's autocommit block: every statement or batch in it commits on its own.

    Offline it writes ``COMMIT;`` ... ``BEGIN;`` around what runs in it (and yields None),
    inside psql's ``\\if`` on where the script stands (a step before it may have failed).
    Inside a caller's transaction (a test) it is that transaction.
    """
    if can_autocommit():
        with op.get_context().autocommit_block():
            script = current_run().script
            if script is None:
                yield op.get_bind()
                return
            opening, closing = script.autocommit_guard()
            write_raw(opening)
            script.in_autocommit = True
            try:
                yield None
            finally:
                script.in_autocommit = False
            write_raw(closing)
    else:
        yield op.get_bind()


class _Notices:
    """What psycopg2 appends the server's notices to while a block runs: each is logged as
    it arrives (a block that retries says so while it waits). Not iterable, so that
    SQLAlchemy's dialect (which logs and clears an iterable one) leaves it alone."""

    def append(self, notice: str) -> None:
        match = NOTICE.match(notice.strip())
        if match:
            level = logging.WARNING if match.group(1) == "WARNING" else logging.INFO
            text = match.group(2).strip()
            if text.endswith("does not exist, skipping"):  # an idempotent DROP ... IF EXISTS
                level = logging.DEBUG
            log.log(level, "%s", text)


def run_block(
    connection: Connection | None, sql: str, error: type[CommandError] = CommandError
) -> None:
    """A DO block in a transaction of its own (:func:`in_transaction`): written offline
    (``connection`` None); executed online, with its notices logged and its ``RAISE
    EXCEPTION`` turned into one ``error`` (message, detail, hint)."""
    with in_transaction(connection):
        execute_block(connection, sql, error)


def execute_block(
    connection: Connection | None, sql: str, error: type[CommandError] = CommandError
) -> None:
    """A DO block in the transaction the caller holds (see :func:`run_block`)."""
    if connection is None:
        _offline_step_starts()
        op.execute(sql)
        return
    raw = connection.connection.dbapi_connection
    kept, raw.notices = raw.notices, _Notices()
    try:
        execute_sql(connection, sql)
    except DBAPIError as exc:
        diag = getattr(exc.orig, "diag", None)
        if getattr(exc.orig, "pgcode", None) != "P0001" or diag is None:
            raise
        lines = [diag.message_primary or ""]
        lines += [diag.message_detail] if diag.message_detail else []
        lines += [f"To fix: {diag.message_hint}."] if diag.message_hint else []
        raise error("\n".join(lines)) from None
    finally:
        raw.notices = kept
