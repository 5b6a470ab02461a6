"""harden the sync trigger: safe definers, enrollments written at commit

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 13:00:00

1.1.0 left its sync trigger functions callable by every role (``EXECUTE`` granted to
PUBLIC) and open to objects planted in ``public`` or in a session's temporary schema, and
its trigger wrote enrollments inside the application's statement, adding deadlocks. Here
every database gets the sync trigger as helpers v3 install it:

- the functions replaced: ``SECURITY DEFINER`` with ``search_path = pg_catalog, pg_temp``,
  every table, function and operator qualified, refusing to run for any other table;
- ``EXECUTE`` on them revoked from PUBLIC; the bookkeeping tables grant nothing to PUBLIC;
- the triggers queue what changed, and a deferred constraint trigger enrolls it at commit;
- a trigger that calls a function outside the legacy schema is re-created, and sync
  functions left elsewhere are dropped.

Replacing a function locks no table: on a database 1.1.0 left at 0006 the application
goes on writing throughout. Where helpers v3 installed the trigger (0004 since 1.2) this
changes nothing.

Fixed in 1.3 (helpers v4): it installs helpers v4's sync trigger (see 0004); 0008 brings it
to databases 1.2.0 left at 0007.
"""

from collections.abc import Sequence

from enrollments_phase1.migrations.shared.v4.steps import harden_sync_trigger

# revision identifiers, used by Alembic.
revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply the hardened sync trigger and privileges."""
    harden_sync_trigger(revision)


def downgrade() -> None:
    """Unapply: nothing. 1.1.0's functions are not put back: they let any role write
    enrollments. The hardened ones stay, and 0004's downgrade removes them."""
