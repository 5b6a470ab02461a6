"""Checks that the database has the schema the commands read, before they read it.

Tables are found with ``to_regclass`` and columns in ``pg_attribute``, which every role
can see, and privileges are asked with ``has_table_privilege``: a role that may not read a
table is told so (exit 77), never that the database is "not migrated".
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import text
from sqlalchemy.engine import Connection

from enrollments_phase1.errors import PermissionDeniedError, SchemaError
from enrollments_phase1.names import Tables, quote_literal

# Revision ids this release knows; tests/test_schema_check.py keeps it equal to the scripts.
KNOWN_REVISIONS = ("0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008")

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
    r.oid IS NOT NULL AS present,
    CASE WHEN r.oid IS NOT NULL THEN has_table_privilege(r.oid, 'SELECT') END AS readable,
    CASE WHEN r.oid IS NOT NULL
         THEN has_table_privilege(r.oid, 'INSERT') AND has_table_privilege(r.oid, 'UPDATE')
    END AS writable,
    ARRAY(SELECT a.attname::text FROM pg_attribute AS a
          WHERE a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped) AS columns
FROM unnest(CAST(:names AS text[]), CAST(:qualified AS text[])) AS t(name, qualified)
CROSS JOIN LATERAL (SELECT to_regclass(t.qualified) AS oid) AS r"""


def _tables(connection: Connection, t: Tables, alembic_version: str | None = None) -> dict:
    """Each legacy table in ``t``'s schema (and ``alembic_version`` where given): a row of
    :data:`TABLES_SQL` by name."""
    names, qualified = list(REQUIRED_COLUMNS), [getattr(t, n) for n in REQUIRED_COLUMNS]
    if alembic_version is not None:
        names.append("alembic_version")
        qualified.append(alembic_version)
    rows = connection.execute(text(TABLES_SQL), {"names": names, "qualified": qualified})
    return {row.name: row for row in rows}


def _lacking_columns(tables: dict) -> Iterator[tuple[str, list[str]]]:
    """(table, the required columns it lacks), for each present table that lacks some."""
    for table, columns in REQUIRED_COLUMNS.items():
        lacking = [c for c in columns if c not in tables[table].columns]
        if tables[table].present and lacking:
            yield table, lacking


def check_schema(
    connection: Connection, t: Tables, version: Tables | None = None, writes: bool = False
) -> str | None:
    """Raise unless the legacy tables are there (in ``t``'s schema) and readable; return
    the revision (``alembic_version`` in ``version``'s schema, when there is one).

    With ``writes``, the role must also be allowed to write ``course_enrollments``. A
    database never put under Alembic (``alembic_version`` missing) is accepted: that is
    production before ``alembic stamp 0001``. A revision this release does not know is not.
    """
    names = [*REQUIRED_COLUMNS, "alembic_version"]
    tables = _tables(
        connection, t, alembic_version=version.alembic_version if version else t.alembic_version
    )
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
    for table, lacking in _lacking_columns(tables):
        raise SchemaError(f"table {table} lacks column(s) {', '.join(lacking)}")
    check_one_enrollment_per_pair(connection, t)
    if not tables["alembic_version"].present:
        return None
    where = version.alembic_version if version else t.alembic_version
    versions = [r[0] for r in connection.execute(text(f"SELECT version_num FROM {where}"))]
    unknown = [v for v in versions if v not in KNOWN_REVISIONS]
    if unknown:
        raise SchemaError(
            f"database is at revision {', '.join(unknown)}, which this release does not know "
            f"(known: {', '.join(KNOWN_REVISIONS)}); use the release that wrote it"
        )
    return versions[0] if versions else None


UNIQUE_PAIR_SQL = """SELECT EXISTS (
    SELECT 1 FROM pg_index AS i
    WHERE i.indrelid = to_regclass({table}) AND i.indisunique AND i.indisvalid
      AND i.indpred IS NULL
      AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text)
           FROM unnest(i.indkey[0:i.indnkeyatts - 1]) AS k(attnum)
           JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = k.attnum)
          = ARRAY['course_id', 'student_id']
)"""


