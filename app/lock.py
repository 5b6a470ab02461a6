"""The one lock: whoever writes ``course_enrollments`` in bulk, or migrates, holds it.

``alembic upgrade``/``downgrade``/``stamp`` (online, and the ``--sql`` script run with psql)
and ``enrollments backfill --commit`` take the same PostgreSQL advisory lock, so no two of
them ever run at once. Read-only commands (``alembic current``, ``enrollments audit``)
never take it and never wait for it.

It is a *transaction-level* lock, never a session-level one, so that it holds through a
connection pooler in any mode and is never left behind on a pooled server connection:

- online, a **lock session** (a connection of its own) takes it and keeps its transaction
  open, idle, for the whole run. Idle in a transaction that wrote nothing and holds no
  snapshot, it holds back no VACUUM and no concurrent index build; when the run ends the
  transaction rolls back, and when the process dies the server (or the pooler) ends it:
  either way the lock is gone. Every transaction of the run first checks that the lock
  session still holds it (:func:`verify_sql`): verified, never assumed;
- the offline script has one connection: it takes the lock in each of its transactions
  (:func:`take_in_transaction_sql`), and stops if someone else holds it.

The holder also takes a second lock whose key holds the time it got the first (seconds
since :data:`EPOCH`), so that a waiter can say since when the lock is held.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from enrollments_phase1.db import connect_error
from enrollments_phase1.errors import RetryableError
from enrollments_phase1.names import PINNED_SEARCH_PATH

log = logging.getLogger(__name__)

# pg_advisory_lock key: the bytes of 'enroll1' (the key 1.0.0's upgrade lock used).
LOCK_KEY = int.from_bytes(b"enroll1", "big")
# The companion lock (int4, int4): class 'enrs' (since), object = seconds since EPOCH.
SINCE_CLASS = int.from_bytes(b"enrs", "big")
EPOCH = 1_704_067_200  # 2024-01-01 00:00:00 UTC
POLL_SECONDS = 0.5
REPORT_SECONDS = 30.0

TRY_SQL = f"SELECT pg_catalog.pg_try_advisory_xact_lock({LOCK_KEY})"
SINCE_SQL = (
    f"pg_catalog.pg_advisory_xact_lock({SINCE_CLASS}, (pg_catalog.date_part('epoch', "
    f"pg_catalog.clock_timestamp()) - {EPOCH})::integer)"
)

# Where the lock is in pg_locks (the key split as PostgreSQL shows a bigint key).
WHERE_LOCK = f"""l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d
                    WHERE d.datname = pg_catalog.current_database())
  AND l.classid = ({LOCK_KEY} >> 32)::oid
  AND l.objid = ({LOCK_KEY} & 4294967295)::oid"""

# A prepared transaction holding a lock ``l`` (it has no pid): found through the lock on
# its own xid, which it holds under the same virtual transaction.
PREPARED_JOIN = """LEFT JOIN pg_catalog.pg_locks AS own_xid
    ON l.pid IS NULL AND own_xid.pid IS NULL AND own_xid.locktype = 'transactionid'
   AND own_xid.virtualtransaction = l.virtualtransaction
LEFT JOIN pg_catalog.pg_prepared_xacts AS px ON px.transaction = own_xid.transactionid"""

# The holder of LOCK_KEY in this database, with the time its companion lock holds.
HOLDER_SQL = f"""SELECT a.pid, a.application_name, a.backend_start,
    (SELECT pg_catalog.to_timestamp({EPOCH} + s.objid::bigint) FROM pg_catalog.pg_locks AS s
     WHERE s.locktype = 'advisory' AND s.pid = l.pid AND s.granted AND s.objsubid = 2
       AND s.classid = {SINCE_CLASS}::oid
     LIMIT 1) AS since,
    l.pid IS NULL AS prepared, px.gid, px.owner, px.prepared AS prepared_at
FROM pg_catalog.pg_locks AS l
LEFT JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
{PREPARED_JOIN}
WHERE {WHERE_LOCK}"""


def indent(sql: str, spaces: int) -> str:
    return "\n".join(" " * spaces + line for line in sql.splitlines())


def _clock(value: datetime | None) -> str:
    if value is None:
        return "an unknown time"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def describe_holder(connection: Connection) -> str:
    """Who holds the lock, in words: pid, application_name, since when."""
    row = connection.execute(text(HOLDER_SQL)).first()
    if row is None:
        return "a session that has just released it"
    if row.prepared:
        return prepared_words(row.gid, row.owner, row.prepared_at)
    name = row.application_name or "no application_name"
    if row.since is not None:
        return f"pid {row.pid} ({name}) since {_clock(row.since)}"
    return f"pid {row.pid} ({name}), connected since {_clock(row.backend_start)}"


def prepared_words(gid: str | None, owner: str | None, prepared_at: datetime | None) -> str:
    """A prepared transaction, in words: it outlives every session, so name how it ends."""
    if gid is None:
        return "a prepared transaction (pg_prepared_xacts names it to a role that may read it)"
    return (
        f"prepared transaction '{gid}' (owner {owner}, prepared {_clock(prepared_at)}: "
        f"COMMIT PREPARED or ROLLBACK PREPARED '{gid}' ends it)"
    )


def verify_sql(holder_pid: int, what: str) -> str:
    """A DO block that stops the transaction unless the lock session (backend
    ``holder_pid``) still holds the lock: run first in every transaction of a run."""
    return f"""DO $verify$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_locks AS l WHERE {WHERE_LOCK.replace(chr(10), " ")}
                   AND l.pid = {int(holder_pid)}) THEN
        RAISE EXCEPTION USING ERRCODE = '55000', MESSAGE = 'lost the enrollments lock: its session (pid {int(holder_pid)}) was ended while this run held it; nothing more of {what} was written';
    END IF;
