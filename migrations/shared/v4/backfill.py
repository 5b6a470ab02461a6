"""The backfill of the revisions on helpers v4 (1.3): candidates once, batches in storage
order, a compact record. The command runs the same statements.

A run goes in **passes**. Each pass:

1. **Candidates, once.** One statement computes, by hash joins over the whole tables, the
   eligible pairs that lack an active enrollment, each with the ids of the active
   memberships behind it, into ``enrollment_backfill_candidates`` (UNLOGGED), numbered in
   (student, course) order. It holds no row lock and writes only that table.
2. **Batches in that order**, one transaction each, a few thousand pairs (sized toward a
   target duration): the pairs' memberships are locked ``FOR SHARE`` by primary key in id
   order and the pair re-checked on the current rows (active, still the student's and in a
   group of the course; the user a student of the course's school; no active enrollment).
   An application transaction deactivating one waits for the batch and then sees its
   enrollment; one that came first makes the pair drop out: no resurrection. Then the
   inactive enrollments are reactivated (locked ``FOR UPDATE`` in (course, student)
   order, as the sync trigger locks them) and the missing ones created, ``ON CONFLICT DO
   NOTHING``. The enrollments, their indexes and ``users`` are student-major on real data:
   each page is written about once.
3. **A compact record**: one row of ``enrollment_backfill_batches`` per batch (chunks of
   at most :data:`RECORD_CHUNK` ids), holding the run, pass, the batch's last pair, its
   transaction, the ``xmin`` its rows carry and the arrays of ids created and
   reactivated; a batch clears the claims of the enrollments it reactivates (a claim from
   an earlier life). The run's checkpoint (the last candidate number) moves with it.

**Passes until none.** A pass computed while the sync trigger keeps coverage is the last:
every membership committed after its snapshot was enrolled in its own transaction. Without
the trigger (the command at revision 0003) the run computes the candidates again, and
again, until a pass finds none or :data:`MAX_PASSES` were run: each finds only what the
application wrote meanwhile. A database already covered costs one candidates statement.

**Resume.** A cut run goes on from its checkpoint while its candidates are there; when
they are gone (a crash empties an UNLOGGED table) or the pass was done, it computes a new
pass: what was done is no longer a candidate.

Every table is read by index in a batch, in the order written, whatever the statistics
(each lookup a ``LATERAL ... OFFSET 0`` subquery; locks by primary key).

Online, ``enrollments_phase1.batching`` runs the batches: sized toward a target duration,
paced on the replicas, retried, split on a statement timeout. Offline, a PL/pgSQL loop in
the script does the same (a ``COMMIT`` per batch inside ``DO``).
``-x backfill_one_statement=yes`` (online and offline) runs it as one statement over every
membership instead, recorded in the same chunks.

The undo is :mod:`.undo`'s.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from sqlalchemy.engine import Connection

from enrollments_phase1.batching import (
    BatchSettings,
    Progress,
    StepResult,
    run_batches,
    transaction,
)
from enrollments_phase1.db import duration_seconds
from enrollments_phase1.lock import take_plpgsql
from enrollments_phase1.migration_env import MigrationSettings
from enrollments_phase1.migrations.shared.v4.definition import (
    ACTIVE_MEMBERSHIP,
    ELIGIBLE,
    IS_STUDENT,
    SAME_SCHOOL,
    Tables,
    counted,
    indent,
    quote_literal,
)
from enrollments_phase1.migrations.shared.v4.sync import keeping_sql

log = logging.getLogger("migrations")


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


RECORD_CHUNK = 10_000  # enrollment ids per record row at most
REPORT_SECONDS = 5.0  # the script's progress NOTICE, as the online run's log line
MAX_PASSES = 5  # candidates computed again at most this many times without the trigger


def _lookup(alias: str, columns: str, table: str, where: str) -> str:
    """A read of ``table`` (as x) by key for each row before it (``OFFSET 0``: never
    flattened, never turned around, whatever the statistics)."""
    return (
        f"CROSS JOIN LATERAL (SELECT {columns} FROM {table} AS x WHERE {where} OFFSET 0) AS {alias}"
    )


# --- a pass's candidates ------------------------------------------------------------------
def candidates_sql(t: Tables) -> list[str]:
    """The pass's candidates, in one transaction: the table emptied, then filled by one
    statement of hash joins with the eligible pairs lacking an active enrollment and their
    active memberships, numbered in (student, course) order. :func:`next_pass_sql`
    follows in the same transaction."""
    return [
        # Its hashes and sorts in memory, as the gate's count holds them (64 MB each, times
        # hash_mem_multiplier), and no JIT: for this transaction alone.
        "SET LOCAL work_mem = '64MB'",
        "SET LOCAL jit = off",
        f"TRUNCATE {t.enrollment_backfill_candidates}",
        f"""INSERT INTO {t.enrollment_backfill_candidates} (n, student_id, course_id, memberships)
