"""Guards around the legacy schema (revision 0001), which production already has."""

from __future__ import annotations

from alembic import op
from alembic.util import CommandError

from app.migration_env import MigrationSettings
from migrations.shared.v2.run import is_offline

LEGACY_TABLES = ("schools", "users", "courses", "groups", "group_members", "course_enrollments")


def refuse_unstamped_legacy_schema() -> None:
    """Online, before 0001 creates the tables: stop if they exist already.

    That is a production database never put under Alembic: it is stamped, not created.
    (Offline, the script's start check says the same before anything runs.)
    """
    if is_offline():
        return
    elsewhere = (
        op.get_bind()
        .exec_driver_sql(
            "SELECT string_agg(DISTINCT n.nspname, ', ') FROM pg_class AS c"
            " JOIN pg_namespace AS n ON n.oid = c.relnamespace"
            " WHERE c.relname = 'schools' AND c.relkind IN ('r', 'p')"
            " AND n.nspname <> ALL (current_schemas(false)) AND to_regclass('schools') IS NULL"
        )
        .scalar()
    )
    if elsewhere:
        path = op.get_bind().exec_driver_sql("SHOW search_path").scalar()
        raise CommandError(
            f"the legacy tables are in schema {elsewhere}, which the search_path ({path}) "
            f"does not show: this would create empty ones beside them; connect with that "
            f"schema first on the search_path (in the URL: ?options=-csearch_path%3D{elsewhere}"
            "), then alembic stamp 0001 if the database was never stamped"
        )
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


def refuse_to_drop_tables_with_rows() -> None:
    """Before 0001's downgrade drops the legacy tables: stop if any holds a row.

    They are production's tables; dropping them with their data takes
    ``-x drop_legacy_schema=yes`` (for tests and empty databases). Online and in the
    offline script alike.
    """
    if MigrationSettings.current().drop_legacy_schema:
        return
    if is_offline():
        checks = "\n       OR ".join(f"EXISTS (SELECT 1 FROM {t})" for t in LEGACY_TABLES)
        op.execute(
            f"""-- Stop unless the legacy tables are empty: they are production's data.
DO $refuse$
BEGIN
    IF {checks} THEN
        RAISE EXCEPTION 'refusing to drop the legacy tables: they hold rows (production data)'
            USING HINT = 'to drop them anyway (tests, empty databases): alembic -x drop_legacy_schema=yes downgrade base';
    END IF;
END
$refuse$"""
        )
        return
    bind = op.get_bind()
    holding = [
        t
        for t in LEGACY_TABLES
        if bind.exec_driver_sql(f"SELECT EXISTS (SELECT 1 FROM {t})").scalar()
    ]
    if holding:
        raise CommandError(
            f"refusing to drop the legacy tables: {', '.join(holding)} hold rows (production "
            "data); to drop them anyway (tests, empty databases): "
            "alembic -x drop_legacy_schema=yes downgrade base"
        )
