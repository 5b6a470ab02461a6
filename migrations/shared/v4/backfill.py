"""The backfill of the revisions on helpers v4: batched, race-free, resumable.

One statement per batch takes the next slice of ``group_members`` by primary key
(``id > lo``, at most ``size`` rows) and, in one transaction:

1. finds the slice's active memberships of eligible pairs that lack an active enrollment,
   and locks them ``FOR SHARE``, in id order: an application transaction deactivating one
   of them waits for this batch and then sees its enrollment; one that deactivated it
   first makes the row drop out here (PostgreSQL re-reads a row it locks);
2. reactivates those pairs' inactive enrollments (locked ``FOR UPDATE`` in id order) and
   creates the missing ones in (course, student) order, ``ON CONFLICT DO NOTHING`` for a
   pair the application enrolled meanwhile;
3. records each change with the row version it wrote (``xmin``), and moves the run's
   checkpoint to the end of the slice.

Every table is read by index in a batch, in the order written, whatever the statistics:
each lookup is a ``LATERAL ... OFFSET 0`` subquery (which the planner can neither pull up
nor put on the outer side of its join), and locks go by primary key (``id = ANY``). Left
to the planner, a hash join over all of ``users`` won above about a million users, and on
tables without statistics it drove the join from ``users`` and ``courses``.

Online, ``enrollments_phase1.batching`` runs the batches: sized toward a target duration, paced on the
replicas, retried, split on a statement timeout. Offline, a PL/pgSQL loop in the script
does the same (a ``COMMIT`` per batch inside ``DO``). ``-x backfill_one_statement=yes``
(online and offline) runs it as one statement over every membership instead.

The undo is :mod:`.undo`'s.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.engine import Connection

from enrollments_phase1.batching import (
    Progress,
    StepResult,
    run_batches,
    transaction,
)
from enrollments_phase1.db import duration_seconds
from enrollments_phase1.lock import LOCK_KEY
from enrollments_phase1.migration_env import MigrationSettings
from enrollments_phase1.migrations.shared.v4.definition import (
    ACTIVE_MEMBERSHIP,
    ELIGIBLE,
    Tables,
    indent,
)
from enrollments_phase1.migrations.shared.v4.sync import keeping_sql

log = logging.getLogger("migrations")

BEFORE_ANY_ID = -2147483649  # below every int4 id: where a walk starts


@dataclass(frozen=True)
class ScriptBatches:
    """How the script's loops size and retry their batches, as this helper version writes
    them. The online run sizes with ``enrollments_phase1.batching``, which may change;
    what a released revision writes may not (these numbers are in the pinned SQL)."""

    fixed_size: int | None  # -x backfill_batch_size
    first_size: int = 1_000
    min_size: int = 100
    max_size: int = 200_000
    target_seconds: float = 0.1
    backoff_seconds: float = 0.1

    @classmethod
    def of(cls, settings: MigrationSettings) -> ScriptBatches:
        size = settings.backfill_batch_size
        return cls(fixed_size=size, first_size=size) if size else cls(fixed_size=None)


# The slice's memberships, each looked up by primary key. LATERAL ... OFFSET 0 keeps every
# lookup a parameterized index scan in the order written, whatever the statistics say
# (the planner can neither pull such a subquery up nor swap it to the outer side).
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


def _writes(t: Tables, run: str, source: str, checkpoint: str, which: str | None) -> str:
    """From ``candidates`` on: lock, reactivate, create, record, move the checkpoint.

    ``which`` selects the candidates' memberships to lock by primary key; ``None`` when
    the candidates were locked as they were read (one statement: no second scan)."""
    if which is None:
        pairs = """pairs AS (
    SELECT DISTINCT k.student_id, k.course_id, k.enrollment_id FROM candidates AS k
),"""
    else:
        pairs = f"""locked AS MATERIALIZED (
    -- the candidates' memberships, locked until this transaction ends, in id order: a
    -- deactivation by the application waits for this batch, or came first and makes the
    -- row drop out here (PostgreSQL re-reads a row it locks)
    SELECT gm.id, gm.user_id, gm.group_id
    FROM {t.group_members} AS gm
    WHERE {which} AND {ACTIVE_MEMBERSHIP}
    ORDER BY gm.id
    FOR SHARE
),
pairs AS (
    -- still as read: active (the lock re-read it), same user, same group
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
    ORDER BY e.id
    FOR UPDATE
),
reactivated AS (
    UPDATE {t.course_enrollments} AS e
    SET active = true
    WHERE e.id = ANY (ARRAY(SELECT r.id FROM to_reactivate AS r)) AND NOT e.active
    RETURNING e.id, e.course_id, e.student_id, e.xmin::text::bigint AS row_xmin
),
created AS (
    INSERT INTO {t.course_enrollments} (course_id, student_id, active)
    SELECT p.course_id, p.student_id, true
    FROM pairs AS p
    WHERE p.enrollment_id IS NULL
    ORDER BY p.course_id, p.student_id
    ON CONFLICT (course_id, student_id) DO NOTHING
    RETURNING id, course_id, student_id, xmin::text::bigint AS row_xmin
),
recorded AS (
    INSERT INTO {t.enrollment_backfill_changes} (revision, enrollment_id, course_id, student_id, action, row_xmin)
    SELECT {source}, id, course_id, student_id, 'reactivated', row_xmin FROM reactivated
    UNION ALL
    SELECT {source}, id, course_id, student_id, 'created', row_xmin FROM created
    ON CONFLICT DO NOTHING
),
progress AS (
    UPDATE {t.enrollment_backfill_runs}
    SET checkpoint = coalesce({checkpoint}, checkpoint),
        batches = batches + 1,
        created = created + (SELECT count(*) FROM created),
        reactivated = reactivated + (SELECT count(*) FROM reactivated)
    WHERE id = {run}
)"""
    )


BY_ID = "gm.id = ANY (ARRAY(SELECT k.id FROM candidates AS k))"  # a batch: by primary key

CANDIDATES = """candidates AS MATERIALIZED (
    -- active memberships of eligible pairs that lack an active enrollment
    SELECT gm.id, gm.user_id AS student_id, gm.group_id, g.course_id, ce.id AS enrollment_id
    FROM {source}
{lookups}
    WHERE {eligible} AND ce.active IS NOT TRUE{locking}
)"""


def batch_sql(t: Tables, lo: str, size: str, run: str, source: str) -> str:
    """One batch: the slice of at most ``size`` memberships after id ``lo``.

    ``lo``, ``size`` and ``run`` are SQL expressions: literals online, PL/pgSQL variables
    offline; ``source`` a quoted literal. One row back: the slice's last id and size, and
    what the batch created and reactivated. Every table is read by index: the slice by
    primary key, each lookup by primary or unique key.
    """
    candidates = CANDIDATES.format(
        source="slice AS gm",  # the slice carries the memberships' columns
        lookups=indent(lookups(t)),
        eligible=ELIGIBLE,
        locking="",
    )
    return f"""WITH slice AS MATERIALIZED (
    SELECT id, user_id, group_id, active FROM {t.group_members}
    WHERE id > {lo} ORDER BY id LIMIT {size}
),
{candidates},
{_writes(t, run, source, "(SELECT max(id) FROM slice)", BY_ID)}
SELECT (SELECT max(id) FROM slice) AS last_id,
    (SELECT count(*) FROM slice) AS memberships,
    (SELECT count(*) FROM created) AS created,
    (SELECT count(*) FROM reactivated) AS reactivated"""


def one_statement_sql(t: Tables, run: str, source: str) -> str:
    """The whole backfill in one statement (``-x backfill_one_statement=yes``): plain
    joins, for the planner to hash over the whole tables."""
    candidates = CANDIDATES.format(
        source=f"{t.group_members} AS gm",
        lookups=indent(
            f"""JOIN {t.groups} AS g ON g.id = gm.group_id