SELECT pg_catalog.row_number() OVER (ORDER BY p.student_id, p.course_id),
    p.student_id, p.course_id, p.memberships
FROM (
    SELECT gm.user_id AS student_id, g.course_id,
        pg_catalog.array_agg(gm.id ORDER BY gm.id) AS memberships
    FROM {t.group_members} AS gm
    JOIN {t.groups} AS g ON g.id = gm.group_id
    JOIN {t.courses} AS c ON c.id = g.course_id
    JOIN {t.users} AS u ON u.id = gm.user_id
    WHERE {ELIGIBLE}
      AND NOT EXISTS (
        SELECT 1 FROM {t.course_enrollments} AS ce
        WHERE ce.course_id = g.course_id AND ce.student_id = gm.user_id AND ce.active
      )
    GROUP BY gm.user_id, g.course_id
) AS p""",
    ]


def next_pass_sql(t: Tables, run: str) -> str:
    """After the candidates: the run's next pass starts at candidate 0. One row back: the
    pass, its candidates, and whether the sync trigger keeps coverage (then this pass is
    the last: every membership committed after its snapshot was enrolled in its own
    transaction)."""
    return f"""WITH trigger_now AS (
{indent(keeping_sql(t).replace(" AS keeping", " AS installed"))}
)
UPDATE {t.enrollment_backfill_runs} AS r
SET pass = coalesce(r.pass, 0) + 1, checkpoint = 0,
    candidates = (SELECT coalesce(pg_catalog.max(k.n), 0) FROM {t.enrollment_backfill_candidates} AS k),
    sync_trigger = tn.installed
