"""backfill course_enrollments from active group_members

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 21:50:00

Data only. Creates an active enrollment for every eligible (student, course) pair that
has none and reactivates the inactive ones; never deactivates, never enrolls anomalies,
never duplicates (ON CONFLICT on uq_course_enrollment_once). Each change is recorded in
enrollment_backfill_changes so that the downgrade undoes exactly this revision's work.

``-x backfill_batch_size=N`` runs it online in committed batches (autocommit block);
an interrupted run is finished by running the upgrade again.
"""

from collections.abc import Sequence

from migrations.shared.v1.helpers import backfill_enrollments, undo_backfill

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply the backfill of course_enrollments."""
    backfill_enrollments(revision)


def downgrade() -> None:
    """Unapply the backfill: delete what it created, deactivate what it reactivated."""
    undo_backfill(revision)
