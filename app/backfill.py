"""``enrollments backfill --commit``: batched, race-free, recorded, resumable.

From revision 0003 on it runs the backfill of the newest helper version
(``migrations/shared/v4/backfill.py``), the same statements as revision 0004: the
candidates once per pass, batches of a few thousand pairs in (student, course) order
(sized toward 100 ms, paced on the replicas' lag, retried, split on a statement timeout),
each recorded in one row of ``enrollment_backfill_batches`` so that ``alembic downgrade
0003`` undoes it exactly, with a checkpoint so that a cut run resumes. On a database whose
bookkeeping an older release created, it first adds what this release keeps (as the
revisions do).

Below 0003 (``--unrecorded``) no record exists: it walks ``group_members`` by primary key,
one slice per batch, with this module's statements, and says in one warning line that
nothing of it can be undone. Each batch finds the slice's active memberships of eligible
pairs lacking an active enrollment (every table read by index), locks them ``FOR SHARE``
in id order, reactivates the inactive enrollments and creates the missing ones: a
deactivation by the application waits for the batch and then sees its enrollment, or came
first and drops out.

It holds the enrollments lock (``enrollments_phase1.lock``), like ``alembic upgrade``:
never two at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Connection

from enrollments_phase1 import lock
from enrollments_phase1.batching import (
    BatchSettings,
    Progress,
    StepResult,
    run_batches,
    transaction,
)
from enrollments_phase1.coverage import ACTIVE_MEMBERSHIP, ELIGIBLE, CoverageReport, indent
from enrollments_phase1.db import (
    POOLER_NOTE,
    behind_pooler,
    check_pool_room,
    set_transaction_prelude,
)
from enrollments_phase1.errors import SchemaError
from enrollments_phase1.names import Tables

log = logging.getLogger(__name__)

CHANGES = "enrollment_backfill_changes"
RUNS = "enrollment_backfill_runs"
SOURCE = "enrollments backfill"  # the runs' source
BEFORE_ANY_ID = -2147483649  # below every int4 id
NOT_UNDOABLE = (
    "no enrollment_backfill_changes table (the database is below revision 0003): these "
    "changes cannot be undone by a downgrade, and a cut run starts over; alembic upgrade "
    "0003 first makes them undoable and resumable"
)
ADDING_BOOKKEEPING = (
    "this database's backfill bookkeeping is an older release's: adding this release's "
    "record, claims and candidates tables (as revision 0004 of this release does)"
)
REFUSED_BELOW_0003 = (
    "the database is below revision 0003 (no enrollment_backfill_changes): a backfill here "
    "would not be recorded, so no downgrade could undo it and a cut run would start over; "
    "run alembic upgrade 0003 first, or pass --unrecorded to write it anyway; nothing was "
    "changed"
)


@dataclass(frozen=True)
class Bookkeeping:
    """What of the backfill's own tables this database has."""

    record: bool  # enrollment_backfill_changes: revision 0003 or later
    batches: bool  # 1.3's record (enrollment_backfill_batches, the runs' pass, and the rest)

    @classmethod
    def of(cls, connection: Connection, t: Tables) -> Bookkeeping:
        row = connection.execute(
            text(
                f"""SELECT {t.regclass(CHANGES)} IS NOT NULL AS record,
    EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = {t.regclass(RUNS)}
            AND attname = 'pass' AND NOT attisdropped)
        AND {t.regclass("enrollment_backfill_batches")} IS NOT NULL AS batches"""
            )
        ).one()
        return cls(row.record, row.batches)


# --- the statements -------------------------------------------------------------------
# Each lookup of a batch is a LATERAL ... OFFSET 0 subquery: a parameterized index scan in
# the order written, whatever the statistics (the planner can neither pull it up nor put
# it on the outer side).
def lookups(t: Tables) -> str:
    return f"""CROSS JOIN LATERAL (
    SELECT x.course_id FROM {t.groups} AS x WHERE x.id = gm.group_id OFFSET 0
) AS g
CROSS JOIN LATERAL (
    SELECT x.school_id FROM {t.courses} AS x WHERE x.id = g.course_id OFFSET 0
) AS c
CROSS JOIN LATERAL (
    SELECT x.role, x.school_id FROM {t.users} AS x WHERE x.id = gm.user_id OFFSET 0
) AS u
LEFT JOIN LATERAL (
    SELECT x.id, x.active FROM {t.course_enrollments} AS x
    WHERE x.course_id = g.course_id AND x.student_id = gm.user_id OFFSET 0
) AS ce ON true"""


