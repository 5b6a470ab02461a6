"""Guards around the legacy schema (revision 0001), which production already has."""

from __future__ import annotations

from alembic import op
from alembic.util import CommandError

from migrations.shared.v2.run import is_offline

LEGACY_TABLES = ("schools", "users", "courses", "groups", "group_members", "course_enrollments")


def refuse_unstamped_legacy_schema() -> None:
    """Online, before 0001 creates the tables: stop if they exist already.

    That is a production database never put under Alembic: it is stamped, not created.
    (Offline, the script's start check says the same before anything runs.)
    """
    if is_offline():
        return
    found = [
        name
        for name in LEGACY_TABLES
        if op.get_bind().exec_driver_sql(f"SELECT to_regclass('{name}')").scalar() is not None
    ]
    if found:
        raise CommandError(
            f"the legacy tables exist already ({', '.join(found)}) but alembic_version does "
            "not: this database was never stamped; run alembic stamp 0001 once, then "
            "alembic upgrade head"
        )