END
$verify$"""


HOLDERS_TEXT = f"""(SELECT pg_catalog.string_agg(CASE WHEN l.pid IS NULL
            THEN pg_catalog.format('prepared transaction %s (COMMIT PREPARED or ROLLBACK PREPARED ends it)',
                coalesce(pg_catalog.quote_literal(px.gid), '(gid not readable)'))
            ELSE pg_catalog.format('pid %s (%s, connected since %s)',
                a.pid, a.application_name, a.backend_start) END, ', ')
         FROM pg_catalog.pg_locks AS l LEFT JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
         {PREPARED_JOIN.replace(chr(10), chr(10) + "         ")}
         WHERE {WHERE_LOCK.replace(chr(10), chr(10) + "           ")})"""


def take_in_transaction_sql(purpose: str) -> str:
    """For the offline script: take the lock for this transaction, or stop, naming who
    holds it. psql must not wait inside a statement (a waiting statement holds a snapshot
    that a concurrent index build would wait for), so it does not wait at all."""
    return f"""DO $lock$
BEGIN
    IF NOT pg_catalog.pg_try_advisory_xact_lock({LOCK_KEY}) THEN
        RAISE EXCEPTION 'the enrollments lock is held by %; nothing more of {purpose} was changed',
            {HOLDERS_TEXT}
            USING HINT = 'run this script again when that session has finished';
    END IF;
END
$lock$"""


class LockSession:
    """The lock, held by a connection of its own in an open transaction (see above)."""

    def __init__(self, engine: Engine, purpose: str) -> None:
        self.engine = engine
        self.purpose = purpose
        self.connection: Connection | None = None
        self.pid: int | None = None

    def _try(self) -> bool:
        """Take the lock in a new transaction and keep it open; False when held."""
        assert self.connection is not None
        conn = self.connection
        conn.exec_driver_sql("BEGIN")
        try:
            # An idle transaction is what holds the lock: no timeout may end it. Its
            # statements, like every other of the run, resolve names in pg_catalog only.
            conn.exec_driver_sql(
                f"SET LOCAL search_path = {PINNED_SEARCH_PATH};"
                " SET LOCAL idle_in_transaction_session_timeout = 0"
            )
            if conn.exec_driver_sql(TRY_SQL).scalar_one():
                row = conn.exec_driver_sql(f"SELECT {SINCE_SQL}, pg_catalog.pg_backend_pid()").one()
                self.pid = int(row[1])
                return True
        except BaseException:
            self._rollback()
            raise
        self._rollback()
        return False

    def _rollback(self) -> None:
        if self.connection is not None:
            try:
                self.connection.exec_driver_sql("ROLLBACK")
            except Exception:
                log.debug("enrollments lock: rollback failed (the connection is gone)")

    def acquire(
        self,
        report: Callable[[str], None] | None = None,
        report_every: float = REPORT_SECONDS,
        patience: float | None = None,
    ) -> int:
        """Take the lock, waiting for its holder to finish; return the lock session's pid.

        Polled in short transactions: a session waiting inside a statement holds a
        snapshot, and a CREATE INDEX CONCURRENTLY run by the holder would wait for that
        snapshot (a deadlock). The holder is named at once and every ``report_every`` s;
        after ``patience`` seconds the wait ends with :class:`RetryableError`.
        """
        started = time.monotonic()
        say = report or log.info
        try:
            self.connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except DBAPIError as exc:
            raise connect_error(exc, self.engine.url) from None
        last_report = None
        while not self._try():
            now = time.monotonic()
            if last_report is None or now - last_report >= report_every:
                self.connection.exec_driver_sql("BEGIN")
                try:
                    self.connection.exec_driver_sql(f"SET LOCAL search_path = {PINNED_SEARCH_PATH}")
                    holder = describe_holder(self.connection)
                finally:
                    self._rollback()
                say(f"{self.purpose}: waiting for the enrollments lock, held by {holder}")
                last_report = now
            if patience is not None and now - started >= patience:
                self.release()
                raise RetryableError(
                    f"gave up waiting for the enrollments lock after {now - started:.0f} s "
                    f"(lock patience): held by {holder}; run again when it is free"
                )
            time.sleep(POLL_SECONDS)
        assert self.pid is not None
        return self.pid

    def release(self) -> None:
        """Give the lock back (end the transaction); quietly, the connection may be gone."""
        if self.connection is None:
            return
        self._rollback()
        try:
            self.connection.close()
        except Exception:
            log.debug("enrollments lock: the lock session did not close cleanly")
        self.connection = None

    def __enter__(self) -> LockSession:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
