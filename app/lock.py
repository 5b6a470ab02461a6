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

The lock is two locks, taken in this order:

- ``LOCK TABLE enrollments_lock IN EXCLUSIVE MODE``: the table (no rows, next to the
  legacy tables) belongs to the deploying role and grants nothing to anyone, and only a
  role with INSERT, UPDATE, DELETE or TRUNCATE on a table may take a lock that conflicts
  with EXCLUSIVE. So no role that may not run the deploy can hold it, and whoever holds
  it is named from ``pg_locks``, which no one can forge. Like the advisory lock it assigns
  no transaction id and takes no snapshot;
- the advisory lock 1.0.0 to 1.2.0 took (:data:`LOCK_KEY`), so that a command of an older
  release never runs at once with this one. Any role may take an advisory lock: a holder
  whose role may not take the table lock (:func:`may_deploy_sql`) is named in a warning
  and otherwise ignored.

The holder also takes a third lock whose key holds the time it got the first (seconds
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

from enrollments_phase1.db import LITERAL, connect_error
from enrollments_phase1.errors import RetryableError
from enrollments_phase1.names import PINNED_SEARCH_PATH, Tables, quote_literal

log = logging.getLogger(__name__)

# pg_advisory_lock key: the bytes of 'enroll1' (the key 1.0.0's upgrade lock used).
LOCK_KEY = int.from_bytes(b"enroll1", "big")
# The companion lock (int4, int4): class 'enrs' (since), object = seconds since EPOCH.
SINCE_CLASS = int.from_bytes(b"enrs", "big")
EPOCH = 1_704_067_200  # 2024-01-01 00:00:00 UTC
POLL_SECONDS = 0.5
# What a run waiting for the lock leaves as its last query between two tries: pg_stat_activity
# shows it, so that enrollments status can say a run waits (state waiting_lock).
WAITING_MARK = "SELECT 'waiting for the enrollments lock' AS enrollments"
REPORT_SECONDS = 30.0

TRY_SQL = f"SELECT pg_catalog.pg_try_advisory_xact_lock({LOCK_KEY})"
# Tried, never waited for: anyone may take an advisory lock of that class first.
SINCE_SQL = (
    f"pg_catalog.pg_try_advisory_xact_lock({SINCE_CLASS}, (pg_catalog.date_part('epoch', "
    f"pg_catalog.clock_timestamp()) - {EPOCH})::integer)"
)

TABLE = "enrollments_lock"
COMMENT = (
    "the enrollments lock: held (LOCK TABLE ... IN EXCLUSIVE MODE) by whoever migrates or "
    "backfills course_enrollments; holds no rows"
)
# Who may take a lock that conflicts with EXCLUSIVE on a table: who may run the deploy.
DEPLOY_PRIVILEGES = "INSERT, UPDATE, DELETE, TRUNCATE"

# Where the advisory lock is in pg_locks (the key split as PostgreSQL shows a bigint key).
DATABASE_SQL = (
    "(SELECT d.oid FROM pg_catalog.pg_database AS d"
    " WHERE d.datname = pg_catalog.current_database())"
)
WHERE_LOCK = (
    f"l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = {DATABASE_SQL}"
    f" AND l.classid = ({LOCK_KEY} >> 32)::oid AND l.objid = ({LOCK_KEY} & 4294967295)::oid"
)

# A prepared transaction holding a lock ``l`` (it has no pid): found through the lock on
# its own xid, which it holds under the same virtual transaction.
PREPARED_JOIN = """LEFT JOIN pg_catalog.pg_locks AS own_xid ON l.pid IS NULL AND own_xid.pid IS NULL
    AND own_xid.locktype = 'transactionid' AND own_xid.virtualtransaction = l.virtualtransaction
LEFT JOIN pg_catalog.pg_prepared_xacts AS px ON px.transaction = own_xid.transactionid"""


def table_sql(t: Tables) -> str:
    """The lock table, as a regclass expression (NULL before it is created)."""
    return t.regclass(TABLE)


HOLDER_ROLE = (
    "coalesce(a.usesysid, (SELECT r.oid FROM pg_catalog.pg_roles AS r WHERE r.rolname = px.owner))"
)


def may_deploy_sql(t: Tables, role: str = HOLDER_ROLE) -> str:
    """Whether ``role`` (by default that of the session or prepared transaction holding
    lock ``l``) could take the lock table's lock: the advisory lock counts only from such
    a role. Unknown (a prepared transaction whose owner is not readable): it counts."""
    return f"coalesce(pg_catalog.has_table_privilege({role}, {table_sql(t)}, '{DEPLOY_PRIVILEGES}'), true)"


def where_held_sql(t: Tables) -> str:
    """A lock ``l`` in pg_locks that keeps this run from taking the enrollments lock: any
    granted lock on the lock table but a reader's, or the advisory lock held by a role that
    may deploy."""
    return f"""l.pid IS DISTINCT FROM pg_catalog.pg_backend_pid()
AND ((l.locktype = 'relation' AND l.granted AND l.mode <> 'AccessShareLock'
      AND l.relation = {table_sql(t)} AND l.database = {DATABASE_SQL})
     OR ({WHERE_LOCK} AND {may_deploy_sql(t)}))"""


def holder_sql(t: Tables) -> str:
    """Who holds the enrollments lock (the table's holder first), with the time its
    companion lock holds."""
    return f"""SELECT a.pid, a.application_name, a.backend_start, a.client_addr,
    (SELECT pg_catalog.to_timestamp({EPOCH} + s.objid::bigint) FROM pg_catalog.pg_locks AS s
     WHERE s.locktype = 'advisory' AND s.pid = l.pid AND s.granted AND s.objsubid = 2
       AND s.classid = {SINCE_CLASS}::oid
     LIMIT 1) AS since,
    l.pid IS NULL AS prepared, px.gid, px.owner, px.prepared AS prepared_at
FROM pg_catalog.pg_locks AS l
LEFT JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
{PREPARED_JOIN}
WHERE {where_held_sql(t)}
ORDER BY l.locktype = 'relation' DESC"""


def ignored_sql(t: Tables) -> str:
    """The sessions holding the advisory lock whose role may not deploy: one line each."""
    return f"""SELECT pg_catalog.format('pid %s (role %s, %s)', a.pid, a.usename,
    coalesce(nullif(a.application_name, ''), 'no application_name'))
FROM pg_catalog.pg_locks AS l JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
WHERE {WHERE_LOCK} AND NOT {may_deploy_sql(t, "a.usesysid")}"""


IGNORED_WORDS = (
    "holds the advisory lock of releases before 1.3 but may not run a deploy (no INSERT, "
    "UPDATE, DELETE or TRUNCATE on {table}): not waited for"
)


def create_sql(t: Tables) -> str:
    """A DO block that creates the lock table when it is missing, with no grant to anyone
    (default privileges included), and stops unless it belongs to a role that runs the
    deploy: this role, or the owner of ``group_members`` or of ``alembic_version``. A table
    another role planted there first would let that role hold every deploy."""
    table = getattr(t, TABLE)
    return f"""DO $lock_table$
DECLARE
    grantee oid;
    owner oid;
BEGIN
    IF {table_sql(t)} IS NULL THEN
        CREATE TABLE {table} ();
        COMMENT ON TABLE {table} IS {quote_literal(COMMENT)};
        FOR grantee IN
            SELECT DISTINCT g.grantee FROM pg_catalog.pg_class AS c,
                pg_catalog.aclexplode(c.relacl) AS g
            WHERE c.oid = {table_sql(t)} AND g.grantee <> c.relowner
        LOOP
            EXECUTE pg_catalog.format('REVOKE ALL ON TABLE %s FROM %s', {quote_literal(table)},
                CASE WHEN grantee = 0 THEN 'PUBLIC'
                     ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(grantee)) END);
        END LOOP;
    END IF;
    SELECT c.relowner INTO owner FROM pg_catalog.pg_class AS c WHERE c.oid = {table_sql(t)};
    IF owner <> ALL (ARRAY(
        SELECT r.oid FROM pg_catalog.pg_roles AS r WHERE r.rolname = current_user
        UNION ALL
        SELECT c.relowner FROM pg_catalog.pg_class AS c
        WHERE c.oid IN ({t.regclass("group_members")}, {t.regclass("alembic_version")})))
    THEN
        RAISE EXCEPTION USING ERRCODE = '42P17',
            MESSAGE = pg_catalog.format('%s belongs to %s, a role that neither runs this deploy nor owns group_members or alembic_version: that role could hold every deploy; nothing was changed',
                {quote_literal(table)}, pg_catalog.pg_get_userbyid(owner)),
            HINT = pg_catalog.format('if %s may run the deploy: ALTER TABLE %s OWNER TO %s; if not: DROP TABLE %s (the next run creates it)',
                pg_catalog.pg_get_userbyid(owner), {quote_literal(table)}, current_user, {quote_literal(table)});
    END IF;
END
$lock_table$"""


def indent(sql: str, spaces: int) -> str:
    return "\n".join(" " * spaces + line for line in sql.splitlines())


def utc_clock(value: datetime | None) -> str:
    if value is None:
        return "an unknown time"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def describe_holder(connection: Connection, t: Tables) -> str:
    """Who holds the lock, in words: pid, application_name, since when."""
    row = connection.execute(text(holder_sql(t))).first()
    if row is None:
        return "a session that has just released it"
    if row.prepared:
        return prepared_words(row.gid, row.owner, row.prepared_at)
    name = row.application_name or "no application_name"
    if row.since is not None:
        return f"pid {row.pid} ({name}) since {utc_clock(row.since)}"
    return f"pid {row.pid} ({name}), connected since {utc_clock(row.backend_start)}"


def prepared_words(gid: str | None, owner: str | None, prepared_at: datetime | None) -> str:
    """A prepared transaction, in words: it outlives every session, so name how it ends."""
    if gid is None:
        return "a prepared transaction (pg_prepared_xacts names it to a role that may read it)"
    return (
        f"prepared transaction '{gid}' (owner {owner}, prepared {utc_clock(prepared_at)}: "
        f"COMMIT PREPARED or ROLLBACK PREPARED '{gid}' ends it)"
    )


def verify_sql(holder_pid: int, what: str, t: Tables) -> str:
    """A DO block that stops the transaction unless the lock session (backend
    ``holder_pid``) still holds the lock table's lock: run first in every transaction of
    a run."""
    return f"""DO $verify$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_locks AS l
                   WHERE l.locktype = 'relation' AND l.granted AND l.mode = 'ExclusiveLock'
                     AND l.relation = {table_sql(t)} AND l.pid = {int(holder_pid)}) THEN
        RAISE EXCEPTION USING ERRCODE = '55000', MESSAGE = 'lost the enrollments lock: its session (pid {int(holder_pid)}) was ended while this run held it; nothing more of {what} was written';
    END IF;
END
$verify$"""


def holders_text_sql(t: Tables) -> str:
    """An expression: who holds the lock, in words (for the script's messages)."""
    return f"""(SELECT pg_catalog.string_agg(CASE WHEN l.pid IS NULL
    THEN pg_catalog.format('prepared transaction %s (COMMIT PREPARED or ROLLBACK PREPARED ends it)',
        coalesce(pg_catalog.quote_literal(px.gid), '(gid not readable)'))
    ELSE pg_catalog.format('pid %s (%s, connected since %s)', a.pid, a.application_name, a.backend_start)
    END, ', ')
FROM pg_catalog.pg_locks AS l LEFT JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
{PREPARED_JOIN}
WHERE {_cont(where_held_sql(t), 6)})"""


def advisory_held_sql(t: Tables) -> str:
    """Whether a role that may deploy holds the advisory lock (an older release's run)."""
    return f"""EXISTS (SELECT 1
FROM pg_catalog.pg_locks AS l LEFT JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
{PREPARED_JOIN}
WHERE {WHERE_LOCK} AND {may_deploy_sql(t)})"""


def _cont(sql: str, spaces: int) -> str:
    """``sql`` to embed at a column: its lines after the first indented by ``spaces``."""
    return sql.replace("\n", "\n" + " " * spaces)


def take_plpgsql(t: Tables, failed: str, hint: str) -> str:
    """A PL/pgSQL block that takes the lock for this transaction, or raises ``failed``
    (with ``%``: who holds it) and ``hint``; an advisory holder that may not deploy gets a
    WARNING. No waiting at all: a statement waiting for a lock holds a snapshot, which a
    concurrent index build of the holder would wait for."""
    table = getattr(t, TABLE)
    ignored = IGNORED_WORDS.format(table=table).replace("'", "''").replace("%", "%%")
    return f"""DECLARE
    held boolean;
BEGIN
    BEGIN  -- the table's lock, then the advisory lock unless a role that may deploy holds it
        LOCK TABLE {table} IN EXCLUSIVE MODE NOWAIT;
        held := NOT pg_catalog.pg_try_advisory_xact_lock({LOCK_KEY})
            AND {_cont(advisory_held_sql(t), 12)};
    EXCEPTION WHEN lock_not_available THEN
        held := true;
    END;
    IF held THEN
        RAISE EXCEPTION '{failed}',
            {_cont(holders_text_sql(t), 12)}
            USING HINT = '{hint}';
    ELSIF NOT pg_catalog.pg_try_advisory_xact_lock({LOCK_KEY}) THEN
        RAISE WARNING '% {ignored}',
            (SELECT pg_catalog.string_agg(i.who, ', ') FROM (
                {_cont(ignored_sql(t), 16)}) AS i(who));
    END IF;
END;"""


def take_in_transaction_sql(purpose: str, t: Tables) -> str:
    """For the offline script: take the lock for this transaction, or stop, naming who
    holds it."""
    body = take_plpgsql(
        t,
        f"the enrollments lock is held by %; nothing more of {purpose} was changed",
        "run this script again when that session has finished",
    )
    return f"DO $lock$\n{body.removesuffix(';')}\n$lock$"


class LockSession:
    """The lock, held by a connection of its own in an open transaction (see above)."""

    def __init__(self, engine: Engine, purpose: str, t: Tables) -> None:
        self.engine = engine
        self.purpose = purpose
        self.tables = t
        self.connection: Connection | None = None
        self.pid: int | None = None
        self.warned = False

    def _create_table(self) -> None:
        """The lock table, created when missing (two first runs at once: one creates it)."""
        assert self.connection is not None
        for attempt in (1, 2):
            self.connection.exec_driver_sql("BEGIN")
            try:
                self.connection.exec_driver_sql(f"SET LOCAL search_path = {PINNED_SEARCH_PATH}")
                self.connection.exec_driver_sql(create_sql(self.tables), execution_options=LITERAL)
                self.connection.exec_driver_sql("COMMIT")
                return
            except DBAPIError as exc:
                self._rollback()
                if attempt == 2 or getattr(exc.orig, "pgcode", None) != "23505":
                    raise

    def _try(self) -> bool:
        """Take the lock in a new transaction and keep it open; False when held."""
        assert self.connection is not None
        conn = self.connection
        t = self.tables
        conn.exec_driver_sql("BEGIN")
        try:
            # An idle transaction is what holds the lock: no timeout may end it. Its
            # statements, like every other of the run, resolve names in pg_catalog only.
            conn.exec_driver_sql(
                f"SET LOCAL search_path = {PINNED_SEARCH_PATH};"
                " SET LOCAL idle_in_transaction_session_timeout = 0"
            )
            try:
                conn.exec_driver_sql(f"LOCK TABLE {getattr(t, TABLE)} IN EXCLUSIVE MODE NOWAIT")
            except DBAPIError as exc:
                if getattr(exc.orig, "pgcode", None) != "55P03":
                    raise
                self._rollback()
                return False
            if not conn.exec_driver_sql(TRY_SQL).scalar_one():
                if conn.exec_driver_sql(f"SELECT {advisory_held_sql(t)}").scalar_one():
                    self._rollback()
                    return False
                if not conn.exec_driver_sql(TRY_SQL).scalar_one() and not self.warned:
                    ignored = (
                        conn.exec_driver_sql(ignored_sql(t), execution_options=LITERAL)
                        .scalars()
                        .all()
                    )
                    for who in ignored:
                        log.warning("%s %s", who, IGNORED_WORDS.format(table=getattr(t, TABLE)))
                    self.warned = True
            row = conn.exec_driver_sql(f"SELECT {SINCE_SQL}, pg_catalog.pg_backend_pid()").one()
            self.pid = int(row[1])
            return True
        except BaseException:
            self._rollback()
            raise

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
        self._create_table()
        last_report = None
        while not self._try():
            now = time.monotonic()
            if last_report is None or now - last_report >= report_every:
                self.connection.exec_driver_sql("BEGIN")
                try:
                    self.connection.exec_driver_sql(f"SET LOCAL search_path = {PINNED_SEARCH_PATH}")
                    holder = describe_holder(self.connection, self.tables)
                finally:
                    self._rollback()
                say(f"{self.purpose}: waiting for the enrollments lock, held by {holder}")
                last_report = now
            self.connection.exec_driver_sql(WAITING_MARK)
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
