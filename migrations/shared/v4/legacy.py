"""Guards around the legacy schema (revision 0001), which production already has."""

from __future__ import annotations

from alembic import op
from alembic.util import CommandError

from enrollments_phase1.migration_env import MigrationSettings
from enrollments_phase1.migrations.shared.v4.run import is_offline, tables

LEGACY_TABLES = ("schools", "users", "courses", "groups", "group_members", "course_enrollments")


def refuse_unstamped_legacy_schema() -> None:
    """Online, before 0001 creates the tables: stop if they exist already.

    That is a production database never put under Alembic: it is stamped, not created.
    Legacy tables in another schema than the one this run creates them in stop it too:
    it would create empty ones beside them. (Offline, the script's start check says the
    same before anything runs.)
    """
    if is_offline():
        return
    t = tables()
    bind = op.get_bind()
    elsewhere = bind.exec_driver_sql(
        "SELECT pg_catalog.string_agg(DISTINCT n.nspname, ', ') FROM pg_catalog.pg_class AS c"
        " JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace"
        f" WHERE c.relname = 'schools' AND c.relkind IN ('r', 'p') AND n.nspname <> {t.literal}"
        f" AND {t.regclass('schools')} IS NULL"
    ).scalar()
    if elsewhere:
        raise CommandError(
            f"the legacy tables are in schema {elsewhere}, not in {t.schema} where this run "
            f"would create empty ones beside them: put that schema first on the search_path "
            f"(in the URL: ?options=-csearch_path%3D{elsewhere}) or name it with "
            f"-x legacy_schema={elsewhere}, then alembic stamp 0001 if the database was never "
            "stamped"
        )
    found = [
        name
        for name in LEGACY_TABLES
        if bind.exec_driver_sql(f"SELECT {t.regclass(name)}").scalar() is not None
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
    t = tables()
    if is_offline():
        checks = "\n       OR ".join(
            f"EXISTS (SELECT 1 FROM {getattr(t, name)})" for name in LEGACY_TABLES
        )
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
        name
        for name in LEGACY_TABLES
        if bind.exec_driver_sql(f"SELECT EXISTS (SELECT 1 FROM {getattr(t, name)})").scalar()
    ]
    if holding:
        raise CommandError(
            f"refusing to drop the legacy tables: {', '.join(holding)} hold rows (production "
            "data); to drop them anyway (tests, empty databases): "
            "alembic -x drop_legacy_schema=yes downgrade base"
        )


def legacy_schema() -> str:
    """The schema 0001 creates the tables in (the run's legacy schema)."""
    return tables().schema


def drop_tables() -> None:
    """0001's downgrade: drop the legacy tables, dependents first."""
    t = tables()
    for name in ("course_enrollments", "group_members", "groups", "courses", "users", "schools"):
        op.drop_table(name, schema=t.schema)
