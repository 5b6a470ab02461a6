"""Revision 0001 creates exactly the legacy schema of ../shared/CONTRACT.md."""

from sqlalchemy import text

from enrollments_phase1 import lock
from tests.helpers import LEGACY_TABLE_NAMES, alembic

# (table, column) -> (type, nullable, default)
CONTRACT_COLUMNS = {
    ("schools", "id"): ("integer", "NO", "nextval('schools_id_seq'::regclass)"),
    ("schools", "name"): ("character varying(200)", "NO", None),
    ("users", "id"): ("integer", "NO", "nextval('users_id_seq'::regclass)"),
    ("users", "school_id"): ("integer", "NO", None),
    ("users", "email"): ("character varying(320)", "NO", None),
    ("users", "name"): ("character varying(200)", "NO", None),
    ("users", "role"): ("character varying(20)", "NO", "'student'::character varying"),
    ("users", "archived"): ("boolean", "NO", "false"),
    ("courses", "id"): ("integer", "NO", "nextval('courses_id_seq'::regclass)"),
    ("courses", "school_id"): ("integer", "NO", None),
    ("courses", "name"): ("character varying(200)", "NO", None),
    ("courses", "code"): ("character varying(50)", "YES", None),
    ("courses", "is_active"): ("boolean", "NO", "true"),
    ("groups", "id"): ("integer", "NO", "nextval('groups_id_seq'::regclass)"),
    ("groups", "school_id"): ("integer", "NO", None),
    ("groups", "course_id"): ("integer", "NO", None),
    ("groups", "name"): ("character varying(100)", "NO", None),
    ("groups", "team_number"): ("integer", "YES", None),
    ("group_members", "id"): ("integer", "NO", "nextval('group_members_id_seq'::regclass)"),
    ("group_members", "school_id"): ("integer", "NO", None),
    ("group_members", "group_id"): ("integer", "NO", None),
    ("group_members", "user_id"): ("integer", "NO", None),
    ("group_members", "role_in_team"): ("character varying(50)", "YES", None),
    ("group_members", "active"): ("boolean", "YES", "true"),
    ("course_enrollments", "id"): (
        "integer",
        "NO",
        "nextval('course_enrollments_id_seq'::regclass)",
    ),
    ("course_enrollments", "course_id"): ("integer", "NO", None),
    ("course_enrollments", "student_id"): ("integer", "NO", None),
    ("course_enrollments", "active"): ("boolean", "NO", "true"),
}

# (table, constraint name, type, definition)
CONTRACT_CONSTRAINTS = {
    ("schools", "schools_pkey", "PRIMARY KEY (id)"),
    ("schools", "schools_name_key", "UNIQUE (name)"),
    ("users", "users_pkey", "PRIMARY KEY (id)"),
    (
        "users",
        "users_school_id_fkey",
        "FOREIGN KEY (school_id) REFERENCES schools(id) ON DELETE CASCADE",
    ),
    ("users", "uq_user_email_per_school", "UNIQUE (school_id, email)"),
    ("courses", "courses_pkey", "PRIMARY KEY (id)"),
    (
        "courses",
        "courses_school_id_fkey",
        "FOREIGN KEY (school_id) REFERENCES schools(id) ON DELETE CASCADE",
    ),
    ("groups", "groups_pkey", "PRIMARY KEY (id)"),
    (
        "groups",
        "groups_course_id_fkey",
        "FOREIGN KEY (course_id) REFERENCES courses(id) ON DELETE CASCADE",
    ),
    ("group_members", "group_members_pkey", "PRIMARY KEY (id)"),
    (
        "group_members",
        "group_members_group_id_fkey",
        "FOREIGN KEY (group_id) REFERENCES groups(id) ON DELETE CASCADE",
    ),
    (
        "group_members",
        "group_members_user_id_fkey",
        "FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE",
    ),
    ("group_members", "uq_member_once", "UNIQUE (group_id, user_id)"),
    ("course_enrollments", "course_enrollments_pkey", "PRIMARY KEY (id)"),
    (
        "course_enrollments",
        "course_enrollments_course_id_fkey",
        "FOREIGN KEY (course_id) REFERENCES courses(id) ON DELETE CASCADE",
    ),
    (
        "course_enrollments",
        "course_enrollments_student_id_fkey",
        "FOREIGN KEY (student_id) REFERENCES users(id) ON DELETE CASCADE",
    ),
    ("course_enrollments", "uq_course_enrollment_once", "UNIQUE (course_id, student_id)"),
}

# Indexes that are not behind a constraint.
CONTRACT_INDEXES = {
    ("groups", "ix_group_course", "(course_id)"),
    ("group_members", "ix_member_user", "(user_id)"),
    ("course_enrollments", "ix_course_enrollment_course", "(course_id)"),
    ("course_enrollments", "ix_course_enrollment_student", "(student_id)"),
}


def test_upgrade_0001_creates_exactly_the_contract_schema(database_url, engine):
    result = alembic(database_url, "upgrade", "0001")
    assert result.returncode == 0, result.stderr

    with engine.connect() as conn:
        tables = set(
            conn.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            ).scalars()
        )
        columns = {
            (r.table_name, r.column_name): (r.type, r.is_nullable, r.column_default)
            for r in conn.execute(
                text(
                    "SELECT c.table_name, c.column_name, c.is_nullable, c.column_default,"
                    " format_type(a.atttypid, a.atttypmod) AS type"
                    " FROM information_schema.columns AS c"
                    " JOIN pg_attribute AS a ON a.attrelid = c.table_name::regclass"
                    "  AND a.attname = c.column_name"
                    " WHERE c.table_schema = 'public' AND c.table_name <> 'alembic_version'"
                )
            )
        }
        constraints = {
            (r[0], r[1], r[2])
            for r in conn.execute(
                text(
                    "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)"
                    " FROM pg_constraint WHERE connamespace = 'public'::regnamespace"
                    " AND conrelid <> 'alembic_version'::regclass AND contype <> 'n'"
                )
            )
        }
        indexes = {
            (r[0], r[1], r[2][r[2].index("(") :])
            for r in conn.execute(
                text(
                    "SELECT tablename, indexname, indexdef FROM pg_indexes"
                    " WHERE schemaname = 'public' AND indexname NOT IN"
                    " (SELECT conname FROM pg_constraint) AND tablename <> 'alembic_version'"
                )
            )
        }

    # The enrollments lock's table comes with the first run that writes, as alembic_version.
    assert tables == {"alembic_version", lock.TABLE, *LEGACY_TABLE_NAMES}
    assert columns == CONTRACT_COLUMNS
    assert constraints == CONTRACT_CONSTRAINTS
    assert indexes == CONTRACT_INDEXES