JOIN {t.courses} AS c ON c.id = g.course_id
JOIN {t.users} AS u ON u.id = gm.user_id
LEFT JOIN {t.course_enrollments} AS ce
    ON ce.course_id = g.course_id AND ce.student_id = gm.user_id"""
        ),
        eligible=ELIGIBLE,
        # locked as read, in id order (PostgreSQL re-reads a row it locks): one scan
        locking="\n    ORDER BY gm.id\n    FOR SHARE OF gm",
    )
    return f"""WITH {candidates},
{_writes(t, run, source, f"(SELECT max(id) FROM {t.group_members})", None)}
SELECT (SELECT max(id) FROM {t.group_members}) AS last_id,
    NULL::bigint AS memberships,
    (SELECT count(*) FROM created) AS created,
    (SELECT count(*) FROM reactivated) AS reactivated"""


# --- runs: start or resume, finish ----------------------------------------------------
def start_run_sql(t: Tables, source: str) -> str:
    """One row: the run id, the membership id to start after, whether it resumes.

    The newest unfinished run is resumed from its checkpoint when that is sound: it
    started with the sync trigger installed (every change below its checkpoint since then
    was kept by the trigger), or the trigger is still missing (a sweep without it, resumed
    by another). Otherwise the walk starts over and the old run is closed.
    """
    return f"""WITH trigger_now AS (
{indent(keeping_sql(t).replace(" AS keeping", " AS installed"))}
),
unfinished AS (
    SELECT r.id, r.checkpoint, r.sync_trigger
    FROM {t.enrollment_backfill_runs} AS r
    WHERE r.finished_at IS NULL
    ORDER BY r.id DESC
    LIMIT 1
),
resumable AS (
    SELECT u.id, u.checkpoint FROM unfinished AS u, trigger_now AS t
    WHERE u.sync_trigger OR NOT t.installed
),
closed AS (
    UPDATE {t.enrollment_backfill_runs} SET finished_at = now()
    WHERE finished_at IS NULL AND id NOT IN (SELECT id FROM resumable)
),
started AS (
    INSERT INTO {t.enrollment_backfill_runs} (source, sync_trigger)
    SELECT {source}, t.installed FROM trigger_now AS t
    WHERE NOT EXISTS (SELECT 1 FROM resumable)
    RETURNING id
)
SELECT id, coalesce(checkpoint, {BEFORE_ANY_ID}) AS after, true AS resumed FROM resumable
UNION ALL
SELECT id, {BEFORE_ANY_ID}, false FROM started"""


def finish_run_sql(t: Tables, run: str) -> str:
    return f"UPDATE {t.enrollment_backfill_runs} SET finished_at = now() WHERE id = {run}"


# --- offline: the loops in the script --------------------------------------------------
def transaction_start_sql(settings: MigrationSettings, what: str, spaces: str) -> str:
    """After each ``COMMIT`` in a loop: the run's settings and the enrollments lock again
    (both end with the transaction that just committed)."""
    return indent(
        settings.plpgsql_sql()
        + f"""