FROM trigger_now AS tn
WHERE r.id = {run}
RETURNING r.pass AS pass_number, r.candidates, r.sync_trigger"""


# --- the writes of a batch ----------------------------------------------------------------
def _writes(t: Tables, run: str, checkpoint: str, moved: str, on_conflict: str = "") -> str:
    """From ``verified`` (pairs still eligible, their memberships locked) on: reactivate,
    create, record, clear the claims of what was reactivated, and, where ``moved`` (SQL)
    holds, count the batch and move the checkpoint."""
    return f"""current AS MATERIALIZED (
    SELECT v.student_id, v.course_id, ce.id AS enrollment_id, ce.active
    FROM verified AS v
    LEFT JOIN LATERAL (
        SELECT x.id, x.active FROM {t.course_enrollments} AS x
        WHERE x.course_id = v.course_id AND x.student_id = v.student_id OFFSET 0
    ) AS ce ON true
),
to_reactivate AS MATERIALIZED (
    -- in (course, student) order, as the sync trigger and the undo lock them
    SELECT e.id
    FROM {t.course_enrollments} AS e
    WHERE e.id = ANY (ARRAY(SELECT k.enrollment_id FROM current AS k WHERE NOT k.active))
      AND NOT e.active
    ORDER BY e.course_id, e.student_id
    FOR UPDATE
),
reactivated AS (
    UPDATE {t.course_enrollments} AS e
    SET active = true
    WHERE e.id = ANY (ARRAY(SELECT r.id FROM to_reactivate AS r)) AND NOT e.active
    RETURNING e.id, e.course_id, e.student_id, e.xmin::text::bigint AS row_xmin
),
created AS (
    -- a batch inserts plainly (no speculative insertion: 20% of its time): a pair the
    -- application enrolled after this statement's snapshot is a unique violation, and the
    -- batch is retried (it then finds that enrollment); one statement over everything
    -- skips such a pair instead
    INSERT INTO {t.course_enrollments} (course_id, student_id, active)
    SELECT k.course_id, k.student_id, true
    FROM current AS k
    WHERE k.enrollment_id IS NULL
    ORDER BY k.course_id, k.student_id{on_conflict}
    RETURNING id, course_id, student_id, xmin::text::bigint AS row_xmin
),
changed AS (
    SELECT x.id, x.student_id, x.course_id, x.row_xmin, x.created,
        (pg_catalog.row_number() OVER (ORDER BY x.student_id, x.course_id) - 1) / {RECORD_CHUNK} AS chunk
    FROM (
        SELECT id, student_id, course_id, row_xmin, true AS created FROM created
        UNION ALL
        SELECT id, student_id, course_id, row_xmin, false FROM reactivated
    ) AS x
),
recorded AS (
    INSERT INTO {t.enrollment_backfill_batches}
        (run_id, pass, last_student_id, last_course_id, xid, row_xmin, created, reactivated)
    SELECT {run}, (SELECT r.pass FROM {t.enrollment_backfill_runs} AS r WHERE r.id = {run}),
        (pg_catalog.max(ARRAY[x.student_id, x.course_id]))[1],
        (pg_catalog.max(ARRAY[x.student_id, x.course_id]))[2],
        pg_catalog.pg_current_xact_id(), pg_catalog.min(x.row_xmin),
        coalesce(pg_catalog.array_agg(x.id ORDER BY x.id) FILTER (WHERE x.created), '{{}}'),
        coalesce(pg_catalog.array_agg(x.id ORDER BY x.id) FILTER (WHERE NOT x.created), '{{}}')
    FROM changed AS x
    GROUP BY x.chunk
),
unclaimed AS (
    -- a claim from an earlier life of an enrollment this batch reactivates
    DELETE FROM {t.enrollment_backfill_claims} AS k
    WHERE k.enrollment_id = ANY (ARRAY(SELECT r.id FROM reactivated AS r))
),
progress AS (
    UPDATE {t.enrollment_backfill_runs}
    SET checkpoint = coalesce({checkpoint}, checkpoint),
        batches = batches + 1,
        created = created + (SELECT count(*) FROM created),
        reactivated = reactivated + (SELECT count(*) FROM reactivated)
    WHERE id = {run} AND {moved}
)"""


ON_CONFLICT = "\n    ON CONFLICT (course_id, student_id) DO NOTHING"
COUNTS = """(SELECT count(*) FROM created) AS created,
    (SELECT count(*) FROM reactivated) AS reactivated"""


def batch_sql(t: Tables, lo: str, size: str, run: str) -> str:
    """One batch: at most ``size`` candidates numbered above ``lo``.

    ``lo``, ``size`` and ``run`` are SQL expressions: literals online, PL/pgSQL variables
    offline. One row back: the batch's last candidate number and size, and what it created
    and reactivated. Every table is read by index."""
    return f"""WITH pairs AS MATERIALIZED (
    SELECT k.n, k.student_id, k.course_id, k.memberships
    FROM {t.enrollment_backfill_candidates} AS k
    WHERE k.n > {lo} ORDER BY k.n LIMIT {size}
),
locked AS MATERIALIZED (
    -- locked until this transaction ends, in id order: a deactivation by the application
    -- waits for it, or came first and makes the row drop out here (PostgreSQL re-reads a
    -- row it locks)
    SELECT gm.id, gm.user_id, gm.group_id
    FROM {t.group_members} AS gm
    WHERE gm.id = ANY (ARRAY(SELECT pg_catalog.unnest(p.memberships) FROM pairs AS p))
      AND {ACTIVE_MEMBERSHIP}
    ORDER BY gm.id
    FOR SHARE
),
verified AS MATERIALIZED (
    -- still eligible on the current rows: an active membership of the student in a group
    -- of the course, the user a student of the course's school
    SELECT v.student_id, v.course_id
    FROM (
        SELECT DISTINCT p.student_id, p.course_id
        FROM pairs AS p
        CROSS JOIN LATERAL pg_catalog.unnest(p.memberships) AS m(id)
        JOIN locked AS l ON l.id = m.id AND l.user_id = p.student_id
        {_lookup("g", "x.course_id", t.groups, "x.id = l.group_id")}
        WHERE g.course_id = p.course_id
    ) AS v
    {_lookup("c", "x.school_id", t.courses, "x.id = v.course_id")}
    {_lookup("u", "x.role, x.school_id", t.users, "x.id = v.student_id")}
    WHERE {IS_STUDENT} AND {SAME_SCHOOL}
),
{_writes(t, run, "(SELECT max(p.n) FROM pairs AS p)", "EXISTS (SELECT 1 FROM pairs)")}
SELECT (SELECT max(p.n) FROM pairs AS p) AS last_n,
    (SELECT count(*) FROM pairs) AS pairs,
    {COUNTS}"""


def one_statement_sql(t: Tables, run: str) -> str:
    """The whole backfill in one statement (``-x backfill_one_statement=yes``): plain
    joins, for the planner to hash over the whole tables; the memberships locked as they
    are read (PostgreSQL re-reads a row it locks), in id order."""
    return f"""WITH found AS MATERIALIZED (
    SELECT gm.user_id AS student_id, g.course_id
    FROM {t.group_members} AS gm
    JOIN {t.groups} AS g ON g.id = gm.group_id
    JOIN {t.courses} AS c ON c.id = g.course_id
    JOIN {t.users} AS u ON u.id = gm.user_id
    WHERE {ELIGIBLE}
      AND NOT EXISTS (
        SELECT 1 FROM {t.course_enrollments} AS ce
        WHERE ce.course_id = g.course_id AND ce.student_id = gm.user_id AND ce.active
      )
    ORDER BY gm.id
    FOR SHARE OF gm
),
verified AS (
    SELECT DISTINCT f.student_id, f.course_id FROM found AS f
),
{_writes(t, run, "NULL", "true", ON_CONFLICT)}
SELECT NULL::bigint AS last_n, (SELECT count(*) FROM verified) AS pairs,
    {COUNTS}"""


# --- runs: start or resume, finish --------------------------------------------------------
def start_run_sql(t: Tables, source: str) -> str:
    """One row: the run, whether it resumes, and the checkpoint to go on from (NULL: the
    run computes a new pass; its candidates are gone, or its pass was done).

    The newest unfinished run of this release (one with a pass) is resumed: whatever its
    candidates missed, a later pass or the trigger covers. A 1.2 run (no pass: it walked
    memberships) is closed; what it wrote stays in its record."""
    runs = t.enrollment_backfill_runs
    return f"""WITH trigger_now AS (
{indent(keeping_sql(t).replace(" AS keeping", " AS installed"))}
),
resumable AS (
    SELECT r.id, r.pass, r.checkpoint, r.sync_trigger, r.candidates FROM {runs} AS r
    WHERE r.finished_at IS NULL AND r.pass IS NOT NULL
    ORDER BY r.id DESC
    LIMIT 1
),
closed AS (
    UPDATE {runs} SET finished_at = now()
    WHERE finished_at IS NULL AND id NOT IN (SELECT id FROM resumable)
),
started AS (
    INSERT INTO {runs} (source, sync_trigger, pass)
    SELECT {source}, t.installed, 0 FROM trigger_now AS t
    WHERE NOT EXISTS (SELECT 1 FROM resumable)
    RETURNING id
)
SELECT r.id, true AS resumed, r.pass AS pass_number, r.sync_trigger,
    r.candidates - r.checkpoint AS left_over,
    CASE WHEN EXISTS (
        SELECT 1 FROM {t.enrollment_backfill_candidates} AS k WHERE k.n > r.checkpoint
    ) THEN r.checkpoint END AS checkpoint
