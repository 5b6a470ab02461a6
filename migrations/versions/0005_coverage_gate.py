"""coverage gate: every eligible pair has an active enrollment

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 21:55:00

Nothing past the backfill may rely on ``course_enrollments`` until it covers every
eligible (student, course) pair. This revision runs the coverage gate and stops the
upgrade below 100% (online before it records anything; offline a DO block that raises, so
psql stops there). ``-x coverage_gate=warn`` overrides it for emergencies, loudly. Later
revisions that need full coverage call ``require_full_coverage(revision)`` first.

Fixed in 1.1 (helpers v2), because the gate failed every live deploy and could crash:

- it first makes sure coverage is kept: where the sync trigger is missing (a database
  1.0.0 left at 0004, or a downgrade cut short) it installs it and catches up with a
  backfill; with the trigger installed, coverage at the gate holds from then on;
- pairs are (student_id, course_id), never packed into one number: any int4 id works;
- its counts and the pairs it names come from one REPEATABLE READ snapshot, and the
  server keeps no list of every gap to name the first ten.

Fixed in 1.2 (helpers v3): the gate's PL/pgSQL runs with ``search_path = pg_catalog,
pg_temp`` and names the schema of its tables (a function planted in a writable schema,
``unnest`` or ``format`` of the exact types, would have run as the migration role); a
repair installs this version's sync trigger.

Fixed in 1.3 (helpers v4): a repair installs helpers v4's sync trigger (see 0004).
"""

from collections.abc import Sequence

from enrollments_phase1.migrations.shared.v4.steps import keep_coverage

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply the coverage gate, after making sure the sync trigger keeps coverage."""
    keep_coverage(revision, gate="always")


def downgrade() -> None:
    """Unapply the coverage gate: a check only, nothing to undo."""
