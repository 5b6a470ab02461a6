"""table enrollment_backfill_changes: what a backfill revision changed

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 21:45:00

Schema only, so that the backfill revision (0004) is data only. Every backfill, by a
revision or by ``enrollments backfill --commit``, records here each enrollment it creates
or reactivates, with the row version it wrote; a downgrade below 0004 reads the record to
give back exactly the ``course_enrollments`` it found. No foreign key to
``course_enrollments``: a record of a row deleted since must survive.

Fixed in 1.1 (helpers v2): the record keeps the row version (``row_xmin``) and one row
per enrollment (a unique index), so that a row changed since, even changed and changed
back, is told apart; a second table, ``enrollment_backfill_runs``, keeps each run's
checkpoint so that a cut run resumes. The downgrade never drops a record that holds rows:
it undoes them first (a backfill by the command at this revision, or a 0004 cut short),
and drops a sync trigger such a cut 0004 left.

Fixed in 1.2 (helpers v3): both tables grant nothing to PUBLIC; every statement runs with
a pinned search_path and names the schema of its tables, so that an operator planted in a
writable schema (the record's CHECK constraint compares with ``=``) never runs as the
migration role. The record has a ``claimed_at`` column (the sync trigger marks a pair the
application made its own), and the downgrade's undo keeps what other tables reference and
what was claimed, dropping a sync trigger a cut 0004 left in the transaction that records
0002.

Fixed in 1.3 (helpers v4): the downgrade drops the sync trigger's guard table with its
other objects (a cut 0004 of 1.3 leaves one). The record was a row per enrollment, which
cost the backfill five times the WAL of its floor: since 1.3 every backfill records one
row per batch in ``enrollment_backfill_batches`` (the ids it created and reactivated, and
the ``xmin`` their rows carry), the sync trigger's claims go to
``enrollment_backfill_claims``, a run's pass in progress to the UNLOGGED
``enrollment_backfill_candidates``, and each run keeps its pass. 1.2's record stays where
it is, and the downgrade undoes both, 1.3's newest first.
"""

from collections.abc import Sequence

from enrollments_phase1.migrations.shared.v4.steps import create_bookkeeping, drop_bookkeeping

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply the record of backfill changes and the runs table."""
    create_bookkeeping()


def downgrade() -> None:
    """Unapply them: undo what the record still holds, then drop both tables."""
    drop_bookkeeping(revision)
