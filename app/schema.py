"""Checks that the database has the schema the commands read, before they read it.

Tables are found with ``to_regclass`` and columns in ``pg_attribute``, which every role
can see, and privileges are asked with ``has_table_privilege``: a role that may not read a
table is told so (exit 77), never that the database is "not migrated".
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

from app.errors import PermissionDeniedError, SchemaError

# Revision ids this release knows; tests/test_schema_check.py keeps it equal to the scripts.
KNOWN_REVISIONS = ("0001", "0002", "0003", "0004", "0005", "0006")

REQUIRED_COLUMNS = {
    "schools": ("id",),
    "users": ("id", "school_id", "email", "name", "role"),
    "courses": ("id", "school_id", "name"),
    "groups": ("id", "course_id"),
    "group_members": ("id", "group_id", "user_id", "active"),
    "course_enrollments": ("id", "course_id", "student_id", "active"),
}
WRITTEN_TABLES = {"course_enrollments": ("INSERT", "UPDATE")}

TABLES_SQL = """SELECT t.name,
    to_regclass(t.name) IS NOT NULL AS present,
    CASE WHEN to_regclass(t.name) IS NOT NULL
         THEN has_table_privilege(to_regclass(t.name), 'SELECT') END AS readable,
    CASE WHEN to_regclass(t.name) IS NOT NULL
         THEN has_table_privilege(to_regclass(t.name), 'INSERT')
              AND has_table_privilege(to_regclass(t.name), 'UPDATE') END AS writable,
    ARRAY(SELECT a.attname::text FROM pg_attribute AS a
          WHERE a.attrelid = to_regclass(t.name) AND a.attnum > 0 AND NOT a.attisdropped)
        AS columns
FROM unnest(CAST(:names AS text[])) AS t(name)"""


def check_schema(connection: Connection, writes: bool = False) -> str | None:
    """Raise unless the legacy tables are there and readable; return the revision.

    With ``writes``, the role must also be allowed to write ``course_enrollments``. A
    database never put under Alembic (``alembic_version`` missing) is accepted: that is
    production before ``alembic stamp 0001``. A revision this release does not know is not.
    """
    names = [*REQUIRED_COLUMNS, "alembic_version"]
    tables = {row.name: row for row in connection.execute(text(TABLES_SQL), {"names": names})}
    missing = [t for t in REQUIRED_COLUMNS if not tables[t].present]
    if missing:
        raise SchemaError(
            f"table(s) {', '.join(missing)} missing: the database is not migrated; "
            "run alembic upgrade head (or alembic stamp 0001 on a legacy database)"
        )
    role = connection.execute(text("SELECT current_user")).scalar_one()
    unreadable = [t for t in names if tables[t].present and not tables[t].readable]
    if unreadable:
        raise PermissionDeniedError(
            f"permission denied: role {role} may not read {', '.join(unreadable)}; "
            "grant it SELECT, or use a role that may"
        )
    if writes:
        unwritable = [t for t in WRITTEN_TABLES if not tables[t].writable]
        if unwritable:
            raise PermissionDeniedError(
                f"permission denied: role {role} may not write {', '.join(unwritable)} "
                "(INSERT and UPDATE); use a role that may"
            )
    for table, columns in REQUIRED_COLUMNS.items():
        lacking = [c for c in columns if c not in tables[table].columns]
        if lacking:
            raise SchemaError(f"table {table} lacks column(s) {', '.join(lacking)}")
    check_one_enrollment_per_pair(connection)
    if not tables["alembic_version"].present:
        return None
    versions = [r[0] for r in connection.execute(text("SELECT version_num FROM alembic_version"))]
    unknown = [v for v in versions if v not in KNOWN_REVISIONS]
    if unknown:
        raise SchemaError(
            f"database is at revision {', '.join(unknown)}, which this release does not know "
            f"(known: {', '.join(KNOWN_REVISIONS)}); use the release that wrote it"
        )
    return versions[0] if versions else None


UNIQUE_PAIR_SQL = """SELECT EXISTS (
    SELECT 1 FROM pg_index AS i
    WHERE i.indrelid = to_regclass('course_enrollments') AND i.indisunique AND i.indisvalid
      AND i.indpred IS NULL
      AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text)
           FROM unnest(i.indkey[0:i.indnkeyatts - 1]) AS k(attnum)
           JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = k.attnum)
          = ARRAY['course_id', 'student_id']
)"""


def check_one_enrollment_per_pair(connection: Connection) -> None:
    """Everything here counts one enrollment per (course, student): without the unique
    constraint (``uq_course_enrollment_once``) counts go wrong and the backfill cannot
    skip a pair the application enrolled meanwhile. Raise, naming it and any duplicates."""
    if connection.execute(text(UNIQUE_PAIR_SQL)).scalar():
        return
    duplicates = connection.execute(
        text(
            "SELECT course_id, student_id, count(*) OVER () AS pairs FROM course_enrollments"
            " GROUP BY course_id, student_id HAVING count(*) > 1"
            " ORDER BY course_id, student_id LIMIT 1"
        )
    ).first()
    found = (
        f"; {duplicates.pairs:,} (course, student) pairs have more than one enrollment, "
        f"the first (course {duplicates.course_id}, student {duplicates.student_id})"
        if duplicates
        else ""
    )
    raise SchemaError(
        "course_enrollments has no unique constraint on (course_id, student_id) "
        f"(uq_course_enrollment_once is missing){found}: counts would be wrong; remove the "
        "duplicates, then ALTER TABLE course_enrollments ADD CONSTRAINT "
        "uq_course_enrollment_once UNIQUE (course_id, student_id)"
    )
