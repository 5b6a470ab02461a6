"""The backfill's own tables: what it changed (for an exact undo) and where it stands.

- ``enrollment_backfill_changes``: one row per enrollment a backfill created or
  reactivated, first change only (a unique index on ``enrollment_id``), with the row
  version it wrote (``row_xmin``, the ``xmin`` of the row as the backfill left it): the
  undo restores a row only while it is still that version, so a row the application
  changed since, even changed and changed back, is left alone and counted. Rows 1.0.0
  recorded have no ``row_xmin``; for them "still as left" means same pair, still active.
  ``claimed_at``: when the application made the pair its own (it wrote a membership that
  makes the pair eligible, after the backfill had enrolled it): the sync trigger sets it,
  and the undo then keeps the enrollment.
- ``enrollment_backfill_runs``: one row per backfill run, by the command or a revision:
  its checkpoint (the last membership id of its last committed batch), whether the sync
  trigger was installed when it started, and its counts. A cut run goes on from its
  checkpoint.

Both grant nothing to PUBLIC (a default privilege of the schema could have): only their
owner and the roles the DBA grants read them.

Revision 0003 creates both; later revisions run :func:`ensure_sql` first, because a
database 1.0.0 migrated has the record table without the new column, index and table.
"""

from __future__ import annotations

from enrollments_phase1.migrations.shared.v4.definition import Tables

CHANGES = "enrollment_backfill_changes"
RUNS = "enrollment_backfill_runs"
ENROLLMENT_INDEX = "uq_enrollment_backfill_changes_enrollment"


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
    CONSTRAINT enrollment_backfill_runs_pkey PRIMARY KEY (id)"""


def revoke_sql(t: Tables) -> str:
    return (
        f"REVOKE ALL ON {t.enrollment_backfill_changes}, {t.enrollment_backfill_runs} FROM PUBLIC;\n"
        f"REVOKE ALL ON SEQUENCE {t.enrollment_backfill_runs_id_seq} FROM PUBLIC"
    )


def create_sql(t: Tables) -> list[str]:
    """Revision 0003: the two tables, created, granting nothing to PUBLIC."""
    return [
        f"-- What a backfill created or reactivated, so that a downgrade undoes exactly that.\n{_changes(t)}",
        f"CREATE UNIQUE INDEX {ENROLLMENT_INDEX} ON {t.enrollment_backfill_changes} (enrollment_id)",
        f"-- Each backfill run and its checkpoint, so that a cut run goes on where it stopped.\nCREATE TABLE {t.enrollment_backfill_runs} (\n{RUNS_COLUMNS}\n)",
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
    -- Nothing for PUBLIC (a default privilege may have given it some; 1.1 did not revoke).
    {revoke_sql(t).replace(chr(10), chr(10) + "    ")};
END
$ensure$""",
    ]


def drop_sql(t: Tables) -> list[str]:
    """Revision 0003's downgrade, once the record is empty (see the undo)."""
    return [
        f"DROP TABLE {t.enrollment_backfill_runs}",
        f"DROP TABLE {t.enrollment_backfill_changes}",
    ]
