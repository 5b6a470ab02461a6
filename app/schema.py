"""Checks that the database has the schema the commands read, before they read it."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

from app.errors import SchemaError

# Revision ids this release knows; tests/test_schema_check.py keeps it equal to the scripts.
KNOWN_REVISIONS = ("0001", "0002", "0003", "0004", "0005")

REQUIRED_COLUMNS = {
    "schools": ("id",),
    "users": ("id", "school_id", "email", "name", "role"),
    "courses": ("id", "school_id", "name"),
    "groups": ("id", "course_id"),
    "group_members": ("id", "group_id", "user_id", "active"),
    "course_enrollments": ("id", "course_id", "student_id", "active"),
}


def check_schema(connection: Connection) -> str | None:
    """Raise :class:`SchemaError` unless the legacy tables are there; return the revision.

    A database never put under Alembic (``alembic_version`` missing) is accepted: that is
    production before ``alembic stamp 0001``. A revision this release does not know is not.
    """
    rows = connection.execute(
        text(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema()"
            " AND table_name IN ('schools', 'users', 'courses', 'groups', 'group_members',"
            " 'course_enrollments', 'alembic_version')"
        )
    ).all()
    present: dict[str, set[str]] = {}
    for table, column in rows:
        present.setdefault(table, set()).add(column)
    missing_tables = [t for t in REQUIRED_COLUMNS if t not in present]
    if missing_tables:
        raise SchemaError(
            f"table(s) {', '.join(missing_tables)} missing: the database is not migrated; "
            "run alembic upgrade head (or alembic stamp 0001 on a legacy database)"
        )
    for table, columns in REQUIRED_COLUMNS.items():
        lacking = [c for c in columns if c not in present[table]]
        if lacking:
            raise SchemaError(f"table {table} lacks column(s) {', '.join(lacking)}")
    if "alembic_version" not in present:
        return None
    versions = [r[0] for r in connection.execute(text("SELECT version_num FROM alembic_version"))]
    unknown = [v for v in versions if v not in KNOWN_REVISIONS]
    if unknown:
        raise SchemaError(
            f"database is at revision {', '.join(unknown)}, which this release does not know "
            f"(known: {', '.join(KNOWN_REVISIONS)}); use the release that wrote it"
        )
    return versions[0] if versions else None