FROM resumable AS r
UNION ALL
SELECT s.id, false, 0, false, NULL, NULL FROM started AS s"""


def finish_run_sql(t: Tables, run: str) -> str:
    return f"UPDATE {t.enrollment_backfill_runs} SET finished_at = now() WHERE id = {run}"


# --- offline: the loops in the script --------------------------------------------------
def transaction_start_sql(settings: MigrationSettings, what: str, spaces: str, t: Tables) -> str:
    """After each ``COMMIT`` in a loop: the run's settings and the enrollments lock again
    (both end with the transaction that just committed)."""
    return indent(
        settings.plpgsql_sql()
        + "\n"
        + take_plpgsql(
            t,
            f"{what}: the enrollments lock is held by % (taken between two batches); nothing of this batch was written",
            "run this script again when that session has finished: it goes on from its checkpoint",
        ),
        spaces,
    )


def retry_sql(settings: MigrationSettings, what: str) -> str:
    patience = duration_seconds(settings.lock_patience)
    return f"""            EXCEPTION WHEN deadlock_detected OR serialization_failure OR lock_not_available
                OR unique_violation THEN
                attempt := attempt + 1;
                IF clock_timestamp() - started > interval '{patience:g} s' THEN
                    RAISE EXCEPTION USING ERRCODE = SQLSTATE,
                        MESSAGE = format('{what}: gave up after %s attempts over %s (lock_patience {settings.lock_patience}): %s',
                            attempt, date_trunc('second', clock_timestamp() - started), SQLERRM),
                        HINT = 'run it again when the lock is free: it goes on from where it stopped';
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


