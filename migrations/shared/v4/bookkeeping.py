"""The backfill's own tables: what it changed (for an exact undo) and where it stands.

- ``enrollment_backfill_batches`` (since 1.3, the record every backfill writes): one row
  per batch that changed anything, holding its run and pass, the batch's last pair, its
  transaction (``xid``), the ``xmin`` its rows carry (``row_xmin``) and the arrays of the
  enrollment ids it created and reactivated. The undo restores a row only while it is
  still that version (its ``xmin`` is the batch's), so a row the application changed
  since, even changed and changed back, is left alone and counted. An index on
  ``row_xmin`` lets the sync trigger ask, by key, whether an enrollment is still as a
  batch wrote it.
- ``enrollment_backfill_claims`` (since 1.3): the enrollments the application made its own
  (it wrote a membership that makes the pair eligible) while they were still as a backfill
  wrote them. The sync trigger writes them, the undo keeps them, a batch that reactivates
  an enrollment clears its claim from an earlier life.
- ``enrollment_backfill_candidates`` (since 1.3, UNLOGGED): the pass in progress, the pairs
  to create or reactivate numbered in (student, course) order. Only the run holding the
  enrollments lock uses it; a crash empties it, and the run computes it again.
- ``enrollment_backfill_changes``: 1.0 to 1.2's record, one row per enrollment, first
  change only, with the row version it wrote (``row_xmin``; none for 1.0.0's rows, where
  "still as left" means same pair, still active) and ``claimed_at`` (1.2's trigger's
  claim). No backfill writes it since 1.3; the undo goes through what it holds.
- ``enrollment_backfill_control`` (since 1.3, one row): a pause (since when, until when, by
  whom) and a throttle (a batch duration to aim at, a sleep between batches, a rate),
  written by ``enrollments pause``, ``resume`` and ``throttle`` and read by every batched
  run before each batch (``enrollments_phase1.steering``); and, written by the run, the
  health check holding it (``held_by``) and what it is doing (``activity``), for
  ``enrollments status``.
- ``enrollment_backfill_runs``: one row per backfill run, by the command or a revision:
  its pass and checkpoint (the last candidate of its last committed batch; 1.2's runs, with
  no pass, the last membership id), whether the sync trigger was installed when it
  started, and its counts. A cut run goes on from its checkpoint.

None grants anything to PUBLIC (a default privilege of the schema could have): only their
owner and the roles the DBA grants read them.

Revision 0003 creates them; later revisions run :func:`ensure_sql` first, because a
database an older release migrated lacks what came later.
"""

from __future__ import annotations

from enrollments_phase1.migrations.shared.v4.definition import Tables, indent

CHANGES = "enrollment_backfill_changes"
RUNS = "enrollment_backfill_runs"
BATCHES = "enrollment_backfill_batches"
CLAIMS = "enrollment_backfill_claims"
CANDIDATES = "enrollment_backfill_candidates"
CONTROL = "enrollment_backfill_control"
ENROLLMENT_INDEX = "uq_enrollment_backfill_changes_enrollment"
ROW_XMIN_INDEX = "ix_enrollment_backfill_batches_row_xmin"
SEMICOLON = ";\n"


def _changes(t: Tables) -> str:
    return f"""CREATE TABLE {t.enrollment_backfill_changes} (
    revision varchar(32) NOT NULL,
    enrollment_id integer NOT NULL,
    course_id integer NOT NULL,
    student_id integer NOT NULL,
    action varchar(20) NOT NULL,
    changed_at timestamp with time zone DEFAULT now() NOT NULL,
    row_xmin bigint,
    claimed_at timestamp with time zone,
    CONSTRAINT enrollment_backfill_changes_pkey PRIMARY KEY (revision, enrollment_id),
    CONSTRAINT ck_enrollment_backfill_changes_action CHECK (action IN ('created', 'reactivated'))
)"""


RUNS_COLUMNS = """    id serial NOT NULL,
    source varchar(32) NOT NULL,
    started_at timestamp with time zone DEFAULT now() NOT NULL,
    finished_at timestamp with time zone,
    checkpoint bigint,
    sync_trigger boolean NOT NULL,
    batches integer DEFAULT 0 NOT NULL,
    created bigint DEFAULT 0 NOT NULL,
    reactivated bigint DEFAULT 0 NOT NULL,
    pass integer,
    candidates bigint,
    CONSTRAINT enrollment_backfill_runs_pkey PRIMARY KEY (id)"""


def _since_1_3(t: Tables) -> list[str]:
    """The record, the claims and the candidates of 1.3's backfill."""
    return [
        f"""-- What each batch of a backfill created and reactivated, and the row version it wrote.
CREATE TABLE {t.enrollment_backfill_batches} (
    id bigserial NOT NULL,
    run_id integer NOT NULL,
    pass integer NOT NULL,
    last_student_id integer NOT NULL,
    last_course_id integer NOT NULL,
    xid xid8 NOT NULL,
    row_xmin bigint NOT NULL,
    created integer[] NOT NULL,
    reactivated integer[] NOT NULL,
    written_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT enrollment_backfill_batches_pkey PRIMARY KEY (id)
)""",
        f"CREATE INDEX {ROW_XMIN_INDEX} ON {t.enrollment_backfill_batches} (row_xmin)",
        f"""-- Enrollments the application made its own while still as a backfill wrote them.
CREATE TABLE {t.enrollment_backfill_claims} (
    enrollment_id integer NOT NULL,
    claimed_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT enrollment_backfill_claims_pkey PRIMARY KEY (enrollment_id)
)""",
        f"""-- The pass in progress: the pairs to create or reactivate, in (student, course) order.
CREATE UNLOGGED TABLE {t.enrollment_backfill_candidates} (
    n bigint NOT NULL,
    student_id integer NOT NULL,
    course_id integer NOT NULL,
    memberships integer[] NOT NULL,
    CONSTRAINT enrollment_backfill_candidates_pkey PRIMARY KEY (n)
)""",
    ]


