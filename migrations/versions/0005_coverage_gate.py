"""coverage gate: every eligible pair has an active enrollment

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 21:55:00

Nothing past the backfill may rely on ``course_enrollments`` until it covers every
eligible (student, course) pair. This revision runs the coverage audit and stops the
upgrade below 100% (online: before it locks or writes anything; offline: a DO block
that raises, so psql -v ON_ERROR_STOP=1 stops there). ``-x coverage_gate=warn``
overrides it for emergencies, loudly. Later revisions that need full coverage call
``require_full_coverage(revision)`` first in their ``upgrade()``.
"""

from collections.abc import Sequence

from migrations.shared.v1.helpers import require_full_coverage

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply the coverage gate: abort below 100% coverage."""
    require_full_coverage(revision)


def downgrade() -> None:
    """Unapply the coverage gate: a check only, nothing to undo."""
