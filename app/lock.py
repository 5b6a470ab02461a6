"""The one lock: whoever writes ``course_enrollments`` in bulk, or migrates, holds it.

``alembic upgrade``/``downgrade``/``stamp`` (online, and the ``--sql`` script run with psql)
and ``enrollments backfill --commit`` take the same PostgreSQL session advisory lock, so no
two of them ever run at once. Read-only commands (``alembic current``, ``enrollments
audit``) never take it and never wait for it.

The holder also takes a second advisory lock whose key holds the time it got the first
(seconds since :data:`EPOCH`), so that a waiter can say since when the lock is held, not
only since when the holder is connected.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.engine import Connection

log = logging.getLogger(__name__)

# pg_advisory_lock key: the bytes of 'enroll1' (the key 1.0.0's upgrade lock used).
LOCK_KEY = int.from_bytes(b"enroll1", "big")
# The companion lock (int4, int4): class 'enrs' (since), object = seconds since EPOCH.
SINCE_CLASS = int.from_bytes(b"enrs", "big")
EPOCH = 1_704_067_200  # 2024-01-01 00:00:00 UTC
POLL_SECONDS = 0.5
REPORT_SECONDS = 30.0

TRY_SQL = f"SELECT pg_try_advisory_lock({LOCK_KEY})"
SINCE_SQL = (
    f"pg_advisory_lock({SINCE_CLASS}, (extract(epoch FROM clock_timestamp()) - {EPOCH})::int)"
)

# The holder of LOCK_KEY in this database, with the time its companion lock holds.
HOLDER_SQL = f"""SELECT a.pid, a.application_name, a.backend_start,
    (SELECT to_timestamp({EPOCH} + s.objid::bigint) FROM pg_locks AS s
     WHERE s.locktype = 'advisory' AND s.pid = l.pid AND s.granted AND s.objsubid = 2
       AND s.classid = {SINCE_CLASS}::oid
     LIMIT 1) AS since
FROM pg_locks AS l
JOIN pg_stat_activity AS a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid = ({LOCK_KEY} >> 32)::oid
  AND l.objid = ({LOCK_KEY} & 4294967295)::oid"""


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
    name = row.application_name or "no application_name"
    if row.since is not None:
        return f"pid {row.pid} ({name}) since {_clock(row.since)}"
    return f"pid {row.pid} ({name}), connected since {_clock(row.backend_start)}"


def try_take(connection: Connection) -> bool:
    """Take the lock if it is free, in a transaction of its own."""
    with connection.begin():
        got = bool(connection.execute(text(TRY_SQL)).scalar_one())
        if got:
            connection.execute(text(f"SELECT {SINCE_SQL}"))
    return got


def take(
    connection: Connection,
    purpose: str,
    report: Callable[[str], None] | None = None,
    report_every: float = REPORT_SECONDS,
) -> None:
    """Take the lock, waiting for its holder to finish.

    Polled in short transactions (``connection`` must not be in one): a session waiting
    inside a statement holds a snapshot, and a CREATE INDEX CONCURRENTLY run by the holder
    would wait for that snapshot: a deadlock. The holder is named at once and then every
    ``report_every`` seconds.
    """
    say = report or log.info
    last_report = None
    while not try_take(connection):
        now = time.monotonic()
        if last_report is None or now - last_report >= report_every:
            with connection.begin():
                holder = describe_holder(connection)
            say(f"{purpose}: waiting for the enrollments lock, held by {holder}")
            last_report = now
        time.sleep(POLL_SECONDS)


def release(connection: Connection) -> None:
    """Give the lock back; quietly, since the connection may be what failed."""
    try:
        if connection.in_transaction():
            connection.rollback()
        with connection.begin():
            connection.execute(text("SELECT pg_advisory_unlock_all()"))
    except Exception:
        log.debug("enrollments lock not released: the connection is gone")


def take_or_raise_sql(purpose: str) -> str:
    """For the offline script: take the lock or stop, naming who holds it.

    A psql session must not wait inside a statement (see :func:`take`), so it does not
    wait at all: run the script again when the holder has finished.
    """
    return f"""-- {purpose}: take the enrollments lock (the one `alembic upgrade` and
-- `enrollments backfill --commit` take), or stop here if someone holds it.
DO $lock$
DECLARE
    holder record;
BEGIN
    IF NOT pg_try_advisory_lock({LOCK_KEY}) THEN
        SELECT * INTO holder FROM (
{indent(HOLDER_SQL, 12)}
        ) AS h;
        RAISE EXCEPTION 'the enrollments lock is held by pid % (%) since %; nothing was changed',
            holder.pid, holder.application_name, coalesce(holder.since, holder.backend_start)
            USING HINT = 'run this script again when that session has finished';
    END IF;
    PERFORM {SINCE_SQL};
END
$lock$"""