IF NOT pg_catalog.pg_try_advisory_xact_lock({LOCK_KEY}) THEN
    RAISE EXCEPTION '{what}: another session took the enrollments lock between two batches; nothing of this batch was written'
        USING HINT = 'run this script again when that session has finished: it goes on from its checkpoint';
END IF;""",
        spaces,
    )


def retry_sql(settings: MigrationSettings, what: str) -> str:
    patience = duration_seconds(settings.lock_patience)
    return f"""            EXCEPTION WHEN deadlock_detected OR serialization_failure OR lock_not_available THEN
                attempt := attempt + 1;
                IF clock_timestamp() - started > interval '{patience:g} s' THEN
                    RAISE;
                END IF;
                RAISE WARNING '{what}: a batch failed (%), rolled back; retrying (attempt %)', SQLERRM, attempt;
                PERFORM pg_sleep(least(5.0, random() * {ScriptBatches.backoff_seconds} * 2 ^ least(attempt, 6)));
            END;"""


def _pace(settings: MigrationSettings, what: str) -> str:
    """Before each batch in the script: wait while a standby is further behind than the
    bound, as the online run does. A standby counts as behind by its ``replay_lag``, or by
    the time its replay position has not moved while the primary is ahead of it (a paused
    standby keeps reporting the lag it had). A lag this role cannot read (no pg_monitor)
    stops the script where the bound was asked for with -x, and is said once otherwise."""
    bound = duration_seconds(settings.max_replica_lag)
    if not bound:
        return ""
    if settings.max_replica_lag_explicit:
        hidden = f"""RAISE EXCEPTION '{what}: cannot read the replication lag of % standby(s): role % may not see the lag columns of pg_stat_replication, so it cannot keep the asked bound of {bound:g} s', standbys.hidden, current_user
                    USING HINT = 'GRANT pg_monitor TO ' || current_user || ', or write the script with -x max_replica_lag=0';"""
    else:
        hidden = f"""IF NOT told THEN
                    RAISE WARNING '{what}: cannot read the replication lag of % standby(s): role % may not see the lag columns of pg_stat_replication; the backfill does not pace on them; GRANT pg_monitor TO %', standbys.hidden, current_user, current_user;
                    told := true;
                END IF;"""
    return f"""
        -- Pace on the standbys: wait while one is more than {bound:g} s behind.
        LOOP
            SELECT count(*) FILTER (WHERE r.replay_lsn IS NULL) AS hidden,
                   min(r.replay_lsn) AS replay,
                   max(extract(epoch FROM r.replay_lag)) AS seconds,
                   max(pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), r.replay_lsn)) AS bytes
            INTO standbys FROM pg_catalog.pg_stat_replication AS r;
            IF standbys.hidden > 0 THEN
                {hidden}
            END IF;
            IF standbys.replay IS DISTINCT FROM replayed THEN
                replayed := standbys.replay;
                replay_moved := clock_timestamp();
            END IF;
            EXIT WHEN coalesce(standbys.bytes, 0) <= 0
                OR greatest(coalesce(standbys.seconds, 0),
                            extract(epoch FROM clock_timestamp() - replay_moved)) <= {bound};
            IF waited_at IS NULL OR clock_timestamp() - waited_at > interval '10 s' THEN
                RAISE NOTICE '{what}: waiting: a standby is % MB / % s behind, above the bound of {bound:g} s (-x max_replica_lag)',
                    round(standbys.bytes / 1048576.0, 1), round(greatest(coalesce(standbys.seconds, 0), extract(epoch FROM clock_timestamp() - replay_moved))::numeric, 1);
                waited_at := clock_timestamp();
            END IF;
            PERFORM pg_catalog.pg_sleep(1);
        END LOOP;
        waited_at := NULL;"""


def _adapt(batch: ScriptBatches, rows: str) -> str:
    if batch.fixed_size:
        return ""
    return f"""
        -- toward {batch.target_seconds:g} s a batch: x0.5 to x1.5 a step, within [{batch.min_size}, {batch.max_size}]
        IF {rows} = size THEN
            size := least({batch.max_size}, greatest({batch.min_size}, (size * least(1.5, greatest(0.5,
                {batch.target_seconds} / greatest(extract(epoch FROM clock_timestamp() - started), 0.000001))))::integer));
        END IF;"""


def offline_backfill_sql(t: Tables, source: str, settings: MigrationSettings) -> str:
    """The backfill as a DO block for psql, outside a transaction block: a ``COMMIT`` per
    batch, sized toward the online target, retried with backoff; a cut script goes on from
    the checkpoint when run again. Each transaction sets the run's settings and takes the
    enrollments lock first."""
    what = f"backfill {source}"
    one_statement = settings.backfill_one_statement
    batch = ScriptBatches.of(settings)
    if one_statement:
        statement = one_statement_sql(t, "run.id", f"'{source}'")
    else:
        statement = batch_sql(t, "lo", "size", "run.id", f"'{source}'")
    return f"""-- The backfill, {"in one statement" if one_statement else "one batch per transaction"}.
