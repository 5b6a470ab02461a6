"""What ``migrations/env.py`` needs, kept out of it: settings, the URL, the upgrade lock.

Settings come from ``alembic -x key=value``:

- ``lock_timeout`` (default ``5s``): how long any statement may wait for a lock. Set for
  the whole run, online and in the ``--sql`` script alike.
- ``statement_timeout`` (default ``0``, none): a cap on each statement.
- ``backfill_batch_size`` (default none): run the backfill revision in committed batches.
- ``coverage_gate`` (``abort`` by default, or ``warn``): what the coverage gate does below
  100%. ``warn`` is for emergencies and is logged loudly.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from alembic import context
from alembic.util import CommandError
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from app.db import (
    connect_error,
    is_duration,
    make_engine,
    release_advisory_lock,
    resolve_url,
    translate_db_error,
    wait_for_advisory_lock,
)
from app.errors import EnrollmentsError

log = logging.getLogger("migrations")

# pg_advisory_lock key for "an upgrade is running": the bytes of 'enroll1'.
UPGRADE_LOCK_KEY = int.from_bytes(b"enroll1", "big")
GATE_MODES = ("abort", "warn")


def _duration(name: str, value: str) -> str:
    value = value.strip()
    if not is_duration(value):
        raise CommandError(
            f"-x {name}={value!r} is not a PostgreSQL duration (for example 5s, 500ms, 2min)"
        )
    return value


@dataclass(frozen=True)
class MigrationSettings:
    """The ``-x`` options of one alembic run, checked."""

    lock_timeout: str = "5s"
    statement_timeout: str = "0"
    backfill_batch_size: int | None = None
    coverage_gate: str = "abort"

    @classmethod
    def from_x_arguments(cls, x: dict[str, str]) -> MigrationSettings:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(x) - known)
        if unknown:
            raise CommandError(
                f"unknown -x option(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        batch = x.get("backfill_batch_size")
        if batch is not None and (not batch.isdigit() or int(batch) <= 0):
            raise CommandError(f"-x backfill_batch_size={batch!r} must be a positive integer")
        gate = x.get("coverage_gate", "abort")
        if gate not in GATE_MODES:
            raise CommandError(f"-x coverage_gate={gate!r} must be one of {', '.join(GATE_MODES)}")
        return cls(
            lock_timeout=_duration("lock_timeout", x.get("lock_timeout", cls.lock_timeout)),
            statement_timeout=_duration(
                "statement_timeout", x.get("statement_timeout", cls.statement_timeout)
            ),
            backfill_batch_size=int(batch) if batch else None,
            coverage_gate=gate,
        )

    @classmethod
    def current(cls) -> MigrationSettings:
        """The settings of the alembic run in progress (for use inside revisions)."""
        return cls.from_x_arguments(context.get_x_argument(as_dictionary=True))

    def session_sql(self) -> list[str]:
        """``SET`` statements for the migration session, online and offline alike."""
        return [
            f"SET lock_timeout = '{self.lock_timeout}'",
            f"SET statement_timeout = '{self.statement_timeout}'",
        ]


def online_connectable(config) -> Connection | Engine:
    """The connection handed in by a test, else an engine for ``DATABASE_URL``."""
    connectable = config.attributes.get("connection")
    if connectable is not None:
        return connectable
    try:
        url = resolve_url(config.get_main_option("sqlalchemy.url") or None)
    except EnrollmentsError as exc:
        raise CommandError(str(exc)) from None
    return make_engine(url, application_name="alembic")


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """A database error during the run becomes Alembic's one-line ``FAILED: ...``.

    Lock and statement timeouts, a lost connection, permissions: the revision that was
    running rolled back; ``alembic current`` shows the last one that completed.
    """
    try:
        yield
    except SQLAlchemyError as exc:
        # Cleanup after a lost connection (Alembic leaving an autocommit block) raises
        # its own error; the cause worth reporting is the driver error behind it.
        cause: BaseException = exc
        while not isinstance(cause, DBAPIError) and cause.__context__ is not None:
            cause = cause.__context__
        raise CommandError(
            f"{translate_db_error(cause)} (alembic current shows the last completed revision)"
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


@contextlib.contextmanager
def upgrade_lock(connection: Connection, settings: MigrationSettings) -> Iterator[None]:
    """Hold the upgrade advisory lock and the session settings for the whole run.

    Taken before ``context.configure()`` so that a second ``alembic upgrade`` reads
    ``alembic_version`` only after the first one has finished. The wait for the lock is
    not bounded by ``lock_timeout`` (it is set afterwards): the second upgrade waits.
    """
    started_in_transaction = connection.in_transaction()
    if started_in_transaction:  # the caller's transaction: no waiting inside it
        got = connection.execute(
            text("SELECT pg_try_advisory_lock(:key)"), {"key": UPGRADE_LOCK_KEY}
        ).scalar_one()
        if not got:
            raise CommandError("another migration holds the upgrade lock")
    else:
        wait_for_advisory_lock(connection, UPGRADE_LOCK_KEY, "another alembic upgrade")
    for statement in settings.session_sql():
        connection.exec_driver_sql(statement)
    if not started_in_transaction:
        connection.commit()
    try:
        yield
    finally:
        with contextlib.suppress(SQLAlchemyError):  # the connection may be what failed
            if connection.in_transaction() and not started_in_transaction:
                connection.rollback()
            connection.exec_driver_sql("RESET lock_timeout")
            connection.exec_driver_sql("RESET statement_timeout")
            if not started_in_transaction:
                connection.commit()
        if started_in_transaction:
            with contextlib.suppress(SQLAlchemyError):
                connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": UPGRADE_LOCK_KEY}
                )
        else:
            release_advisory_lock(connection, UPGRADE_LOCK_KEY)