# The variables steer_sql and throttle_sql use, for the DECLARE of their DO block.
STEER_DECLARE = """    orders record;
    ready bigint;
    holding text;
    held_said_at timestamptz;
    paused_since timestamptz;"""


def steer_sql(t: Tables, settings: MigrationSettings, what: str) -> str:
    """Before each batch in the script, as online (``enrollments_phase1.steering``): wait
    while ``enrollments pause`` holds the run (until its pause patience), and while a
    health check does: a VACUUM of course_enrollments or group_members, a transaction
    older than -x max_xmin_age, more WAL files waiting to be archived than -x
    max_archive_backlog. Each says so in a NOTICE every 5 s; ``orders`` keeps the throttle
    for :func:`throttle_sql`. While held, the transaction that took the lock stays open,
    idle but for a fresh half-second ``pg_sleep`` (each with a new snapshot, so it holds
    back no VACUUM); it has written nothing."""
    patience = duration_seconds(settings.pause_patience)
    xmin_age = duration_seconds(settings.max_xmin_age)
    vacuum = (
        f"""
            ELSIF EXISTS (SELECT 1 FROM pg_catalog.pg_stat_progress_vacuum AS p
                          WHERE p.relid IN ({t.regclass("course_enrollments")}, {t.regclass("group_members")})) THEN
                holding := 'a VACUUM of course_enrollments or group_members is running (-x hold_on_vacuum=no does not wait for it)';"""
        if settings.hold_on_vacuum
        else ""
    )
    xmin = (
        f"""
            ELSIF (SELECT pg_catalog.max(pg_catalog.clock_timestamp() - a.xact_start)
                   FROM pg_catalog.pg_stat_activity AS a
                   WHERE a.datname = pg_catalog.current_database() AND a.pid <> pg_catalog.pg_backend_pid()
                     AND (a.backend_xmin IS NOT NULL OR a.backend_xid IS NOT NULL)) > interval '{xmin_age:g} s' THEN
                holding := 'a transaction older than {xmin_age:g} s holds back the xmin horizon (-x max_xmin_age)';"""
        if xmin_age
        else ""
    )
    count_ready = (
        """
            -- WAL waiting to be archived: counted only where the role may (a plan naming a
            -- function the role may not call fails even where that part never runs)
            ready := NULL;
            IF pg_catalog.current_setting('archive_mode') IN ('on', 'always')
               AND pg_catalog.has_function_privilege('pg_catalog.pg_ls_archive_statusdir()', 'EXECUTE') THEN
                EXECUTE 'SELECT pg_catalog.count(*) FROM pg_catalog.pg_ls_archive_statusdir() AS w WHERE w.name LIKE ''%.ready'''
                    INTO ready;
            END IF;"""
        if settings.max_archive_backlog
        else ""
    )
    archive = (
        f"""
            ELSIF ready > {settings.max_archive_backlog} THEN
                holding := 'more than {settings.max_archive_backlog} WAL files wait to be archived (-x max_archive_backlog)';"""
        if settings.max_archive_backlog
        else ""
    )
    return f"""
        -- The orders (enrollments pause, resume, throttle) and the health checks.
        LOOP
            -- pg_stat_activity and the progress views are read once a transaction: read anew
            PERFORM pg_catalog.pg_stat_clear_snapshot();{count_ready}
            orders := NULL;
            SELECT c.paused_at IS NOT NULL AND (c.paused_until IS NULL OR c.paused_until > pg_catalog.now()) AS paused,
                   c.changed_by, c.sleep, c.max_rate, c.batch_time
            INTO orders FROM {t.enrollment_backfill_control} AS c WHERE c.id;
            holding := NULL;
            IF coalesce(orders.paused, false) THEN
                holding := pg_catalog.format('paused by %s (enrollments resume goes on)', orders.changed_by);
                paused_since := coalesce(paused_since, pg_catalog.clock_timestamp());
                IF pg_catalog.clock_timestamp() - paused_since > interval '{patience:g} s' THEN
                    RAISE EXCEPTION '{what}: paused for longer than its pause patience ({settings.pause_patience}, -x pause_patience); nothing of the next batch was written'
                        USING HINT = 'run this script again after enrollments resume: it goes on from its checkpoint';
                END IF;{vacuum}{xmin}{archive}
            END IF;
            EXIT WHEN holding IS NULL;
            IF held_said_at IS NULL OR pg_catalog.clock_timestamp() - held_said_at > interval '5 s' THEN
                RAISE NOTICE '{what}: held: %', holding;
                held_said_at := pg_catalog.clock_timestamp();
            END IF;
            PERFORM pg_catalog.pg_sleep(0.5);
        END LOOP;
        IF held_said_at IS NOT NULL THEN
            RAISE NOTICE '{what}: no longer held: going on';
        END IF;
        held_said_at := NULL;
        paused_since := NULL;"""


