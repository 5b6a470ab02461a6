"""sync trigger under concurrency: no pair left uncovered, no deadlock added

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 12:00:00

1.2.0's sync trigger (0004 to 0007) read the users, groups and courses behind a pair
without locking anything: a transaction adding a teacher's membership and one making the
teacher a student, committing together, each saw only its own change and neither enrolled
the pair. It applied a transaction statement by statement, adding deadlocks, and its claim
of backfilled pairs read the whole record at every commit while the deploy's backfill
filled it. Here every database gets the sync trigger as helpers v4 install it
(``migrations/shared/v4/sync.py``):

- pairs found not eligible, and every changed user, group and course, are marked in
  ``course_enrollments_sync_guard`` before being read again at commit: the second of two
  conflicting transactions waits and sees the first (READ COMMITTED) or fails with a
  serialization failure (REPEATABLE READ);
- everything a transaction queued is applied once, at its end, in one global order;
- every statement reads by key through an index, whatever the statistics;
- the same enrollments whether the application's constraints are deferred or immediate.

The queue gains its columns in place under a short lock on it alone (transactions in flight
finish first); no legacy table is locked where the triggers on them exist. Where 0004 of
1.3 installed the trigger this changes nothing.
"""

from collections.abc import Sequence

from enrollments_phase1.migrations.shared.v4.steps import sync_under_concurrency

# revision identifiers, used by Alembic.
revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply the sync trigger of helpers v4."""
    sync_under_concurrency(revision)


def downgrade() -> None:
    """Unapply: nothing. 1.2's trigger is not put back (it left pairs uncovered); this one
    stays, and 0004's downgrade removes it with everything else."""