def _control(t: Tables) -> str:
    return f"""-- The pause and the throttle of the running backfill (enrollments pause, resume, throttle).
CREATE TABLE {t.enrollment_backfill_control} (
    id boolean DEFAULT true NOT NULL,
    paused_at timestamp with time zone,
    paused_until timestamp with time zone,
    batch_time interval,
    sleep interval,
    max_rate integer,
    changed_by text DEFAULT CURRENT_USER NOT NULL,
    changed_at timestamp with time zone DEFAULT now() NOT NULL,
    held_by jsonb,
    activity jsonb,
    CONSTRAINT enrollment_backfill_control_pkey PRIMARY KEY (id),
    CONSTRAINT ck_enrollment_backfill_control_one_row CHECK (id)
)"""


def revoke_sql(t: Tables) -> str:
    return (
        f"REVOKE ALL ON {t.enrollment_backfill_changes}, {t.enrollment_backfill_runs},\n"
        f"    {t.enrollment_backfill_batches}, {t.enrollment_backfill_claims},\n"
        f"    {t.enrollment_backfill_candidates}, {t.enrollment_backfill_control} FROM PUBLIC;\n"
        f"REVOKE ALL ON SEQUENCE {t.enrollment_backfill_runs_id_seq},\n"
        f"    {t.enrollment_backfill_batches_id_seq} FROM PUBLIC"
    )


def create_sql(t: Tables) -> list[str]:
    """Revision 0003: the two tables, created, granting nothing to PUBLIC."""
    return [
        f"-- What a backfill created or reactivated, so that a downgrade undoes exactly that.\n{_changes(t)}",
        f"CREATE UNIQUE INDEX {ENROLLMENT_INDEX} ON {t.enrollment_backfill_changes} (enrollment_id)",
        f"-- Each backfill run and its checkpoint, so that a cut run goes on where it stopped.\nCREATE TABLE {t.enrollment_backfill_runs} (\n{RUNS_COLUMNS}\n)",
        *_since_1_3(t),
        _control(t),
        f"-- Only their owner (and whom the DBA grants) may read or write them.\n{revoke_sql(t)}",
    ]


def ensure_sql(t: Tables) -> list[str]:
    """After 0003: the same, added where a 1.0.0 migration left them out (the caller's
    transaction). Each piece only where it is missing: an ALTER TABLE takes its heavy lock
    even when it has nothing to do."""
    return [
        f"""-- The backfill's bookkeeping as this release keeps it: a database 1.0.0 migrated lacks the
-- row version column, the index and the runs table; one 1.1.0 migrated, the claim column
-- (otherwise nothing happens, and no table is locked).
DO $ensure$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                   WHERE attrelid = {t.regclass(CHANGES)} AND attname = 'row_xmin'
                     AND NOT attisdropped) THEN
        ALTER TABLE {t.enrollment_backfill_changes} ADD COLUMN row_xmin bigint;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                   WHERE attrelid = {t.regclass(CHANGES)} AND attname = 'claimed_at'
                     AND NOT attisdropped) THEN
        -- Since 1.2: a pair the application made its own since the backfill.
        ALTER TABLE {t.enrollment_backfill_changes} ADD COLUMN claimed_at timestamp with time zone;
    END IF;
    IF {t.regclass(ENROLLMENT_INDEX)} IS NULL THEN
        -- Only backfills write this table, and they wait for the enrollments lock this run holds.
        CREATE UNIQUE INDEX {ENROLLMENT_INDEX} ON {t.enrollment_backfill_changes} (enrollment_id);
    END IF;
    IF {t.regclass(RUNS)} IS NULL THEN
        CREATE TABLE {t.enrollment_backfill_runs} (
{RUNS_COLUMNS.replace(chr(10), chr(10) + "        ")}
        );
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                   WHERE attrelid = {t.regclass(RUNS)} AND attname = 'pass'
                     AND NOT attisdropped) THEN
        -- Since 1.3: a run goes in passes over its candidates.
        ALTER TABLE {t.enrollment_backfill_runs} ADD COLUMN pass integer, ADD COLUMN candidates bigint;
    END IF;
    IF {t.regclass(BATCHES)} IS NULL THEN
        -- Since 1.3: the record one row per batch, the claims, the candidates.
{indent(SEMICOLON.join(_since_1_3(t)), "        ")};
    END IF;
    IF {t.regclass(CONTROL)} IS NULL THEN
        -- Since 1.3: the pause and the throttle.
{indent(_control(t), "        ")};
    END IF;
    -- Nothing for PUBLIC (a default privilege may have given it some; 1.1 did not revoke).
    {revoke_sql(t).replace(chr(10), chr(10) + "    ")};
END
$ensure$""",
    ]


def drop_sql(t: Tables) -> list[str]:
    """Revision 0003's downgrade, once the record is empty (see the undo)."""
    return [
        f"DROP TABLE IF EXISTS {t.enrollment_backfill_control}",
        f"DROP TABLE {t.enrollment_backfill_candidates}",
        f"DROP TABLE {t.enrollment_backfill_claims}",
        f"DROP TABLE {t.enrollment_backfill_batches}",
        f"DROP TABLE {t.enrollment_backfill_runs}",
        f"DROP TABLE {t.enrollment_backfill_changes}",
    ]