DO $backfill$
DECLARE
    run record;
    result record;
    lo bigint;
    size integer := {batch.first_size};
    attempt integer;
    started timestamptz;
    done_batches integer := 0;
    done_created bigint := 0;
    done_reactivated bigint := 0;
    standbys record;
    replayed pg_lsn;
    replay_moved timestamptz := clock_timestamp();
    waited_at timestamptz;
    told boolean := false;
BEGIN
{transaction_start_sql(settings, what, "    ")}
{indent(start_run_sql(t, f"'{source}'"))}
    INTO run;
    lo := run.after;
    IF run.resumed THEN
        RAISE NOTICE '{what}: resuming run % after membership id %', run.id, lo;
    END IF;
    COMMIT;
    LOOP
        attempt := 0;
{transaction_start_sql(settings, what, "        ")}{"" if one_statement else _pace(settings, what)}
        started := clock_timestamp();
        LOOP
            BEGIN
{indent(statement, "                ")}
                INTO result;
                EXIT;
{retry_sql(settings, what)}
        END LOOP;
        EXIT WHEN result.memberships = 0;
        done_batches := done_batches + 1;
        done_created := done_created + result.created;
        done_reactivated := done_reactivated + result.reactivated;
        lo := result.last_id;
        COMMIT;{"" if one_statement else _adapt(batch, "result.memberships")}
        EXIT WHEN {"true" if one_statement else "false"};
    END LOOP;
{transaction_start_sql(settings, what, "    ")}
    {finish_run_sql(t, "run.id")};
    RAISE NOTICE '{what}: % enrollments created, % reactivated (% batches)', done_created, done_reactivated, done_batches;
    COMMIT;
