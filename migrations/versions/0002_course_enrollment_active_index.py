"""index course_enrollments (course_id, active) concurrently

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 21:40:00

Schema only. The app's "active students of a course" query reads
``course_enrollments`` by (course_id, active). Built with CREATE INDEX CONCURRENTLY in
an autocommit block so writes go on during the build; re-runnable.

Fixed in 1.1 (helpers v2): the build waits for older transactions without a
``lock_timeout`` (saying every few seconds which pids it waits for) instead of failing
and leaving an INVALID index; an INVALID leftover is dropped with ``DROP INDEX
CONCURRENTLY``; ``indisvalid`` is checked before the revision is recorded.

Fixed in 1.2 (helpers v3): the build no longer sets ``lock_timeout`` for the session, which
through a connection pooler was left on a server connection for other clients: on a direct
connection it is set for the build alone and reset; through a pooler and in the script the
server's own setting applies. The table is named with its schema.
"""

from collections.abc import Sequence

from enrollments_phase1.migrations.shared.v4.indexes import (
    create_index_concurrently,
    drop_index_concurrently,
)

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_course_enrollment_course_active"


def upgrade() -> None:
    """Apply the (course_id, active) index."""
    create_index_concurrently(INDEX, "course_enrollments", ["course_id", "active"])


def downgrade() -> None:
    """Unapply the (course_id, active) index."""
    drop_index_concurrently(INDEX)
