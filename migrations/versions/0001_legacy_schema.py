"""legacy schema as production has it

Revision ID: 0001
Revises:
Create Date: 2026-11-25 21:30:00

The tables of the contract (docs/contract.md), with PostgreSQL's default names for
primary keys, foreign keys and the unique constraint on schools.name. An existing
production database is brought under Alembic with ``alembic stamp 0001``.

Fixed in 1.1 (helpers v2): the upgrade refuses, naming ``alembic stamp 0001``, where the
tables exist already; the downgrade refuses to drop tables that hold rows unless
``-x drop_legacy_schema=yes`` (online and in the offline script).

Fixed in 1.2 (helpers v3): every statement of a run now executes with ``search_path =
pg_catalog, pg_temp``, so that nothing planted in a writable schema runs as the migration
role; the tables are created in the legacy schema by name (the run's, ``public`` by
default).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from enrollments_phase1.migrations.shared.v4.legacy import (
    drop_tables,
    legacy_schema,
    refuse_to_drop_tables_with_rows,
    refuse_unstamped_legacy_schema,
)

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply the legacy schema (refused where it exists already: stamp it instead)."""
    refuse_unstamped_legacy_schema()
    schema = legacy_schema()
    op.create_table(
        "schools",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("id", name="schools_pkey"),
        sa.UniqueConstraint("name", name="schools_name_key"),
        schema=schema,
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("school_id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(20), server_default=sa.text("'student'"), nullable=False),
        sa.Column("archived", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.PrimaryKeyConstraint("id", name="users_pkey"),
        sa.ForeignKeyConstraint(
            ["school_id"], [f"{schema}.schools.id"], name="users_school_id_fkey", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("school_id", "email", name="uq_user_email_per_school"),
        schema=schema,
    )
    op.create_table(
        "courses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("school_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("code", sa.String(50), nullable=True),
        sa.Column("is_active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.PrimaryKeyConstraint("id", name="courses_pkey"),
        sa.ForeignKeyConstraint(
            ["school_id"],
            [f"{schema}.schools.id"],
            name="courses_school_id_fkey",
            ondelete="CASCADE",
        ),
        schema=schema,
    )
    op.create_table(
        "groups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("school_id", sa.Integer(), nullable=False),
        sa.Column("course_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("team_number", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="groups_pkey"),
        sa.ForeignKeyConstraint(
            ["course_id"],
            [f"{schema}.courses.id"],
            name="groups_course_id_fkey",
            ondelete="CASCADE",
        ),
        schema=schema,
    )
    op.create_index("ix_group_course", "groups", ["course_id"], schema=schema)
    op.create_table(
        "group_members",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("school_id", sa.Integer(), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("role_in_team", sa.String(50), nullable=True),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=True),
        sa.PrimaryKeyConstraint("id", name="group_members_pkey"),
        sa.ForeignKeyConstraint(
            ["group_id"],
            [f"{schema}.groups.id"],
            name="group_members_group_id_fkey",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            [f"{schema}.users.id"],
            name="group_members_user_id_fkey",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("group_id", "user_id", name="uq_member_once"),
        schema=schema,
    )
    op.create_index("ix_member_user", "group_members", ["user_id"], schema=schema)
    op.create_table(
        "course_enrollments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("course_id", sa.Integer(), nullable=False),
        sa.Column("student_id", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.PrimaryKeyConstraint("id", name="course_enrollments_pkey"),
        sa.ForeignKeyConstraint(
            ["course_id"],
            [f"{schema}.courses.id"],
            name="course_enrollments_course_id_fkey",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["student_id"],
            [f"{schema}.users.id"],
            name="course_enrollments_student_id_fkey",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("course_id", "student_id", name="uq_course_enrollment_once"),
        schema=schema,
    )
    op.create_index(
        "ix_course_enrollment_course", "course_enrollments", ["course_id"], schema=schema
    )
    op.create_index(
        "ix_course_enrollment_student", "course_enrollments", ["student_id"], schema=schema
    )


def downgrade() -> None:
    """Unapply the legacy schema: drop its tables, dependents first; refused while they
    hold rows, unless ``-x drop_legacy_schema=yes``."""
    refuse_to_drop_tables_with_rows()
    drop_tables()
