"""table enrollment_backfill_changes: what a backfill revision changed

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 21:45:00

Schema only, so that the backfill revision (0004) is data only. The backfill records
each enrollment it creates or reactivates here; its downgrade reads the record to give
back exactly the ``course_enrollments`` it found. No foreign key to
``course_enrollments``: a record of a row deleted since must survive.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply the enrollment_backfill_changes table."""
    op.create_table(
        "enrollment_backfill_changes",
        sa.Column("revision", sa.String(32), nullable=False),
        sa.Column("enrollment_id", sa.Integer(), nullable=False),
        sa.Column("course_id", sa.Integer(), nullable=False),
        sa.Column("student_id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column(
            "changed_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint(
            "revision", "enrollment_id", name="enrollment_backfill_changes_pkey"
        ),
        sa.CheckConstraint(
            "action IN ('created', 'reactivated')", name="ck_enrollment_backfill_changes_action"
        ),
    )


def downgrade() -> None:
    """Unapply the enrollment_backfill_changes table."""
    op.drop_table("enrollment_backfill_changes")