def throttle_sql(rows: str) -> str:
    """After each batch's ``COMMIT`` in the script: the throttle's sleep, and at least what
    keeps its rate (``rows`` written since ``started``)."""
    return f"""
        IF orders.sleep IS NOT NULL OR orders.max_rate IS NOT NULL THEN
            PERFORM pg_catalog.pg_sleep(greatest(
                coalesce(pg_catalog.date_part('epoch', orders.sleep), 0),
                coalesce({rows}::float8 / orders.max_rate
                         - pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() - started), 0)));
        END IF;"""


def _adapt(batch: ScriptBatches, rows: str) -> str:
    if batch.fixed_size:
        return ""
    return f"""
        -- toward {batch.target_seconds:g} s a batch: x0.5 to x1.5 a step, within [{batch.min_size}, {batch.max_size}]
        IF {rows} = size THEN
            size := least({batch.max_size}, greatest({batch.min_size}, (size * least(1.5, greatest(0.5,
                coalesce(pg_catalog.date_part('epoch', orders.batch_time), {batch.target_seconds})
                / greatest(extract(epoch FROM clock_timestamp() - started), 0.000001))))::integer));
        END IF;"""


def offline_backfill_sql(t: Tables, source: str, settings: MigrationSettings) -> str:
    """The backfill as a DO block for psql, outside a transaction block: the candidates in
    a transaction of their own, then a ``COMMIT`` per batch, sized toward the online
    target, retried with backoff; passes as online. A cut script goes on from the
    checkpoint when run again. Each transaction sets the run's settings and takes the
    enrollments lock first."""
    what = f"backfill {source}"
    batch = ScriptBatches.of(settings)
    start = f"""{transaction_start_sql(settings, what, "    ", t)}
{indent(start_run_sql(t, f"'{source}'"))}
    INTO run;
    IF run.resumed THEN
        RAISE NOTICE '{what}: resuming run % in pass % after candidate %', run.id, run.pass_number, coalesce(run.checkpoint::text, '(its candidates are gone: computing them again)');
    END IF;
    COMMIT;"""
    if settings.backfill_one_statement:
        return f"""-- The backfill, in one statement.
DO $backfill$
DECLARE
    run record;
    result record;
    attempt integer := 0;
    started timestamptz := clock_timestamp();
BEGIN
{start}
    LOOP
{transaction_start_sql(settings, what, "        ", t)}
        BEGIN
{indent(one_statement_sql(t, "run.id"), "            ")}
            INTO result;
            EXIT;
{retry_sql(settings, what).replace(chr(10) + "    ", chr(10))}
    END LOOP;
    {finish_run_sql(t, "run.id")};
    RAISE NOTICE '{what}: % enrollments created, % reactivated (one statement)', result.created, result.reactivated;
    COMMIT;
END
$backfill$"""
    fill = indent(";\n".join(candidates_sql(t)), "            ")
    return f"""-- The backfill: candidates once per pass, then one batch per transaction.
DO $backfill$
DECLARE
    run record;
    found_pass record;
    result record;
    lo bigint;
    last_pass boolean;
    passes integer := 0;
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
    pass_number integer;
    pass_total bigint;
    reported_at timestamptz;
{STEER_DECLARE}
BEGIN
{start}
    lo := run.checkpoint;
    last_pass := run.sync_trigger;
    pass_number := run.pass_number;
    LOOP
        IF lo IS NULL THEN
            -- A new pass: the candidates, computed once (a read; it writes only its table).
            EXIT WHEN passes >= {MAX_PASSES};
{transaction_start_sql(settings, what, "            ", t)}
            started := clock_timestamp();
{fill};
{indent(next_pass_sql(t, "run.id"), "            ")}
            INTO found_pass;
            RAISE NOTICE '{what}: pass %: % pairs to create or reactivate (candidates in % s)',
                found_pass.pass_number, found_pass.candidates, round(extract(epoch FROM clock_timestamp() - started)::numeric, 1);
            COMMIT;
            passes := passes + 1;
            EXIT WHEN found_pass.candidates = 0;
            lo := 0;
            last_pass := found_pass.sync_trigger;
            pass_number := found_pass.pass_number;
            pass_total := found_pass.candidates;
        END IF;
        LOOP
            attempt := 0;
{transaction_start_sql(settings, what, "            ", t)}{indent(_pace(settings, what), "    ")}{indent(steer_sql(t, settings, what), "    ")}
            started := clock_timestamp();
            LOOP
                BEGIN
{indent(batch_sql(t, "lo", "size", "run.id"), "                    ")}
                    INTO result;
                    EXIT;
{indent(retry_sql(settings, what), "    ")}
            END LOOP;
            IF result.pairs = 0 THEN
                COMMIT;
                EXIT;
            END IF;
            done_batches := done_batches + 1;
            done_created := done_created + result.created;
            done_reactivated := done_reactivated + result.reactivated;
            lo := result.last_n;
            COMMIT;
            -- Progress: after the first batch, then every {REPORT_SECONDS:g} s.
            IF reported_at IS NULL OR clock_timestamp() - reported_at >= interval '{REPORT_SECONDS:g} s' THEN
                RAISE NOTICE '{what}: pass %: % of % pairs done (% created, % reactivated so far)',
                    pass_number, {counted("lo")},
                    coalesce({counted("pass_total")}, 'its'),
                    {counted("done_created")}, {counted("done_reactivated")};
                reported_at := clock_timestamp();
            END IF;{indent(_adapt(batch, "result.pairs"), "    ")}{indent(throttle_sql("result.pairs"), "    ")}
        END LOOP;
        -- The sync trigger kept coverage since this pass's candidates: nothing more to find.
        EXIT WHEN last_pass;
        lo := NULL;
    END LOOP;
    IF passes >= {MAX_PASSES} AND NOT last_pass THEN
        RAISE WARNING '{what}: still finding pairs after {MAX_PASSES} passes (the application keeps writing memberships and no sync trigger is installed); the audit or the gate counts what is left';
    END IF;
{transaction_start_sql(settings, what, "    ", t)}
    {finish_run_sql(t, "run.id")};
    RAISE NOTICE '{what}: % enrollments created, % reactivated (% batches)', {counted("done_created")},
        {counted("done_reactivated")}, {counted("done_batches")};
    COMMIT;
END
$backfill$"""