def joins(t: Tables) -> str:
    return f"""JOIN {t.groups} AS g ON g.id = gm.group_id
JOIN {t.courses} AS c ON c.id = g.course_id
JOIN {t.users} AS u ON u.id = gm.user_id
LEFT JOIN {t.course_enrollments} AS ce
    ON ce.course_id = g.course_id AND ce.student_id = gm.user_id"""


def _candidates(source: str, lookups: str, lock: bool = False) -> str:
    """Active memberships of eligible pairs lacking an active enrollment; with ``lock``,
    locked in this same pass (one statement over the whole table: no second scan)."""
    locking = "\n    ORDER BY gm.id\n    FOR SHARE OF gm" if lock else ""
    return f"""candidates AS MATERIALIZED (
    -- active memberships of eligible pairs that lack an active enrollment
    SELECT gm.id, gm.user_id AS student_id, gm.group_id, g.course_id, ce.id AS enrollment_id
    FROM {source}
{indent(lookups)}
    WHERE {ELIGIBLE} AND ce.active IS NOT TRUE{locking}
)"""


def _writes(which: str | None, t: Tables) -> str:
    """From ``candidates`` on: lock, reactivate, create (unrecorded: below 0003)."""
    if which is None:  # the candidates were locked as they were read
        pairs = """pairs AS (
    SELECT DISTINCT k.student_id, k.course_id, k.enrollment_id FROM candidates AS k
),"""
    else:
        pairs = f"""locked AS MATERIALIZED (
    -- locked until this transaction ends, in id order: a deactivation by the application
    -- waits for it, or came first and makes the row drop out here
    SELECT gm.id, gm.user_id, gm.group_id
    FROM {t.group_members} AS gm
    WHERE {which} AND {ACTIVE_MEMBERSHIP}
    ORDER BY gm.id
    FOR SHARE
),
pairs AS (
    SELECT DISTINCT k.student_id, k.course_id, k.enrollment_id
    FROM locked AS l
    JOIN candidates AS k ON k.id = l.id AND k.student_id = l.user_id AND k.group_id = l.group_id
),"""
    return (
        pairs
        + f"""
to_reactivate AS MATERIALIZED (
    SELECT e.id
    FROM {t.course_enrollments} AS e
    WHERE e.id = ANY (ARRAY(
            SELECT p.enrollment_id FROM pairs AS p WHERE p.enrollment_id IS NOT NULL
        ))
      AND NOT e.active
    ORDER BY e.course_id, e.student_id
    FOR UPDATE
),
reactivated AS (
    UPDATE {t.course_enrollments} AS e
    SET active = true
    WHERE e.id = ANY (ARRAY(SELECT r.id FROM to_reactivate AS r)) AND NOT e.active
    RETURNING e.id
),
created AS (
    INSERT INTO {t.course_enrollments} (course_id, student_id, active)
    SELECT p.course_id, p.student_id, true
    FROM pairs AS p
    WHERE p.enrollment_id IS NULL
    ORDER BY p.course_id, p.student_id
    ON CONFLICT (course_id, student_id) DO NOTHING
    RETURNING id
)"""
    )


BY_ID = "gm.id = ANY (ARRAY(SELECT k.id FROM candidates AS k))"  # a batch: by primary key

COUNTS = """(SELECT count(*) FROM created) AS created,
    (SELECT count(*) FROM reactivated) AS reactivated"""


def batch_sql(after: int, size: int, t: Tables) -> str:
    """One unrecorded batch: at most ``size`` memberships with an id above ``after``,
    every table read by index."""
    return f"""WITH slice AS MATERIALIZED (
    SELECT id, user_id, group_id, active FROM {t.group_members}
    WHERE id > {int(after)} ORDER BY id LIMIT {int(size)}
),
{_candidates("slice AS gm", lookups(t))},
{_writes(BY_ID, t)}
SELECT (SELECT max(id) FROM slice) AS last_id, (SELECT count(*) FROM slice) AS memberships,
    {COUNTS}"""


