"""backfill course_enrollments from active group_members

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 21:50:00

Creates an active enrollment for every eligible (student, course) pair that has none and
reactivates the inactive ones; never deactivates, never enrolls anomalies, never
duplicates (ON CONFLICT on uq_course_enrollment_once). Each change is recorded in
enrollment_backfill_changes so that the downgrade undoes exactly the backfill's work.

Fixed in 1.1 (helpers v2), because a live deploy failed and the backfill could resurrect
an enrollment:

- it first installs the sync trigger, so that memberships the application writes during
  and after the backfill get their enrollment in their own transaction;
- it runs in batches by default (sized toward 100 ms, paced on the replicas' lag,
  retried), each locking the memberships it reads ``FOR SHARE`` and writing in a fixed
  order; a cut run resumes from its checkpoint; ``-x backfill_one_statement=yes`` runs it
  as one statement;
- it holds the enrollments lock, like ``enrollments backfill --commit``;
- the downgrade drops the trigger, then undoes every recorded change (the revision's and
  the command's), in batches, where the row is still the version the backfill wrote.

Fixed in 1.2 (helpers v3), because any role could use the trigger to write enrollments and
a writable ``public`` let a role run its own code as the migration role:

- the trigger functions are safe ``SECURITY DEFINER`` functions: pinned search_path,
  everything qualified, ``EXECUTE`` revoked from PUBLIC, refusing any table but their own;
- they write no enrollment during the application's statement: they queue what changed,
  and a deferred constraint trigger enrolls it at commit, so the trigger adds no
  deadlock to an application that writes its enrollments in a fixed order;
- the backfill and every other statement run with ``search_path = pg_catalog, pg_temp``;
- the downgrade never deletes or changes a row of another table: it keeps the recorded
  enrollments another table references and those whose pair the application made its own
  since (a membership written after the backfill, which the trigger notes in the record);
  it undoes first and drops every object of the trigger last, in the transaction that
  records 0003, so a downgrade cut short leaves 0004 whole.

Fixed in 1.3 (helpers v4), because two application transactions committing together could
leave an eligible pair uncovered, the trigger added deadlocks, and the application's
commits slowed to seconds while the backfill filled the record:

- a pair found not eligible, and every changed user, group and course, are marked in
  ``course_enrollments_sync_guard`` before the pairs are read again at commit: of two
  transactions that each make half of a pair eligible, the second waits and sees the first
  (READ COMMITTED) or fails with a serialization failure (REPEATABLE READ);
- everything a transaction queued is applied once, at its end, in one global order;
- every statement of the trigger reads by key through an index, whatever the statistics;
- the pairs eligible at the end of a statement are enrolled, the same whether the
  application's constraints are deferred or immediate.

Fixed in 1.3 (helpers v4) also, because the backfill cost 3.4 times its floor in time and
5 times in WAL, and walked every membership again after a backfill run ahead of time:

- the candidates (eligible pairs lacking an active enrollment) are computed once per pass
  by hash joins, into an UNLOGGED table numbered in (student, course) order, and written
  in batches in that order, each re-checking its pairs on the memberships it locks;
- one record row per batch instead of one per enrollment;
- a pass computed while the sync trigger keeps coverage is the last; without the trigger
  (the command at 0003) the candidates are computed again until a pass finds none;
- a cut run resumes from its checkpoint, or from a new pass when its candidates are lost.
"""

from collections.abc import Sequence

from enrollments_phase1.migrations.shared.v4.steps import backfill_revision, undo_backfill_revision

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply the sync trigger, then the backfill of course_enrollments."""
    backfill_revision(revision)


def downgrade() -> None:
    """Unapply them: drop the sync trigger, undo the recorded backfill changes."""
    undo_backfill_revision(revision)