# --- online ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    created: int
    reactivated: int
    batches: int
    pairs: int
    passes: int
    longest: float = 0.0  # the longest batch's transaction, seconds


def _row(connection: Connection, sql: str):
    return connection.exec_driver_sql(sql, execution_options={"no_parameters": True}).one()


def run_backfill(
    connection: Connection,
    t: Tables,
    source: str,
    batch: BatchSettings,
    what: str,
    one_statement: bool = False,
    progress_stream=None,
) -> Outcome:
    """The backfill on ``connection``: outside a transaction (Alembic's autocommit block,
    or a command's connection), or in the caller's (then each transaction is a savepoint
    and nothing commits). The command and the revisions both run it."""
    with transaction(connection):
        run = _row(connection, start_run_sql(t, quote_literal(source)))
    if run.resumed:
        log.info(
            "%s: resuming run %d in pass %d %s",
            what,
            run.id,
            run.pass_number,
            "(its candidates are gone: computing them again)"
            if run.checkpoint is None
            else f"after candidate {run.checkpoint:,}",
        )
    if one_statement:
        with transaction(connection):
            row = _row(connection, one_statement_sql(t, str(run.id)))
            connection.exec_driver_sql(finish_run_sql(t, str(run.id)))
        return Outcome(int(row.created), int(row.reactivated), 1, int(row.pairs), 0)

    def step(conn: Connection, after: int, size: int) -> StepResult:
        row = _row(conn, batch_sql(t, str(after), str(size), str(run.id)))
        return StepResult(
            last_key=row.last_n,
            rows=int(row.pairs),
            counts={"created": int(row.created), "reactivated": int(row.reactivated)},
        )

    checkpoint, last_pass, pass_number = (
        run.checkpoint,
        bool(run.sync_trigger),
        int(run.pass_number),
    )
    left = run.left_over  # the candidates are numbered 1 to candidates, without gaps
    created = reactivated = batches = pairs = passes = 0
    longest = 0.0
    while True:
        if checkpoint is None:
            if passes >= MAX_PASSES:
                log.warning(
                    "%s: still finding pairs after %d passes (the application keeps writing "
                    "memberships and no sync trigger is installed); the audit or the gate "
                    "counts what is left",
                    what,
                    MAX_PASSES,
                )
                break
            started = time.monotonic()
            with transaction(connection):
                for statement in candidates_sql(t):
                    connection.exec_driver_sql(statement)
                found = _row(connection, next_pass_sql(t, str(run.id)))
            passes += 1
            pass_number = int(found.pass_number)
            log.info(
                "%s: pass %d: %s pairs to create or reactivate (candidates in %.1f s)",
                what,
                pass_number,
                f"{found.candidates:,}",
                time.monotonic() - started,
            )
            if not found.candidates:
                break
            checkpoint, last_pass, left = 0, bool(found.sync_trigger), int(found.candidates)
        progress = Progress(f"{what}: pass {pass_number}", left or 0, "pairs", progress_stream)
        totals = run_batches(connection, step, int(checkpoint), batch, progress, steered=t)
        done_created = totals.counts.get("created", 0)
        done_reactivated = totals.counts.get("reactivated", 0)
        progress.close(f"{done_created:,} created, {done_reactivated:,} reactivated")
        created += done_created
        reactivated += done_reactivated
        batches += totals.batches
        pairs += totals.rows
        longest = max(longest, totals.longest)
        if last_pass:  # the trigger kept coverage since this pass's candidates
            break
        checkpoint = None
    with transaction(connection):
        connection.exec_driver_sql(finish_run_sql(t, str(run.id)))
    return Outcome(created, reactivated, batches, pairs, passes, longest)


def backfill_online(
    connection: Connection, t: Tables, source: str, settings: MigrationSettings
) -> Outcome:
    """A revision's backfill, recorded as ``source`` (the revision)."""
    return run_backfill(
        connection,
        t,
        source,
        settings.batch,
        f"backfill {source}",
        one_statement=settings.backfill_one_statement,
    )
