"""sync trigger on databases 1.0.0 migrated

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 12:00:00

1.0.0 left the databases it deployed at 0005 without the sync trigger, and their coverage
has drifted since as the legacy application writes only ``group_members``. Here, where the
trigger is missing, it is installed, a backfill catches up, and the coverage gate runs.
Where it is installed (every database that reached 0005 with 1.1) nothing happens: the
trigger has kept coverage since 0005's gate.

Fixed in 1.2 (helpers v3): as 0005, a pinned search_path and qualified tables.

Fixed in 1.3 (helpers v4): as 0005.
"""

from collections.abc import Sequence

from enrollments_phase1.migrations.shared.v4.steps import keep_coverage

# revision identifiers, used by Alembic.
revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply the sync trigger where 1.0.0 left it out, a catch-up backfill, the gate."""
    keep_coverage(revision, gate="after_repair")


def downgrade() -> None:
    """Unapply: nothing. The trigger belongs to 0004, whose downgrade drops it."""