def one_statement_sql(t: Tables) -> str:
    """The whole unrecorded backfill in one statement (``--one-statement``): plain joins,
    for the planner to hash over the whole tables."""
    return f"""WITH {_candidates(f"{t.group_members} AS gm", joins(t), lock=True)},
{_writes(None, t)}
SELECT {COUNTS}"""


@dataclass
class BackfillResult:
    """What a backfill did (or, in a dry run, would do) and the coverage after it."""

    committed: bool
    created: int
    reactivated: int
    batches: int
    seconds: float
    after: CoverageReport
    longest_batch_seconds: float = 0.0
    sync_trigger: bool | None = None  # after a committed run: whether one keeps coverage

    def as_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "committed": self.committed,
            "created": self.created,
            "reactivated": self.reactivated,
            "batches": self.batches,
            "seconds": round(self.seconds, 3),
            "longest_batch_seconds": round(self.longest_batch_seconds, 3),
        }
        data.update(self.after.counts_json())
        return data


@dataclass(frozen=True)
class Written:
    created: int
    reactivated: int
    batches: int
    longest: float = 0.0


def backfill(
    connection: Connection,
    settings: BatchSettings,
    t: Tables,
    prelude: list[str],
    one_statement: bool = False,
    progress_stream=None,
    unrecorded: bool = False,
) -> Written:
    """Write the backfill; ``connection`` is outside any transaction, with ``prelude``
    (the command's settings) run first in each of its transactions."""
    with transaction(connection):
        pooled = behind_pooler(connection)
    if pooled:
        log.info("%s", POOLER_NOTE)
    holder = lock.LockSession(connection.engine, "enrollments backfill", t)
    try:
        pid = holder.acquire(patience=settings.patience_seconds)
        if pooled:
            check_pool_room(
                connection,
                2,
                "enrollments backfill",
                "the enrollments lock's session and the backfill's",
            )
        set_transaction_prelude(connection, [*prelude, lock.verify_sql(pid, "this backfill", t)])
        with transaction(connection):
            books = Bookkeeping.of(connection, t)
        if not books.record:
            if not unrecorded:
                raise SchemaError(REFUSED_BELOW_0003)
            log.warning("%s", NOT_UNDOABLE)
            return _unrecorded(connection, settings, t, one_statement, progress_stream)
        # The newest helper version's statements (imported here: the audit, which imports
        # this module, does not pay for Alembic's import).
        from enrollments_phase1.migrations.shared.v4 import bookkeeping
        from enrollments_phase1.migrations.shared.v4.backfill import run_backfill

        if not books.batches:
            log.info("%s", ADDING_BOOKKEEPING)
            with transaction(connection):
                for statement in bookkeeping.ensure_sql(t):
                    connection.exec_driver_sql(statement)
        outcome = run_backfill(
            connection,
            t,
            SOURCE,
            settings,
            "backfill",
            one_statement=one_statement,
            progress_stream=progress_stream,
        )
        return Written(outcome.created, outcome.reactivated, outcome.batches, outcome.longest)
    finally:
        set_transaction_prelude(connection, prelude)
        holder.release()


def _unrecorded(
    connection: Connection,
    settings: BatchSettings,
    t: Tables,
    one_statement: bool,
    progress_stream,
) -> Written:
    """Below 0003: no record, no checkpoint; a cut run starts over."""
    if one_statement:
        with transaction(connection):
            row = connection.exec_driver_sql(
                one_statement_sql(t), execution_options={"no_parameters": True}
            ).one()
        return Written(int(row.created), int(row.reactivated), 1)

    def step(conn: Connection, lo: int, size: int) -> StepResult:
        row = conn.exec_driver_sql(
            batch_sql(lo, size, t), execution_options={"no_parameters": True}
        ).one()
        return StepResult(
            last_key=row.last_id,
            rows=int(row.memberships),
            counts={"created": int(row.created), "reactivated": int(row.reactivated)},
        )

    with transaction(connection):
        total = connection.execute(text(f"SELECT count(*) FROM {t.group_members}")).scalar_one()
    progress = Progress("backfill", total, unit="memberships", stream=progress_stream)
    totals = run_batches(connection, step, BEFORE_ANY_ID, settings, progress)
    created, reactivated = totals.counts.get("created", 0), totals.counts.get("reactivated", 0)
    progress.close(f"{created:,} created, {reactivated:,} reactivated")
    return Written(created, reactivated, totals.batches, longest=totals.longest)