END
$backfill$"""


# --- online ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    created: int
    reactivated: int
    batches: int
    memberships: int


def _row(connection: Connection, sql: str):
    return connection.exec_driver_sql(sql, execution_options={"no_parameters": True}).one()


def backfill_online(
    connection: Connection, t: Tables, source: str, settings: MigrationSettings
) -> Outcome:
    """The backfill on ``connection``: outside a transaction (Alembic's autocommit block),
    or in the caller's (then each batch is a savepoint and nothing commits)."""
    with transaction(connection):
        run = _row(connection, start_run_sql(t, f"'{source}'"))
    if run.resumed:
        log.info("backfill %s: resuming run %d after membership id %d", source, run.id, run.after)
    if settings.backfill_one_statement:
        with transaction(connection):
            row = _row(connection, one_statement_sql(t, str(run.id), f"'{source}'"))
            connection.exec_driver_sql(finish_run_sql(t, str(run.id)))
        return Outcome(int(row.created), int(row.reactivated), 1, 0)

    def step(conn: Connection, after: int, size: int) -> StepResult:
        row = _row(conn, batch_sql(t, str(after), str(size), str(run.id), f"'{source}'"))
        return StepResult(
            last_key=row.last_id,
            rows=int(row.memberships),
            counts={"created": int(row.created), "reactivated": int(row.reactivated)},
        )

    with transaction(connection):
        total = connection.exec_driver_sql(
            f"SELECT count(*) FROM {t.group_members} WHERE id > {int(run.after)}"
        ).scalar_one()
    progress = Progress(f"backfill {source}", total, unit="memberships")
    totals = run_batches(connection, step, int(run.after), settings.batch, progress)
    with transaction(connection):
        connection.exec_driver_sql(finish_run_sql(t, str(run.id)))
    created, reactivated = totals.counts.get("created", 0), totals.counts.get("reactivated", 0)
    progress.close(f"{created:,} created, {reactivated:,} reactivated")
    return Outcome(created, reactivated, totals.batches, totals.rows)