def check_one_enrollment_per_pair(connection: Connection, t: Tables) -> None:
    """Everything here counts one enrollment per (course, student): without the unique
    constraint (``uq_course_enrollment_once``) counts go wrong and the backfill cannot
    skip a pair the application enrolled meanwhile. Raise, naming it and any duplicates."""
    unique = UNIQUE_PAIR_SQL.format(table=quote_literal(t.course_enrollments))
    if connection.exec_driver_sql(unique).scalar():
        return
    duplicates = connection.execute(
        text(
            f"SELECT course_id, student_id, count(*) OVER () AS pairs FROM {t.course_enrollments}"
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


SYNC_FUNCTIONS = (
    "course_enrollments_sync_members",
    "course_enrollments_sync_user",
    "course_enrollments_sync_group",
    "course_enrollments_sync_course",
    "course_enrollments_sync_apply",
)

SECURITY_SQL = """SELECT
    (SELECT string_agg(DISTINCT r.rolname, ', ') FROM pg_proc AS p
     JOIN pg_roles AS r ON r.oid = p.proowner
     WHERE p.pronamespace = {schema}::regnamespace AND p.proname = ANY ({functions})
       AND r.rolsuper) AS superuser_owner,
    EXISTS (SELECT 1 FROM pg_proc AS p,
            aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) AS a
            WHERE p.pronamespace = {schema}::regnamespace AND p.proname = ANY ({functions})
              AND a.grantee = 0 AND a.privilege_type = 'EXECUTE') AS public_execute,
    ARRAY(SELECT DISTINCT n.nspname::text FROM pg_namespace AS n,
          aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) AS a
          WHERE n.nspname IN ('public', {schema}) AND a.grantee = 0
            AND a.privilege_type = 'CREATE' ORDER BY 1) AS writable,
    ARRAY(SELECT DISTINCT c.relname::text FROM pg_class AS c,
          aclexplode(c.relacl) AS a
          WHERE c.relnamespace = {schema}::regnamespace
            AND c.relname IN ('enrollment_backfill_changes', 'enrollment_backfill_runs',
                              'enrollment_backfill_batches', 'enrollment_backfill_claims',
                              'enrollment_backfill_candidates',
                              'course_enrollments_sync_pending')
            AND a.grantee = 0 ORDER BY 1) AS public_tables,
    (SELECT r.rolname FROM pg_class AS c JOIN pg_roles AS r ON r.oid = c.relowner
     WHERE c.oid = to_regclass({enrollments}) AND NOT r.rolsuper) AS table_owner"""


def security_warnings(connection: Connection, t: Tables) -> list[str]:
    """What in this database lets a role do more than its grants allow, each with what to
    change: the sync trigger's functions owned by a superuser (the migration ran as one),
    callable by every role (as 1.1.0 left them), a schema every role may create in, the
    backfill's tables readable by every role."""
    row = connection.exec_driver_sql(
        SECURITY_SQL.format(
            schema=t.literal,
            functions="ARRAY[" + ", ".join(quote_literal(f) for f in SYNC_FUNCTIONS) + "]",
            enrollments=quote_literal(t.course_enrollments),
        )
    ).one()
    warnings = []
    if row.superuser_owner:
        owner = row.table_owner or "a role without SUPERUSER that owns the legacy tables"
        role = row.table_owner or "<that role>"
        warnings.append(
            f"the sync trigger's functions belong to superuser {row.superuser_owner}, so they "
            "run with every privilege (the migrations ran as a superuser): run the migrations "
            f"as {owner}, and give it the functions: ALTER FUNCTION "
            f'"{t.schema}".course_enrollments_sync_members() OWNER TO {role}, and the same for '
            "the four others"
        )
    if row.public_execute:
        warnings.append(
            "every role may call the sync trigger's functions (EXECUTE granted to PUBLIC, as "
            "1.1.0 left them) and write enrollments through them: alembic upgrade head "
            "(revision 0007) revokes it"
        )
    for schema in row.writable:
        warnings.append(
            f"every role may create objects in schema {schema} (CREATE granted to PUBLIC, "
            "the default before PostgreSQL 15), where they can stand in for operators and "
            f"functions: REVOKE CREATE ON SCHEMA {schema} FROM PUBLIC"
        )
    for table in row.public_tables:
        warnings.append(
            f"table {table} grants privileges to PUBLIC: REVOKE ALL ON {t.schema}.{table} "
            "FROM PUBLIC"
        )
    return warnings


def check_stamp_target(connection: Connection, t: Tables) -> None:
    """Before ``alembic stamp`` records a revision: the legacy tables it stands for are
    there, each with the legacy columns (an empty database, or one with an unrelated
    ``group_members``, is refused: stamping it would let every later revision run on
    tables that are not the legacy ones)."""
    rows = _tables(connection, t)
    missing = [n for n in REQUIRED_COLUMNS if not rows[n].present]
    if missing:
        raise SchemaError(
            f"stamp refused: the legacy tables revision 0001 stands for are not in schema "
            f"{t.schema}: {', '.join(missing)} missing; nothing was stamped (on an empty "
            "database, alembic upgrade head creates them; elsewhere name their schema with "
            "-x legacy_schema=NAME)"
        )
    for table, lacking in _lacking_columns(rows):
        raise SchemaError(
            f"stamp refused: table {getattr(t, table)} is not the legacy one: it lacks "
            f"column(s) {', '.join(lacking)}; nothing was stamped"
        )
