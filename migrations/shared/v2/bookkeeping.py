"""The backfill's own tables: what it changed (for an exact undo) and where it stands.

- ``enrollment_backfill_changes``: one row per enrollment a backfill created or
  reactivated, first change only (a unique index on ``enrollment_id``), with the row
  version it wrote (``row_xmin``, the ``xmin`` of the row as the backfill left it): the
  undo restores a row only while it is still that version, so a row the application
  changed since, even changed and changed back, is left alone and counted. Rows 1.0.0
  recorded have no ``row_xmin``; for them "still as left" means same pair, still active.
- ``enrollment_backfill_runs``: one row per backfill run, by the command or a revision:
  its checkpoint (the last membership id of its last committed batch), whether the sync
  trigger was installed when it started, and its counts. A cut run goes on from its
  checkpoint.

Revision 0003 creates both; later revisions run :func:`ensure_sql` first, because a
database 1.0.0 migrated has the record table without the new column, index and table.
"""

from __future__ import annotations

CHANGES = "enrollment_backfill_changes"
RUNS = "enrollment_backfill_runs"

CREATE_CHANGES = f"""CREATE TABLE {CHANGES} (
    revision varchar(32) NOT NULL,
    enrollment_id integer NOT NULL,
    course_id integer NOT NULL,
    student_id integer NOT NULL,
    action varchar(20) NOT NULL,
    changed_at timestamp with time zone DEFAULT now() NOT NULL,
    row_xmin bigint,
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

ENROLLMENT_INDEX = "uq_enrollment_backfill_changes_enrollment"


def create_sql() -> list[str]:
    """Revision 0003: the two tables, created."""
    return [
        f"-- What a backfill created or reactivated, so that a downgrade undoes exactly that.\n{CREATE_CHANGES}",
        f"CREATE UNIQUE INDEX {ENROLLMENT_INDEX} ON {CHANGES} (enrollment_id)",
        f"-- Each backfill run and its checkpoint, so that a cut run goes on where it stopped.\nCREATE TABLE {RUNS} (\n{RUNS_COLUMNS}\n)",
    ]


def ensure_sql(in_transaction: bool = False) -> str:
    """After 0003: the same, added where a 1.0.0 migration left them out: idempotent,
    quiet about what is there already, in a transaction of its own unless
    ``in_transaction`` (the caller's)."""
    body = f"""SET LOCAL client_min_messages = warning;
ALTER TABLE {CHANGES} ADD COLUMN IF NOT EXISTS row_xmin bigint;
-- Only backfills write this table, and they wait for the enrollments lock this run holds.
-- squawk-ignore require-concurrent-index-creation
CREATE UNIQUE INDEX IF NOT EXISTS {ENROLLMENT_INDEX} ON {CHANGES} (enrollment_id);
CREATE TABLE IF NOT EXISTS {RUNS} (
{RUNS_COLUMNS}
)"""
    if in_transaction:
        return body
    return f"""-- The backfill's bookkeeping as 1.1 keeps it: a database 1.0.0 migrated lacks the row
-- version column, the index and the runs table (otherwise nothing happens).
BEGIN;
{body};
COMMIT"""


def drop_sql() -> list[str]:
    """Revision 0003's downgrade, once the record is empty (see the undo)."""
    return [f"DROP TABLE {RUNS}", f"DROP TABLE {CHANGES}"]
