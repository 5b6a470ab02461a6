"""Typed declarative models of the schema at ``head``.

Used by the application and by pytest-alembic's ``test_model_definitions_match_ddl``
(``migrations/env.py`` gives it to autogenerate). Revisions never
import this module: what they run lives in their versioned helpers
(``migrations/shared/vN``) and is pinned
(``migrations/pinned/``), so that a revision does the same in a year as
it does today.

Constraint names are written out and equal PostgreSQL's own defaults, so a production
database created by the legacy application and one created by revision ``0001`` agree.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, INTERVAL, JSONB
from sqlalchemy.dialects.postgresql import base as postgresql_base
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import UserDefinedType


class Base(DeclarativeBase):
    """Declarative base; ``Base.metadata`` is what autogenerate compares with."""


class School(Base):
    __tablename__ = "schools"
    __table_args__ = (UniqueConstraint("name", name="schools_name_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("school_id", "email", name="uq_user_email_per_school"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    school_id: Mapped[int] = mapped_column(
        ForeignKey("schools.id", ondelete="CASCADE", name="users_school_id_fkey"), nullable=False
    )
    email: Mapped[str] = mapped_column(String(320), nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    role: Mapped[str] = mapped_column(String(20), nullable=False, server_default=text("'student'"))
    archived: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))


class Course(Base):
    __tablename__ = "courses"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    school_id: Mapped[int] = mapped_column(
        ForeignKey("schools.id", ondelete="CASCADE", name="courses_school_id_fkey"), nullable=False
    )
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    code: Mapped[str | None] = mapped_column(String(50), nullable=True)
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))


class Group(Base):
    __tablename__ = "groups"
    __table_args__ = (Index("ix_group_course", "course_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    school_id: Mapped[int] = mapped_column(Integer, nullable=False)
    course_id: Mapped[int] = mapped_column(
        ForeignKey("courses.id", ondelete="CASCADE", name="groups_course_id_fkey"), nullable=False
    )
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    team_number: Mapped[int | None] = mapped_column(Integer, nullable=True)


class GroupMember(Base):
    """Legacy membership; ``active`` is nullable and NULL counts as inactive."""

    __tablename__ = "group_members"
    __table_args__ = (
        UniqueConstraint("group_id", "user_id", name="uq_member_once"),
        Index("ix_member_user", "user_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    school_id: Mapped[int] = mapped_column(Integer, nullable=False)
    group_id: Mapped[int] = mapped_column(
        ForeignKey("groups.id", ondelete="CASCADE", name="group_members_group_id_fkey"),
        nullable=False,
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE", name="group_members_user_id_fkey"),
        nullable=False,
    )
    role_in_team: Mapped[str | None] = mapped_column(String(50), nullable=True)
    active: Mapped[bool | None] = mapped_column(Boolean, nullable=True, server_default=text("true"))


class CourseEnrollment(Base):
    """Phase 1's source of truth for which student takes which course."""

    __tablename__ = "course_enrollments"
    __table_args__ = (
        UniqueConstraint("course_id", "student_id", name="uq_course_enrollment_once"),
        Index("ix_course_enrollment_course", "course_id"),
        Index("ix_course_enrollment_student", "student_id"),
        # Revision 0002: the app's "active students of a course" query.
        Index("ix_course_enrollment_course_active", "course_id", "active"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    course_id: Mapped[int] = mapped_column(
        ForeignKey("courses.id", ondelete="CASCADE", name="course_enrollments_course_id_fkey"),
        nullable=False,
    )
    student_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE", name="course_enrollments_student_id_fkey"),
        nullable=False,
    )
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))


class EnrollmentBackfillChange(Base):
    """Revision 0003: what a backfill changed, so that a downgrade undoes exactly that.

    One row per enrollment (its first backfill change), with the row version the backfill
    wrote (``row_xmin``; none for rows 1.0.0 recorded). No foreign key to
    ``course_enrollments``: a record of a row deleted since must survive, so the downgrade
    can tell it was changed since.
    """

    __tablename__ = "enrollment_backfill_changes"
    __table_args__ = (
        PrimaryKeyConstraint("revision", "enrollment_id", name="enrollment_backfill_changes_pkey"),
        CheckConstraint(
            "action IN ('created', 'reactivated')", name="ck_enrollment_backfill_changes_action"
        ),
        Index("uq_enrollment_backfill_changes_enrollment", "enrollment_id", unique=True),
    )

    revision: Mapped[str] = mapped_column(String(32), nullable=False)
    enrollment_id: Mapped[int] = mapped_column(Integer, nullable=False)
    course_id: Mapped[int] = mapped_column(Integer, nullable=False)
    student_id: Mapped[int] = mapped_column(Integer, nullable=False)
    action: Mapped[str] = mapped_column(String(20), nullable=False)
    changed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    row_xmin: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class EnrollmentBackfillRun(Base):
    """Revision 0003: each backfill run, by the command or a revision, its pass and its
    checkpoint (the last candidate of its last committed batch; 1.2's runs, with no pass,
    the last membership id), so that a cut run resumes."""

    __tablename__ = "enrollment_backfill_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(32), nullable=False)
    started_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    checkpoint: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    sync_trigger: Mapped[bool] = mapped_column(Boolean, nullable=False)
    batches: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    created: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    reactivated: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    pass_: Mapped[int | None] = mapped_column("pass", Integer, nullable=True)
    candidates: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class XID8(UserDefinedType):
    """PostgreSQL's 64-bit transaction id (``pg_current_xact_id()``)."""

    cache_ok = True

    def get_col_spec(self, **kw) -> str:
        return "xid8"


# Reflection (autogenerate's comparison) knows it by name too.
postgresql_base.ischema_names.setdefault("xid8", XID8)


class EnrollmentBackfillBatch(Base):
    """Revision 0003 (since 1.3): the record, one row per batch of a backfill (chunks of at
    most 10,000 ids): the ids it created and reactivated and the ``xmin`` its rows carry,
    so that the undo restores exactly what is still as the batch wrote it."""

    __tablename__ = "enrollment_backfill_batches"
    __table_args__ = (Index("ix_enrollment_backfill_batches_row_xmin", "row_xmin"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    run_id: Mapped[int] = mapped_column(Integer, nullable=False)
    pass_: Mapped[int] = mapped_column("pass", Integer, nullable=False)
    last_student_id: Mapped[int] = mapped_column(Integer, nullable=False)
    last_course_id: Mapped[int] = mapped_column(Integer, nullable=False)
    xid: Mapped[str] = mapped_column(XID8, nullable=False)
    row_xmin: Mapped[int] = mapped_column(BigInteger, nullable=False)
    created: Mapped[list[int]] = mapped_column(ARRAY(Integer), nullable=False)
    reactivated: Mapped[list[int]] = mapped_column(ARRAY(Integer), nullable=False)
    written_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class EnrollmentBackfillClaim(Base):
    """Revision 0003 (since 1.3): enrollments the application made its own while still as
    a backfill wrote them (the sync trigger writes them; the undo keeps them)."""

    __tablename__ = "enrollment_backfill_claims"

    enrollment_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    claimed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class EnrollmentBackfillControl(Base):
    """Revision 0003 (since 1.3): one row, the pause and the throttle of the running
    backfill (``enrollments pause``, ``resume``, ``throttle``; read before each batch)."""

    __tablename__ = "enrollment_backfill_control"
    __table_args__ = (CheckConstraint("id", name="ck_enrollment_backfill_control_one_row"),)

    id: Mapped[bool] = mapped_column(Boolean, primary_key=True, server_default=text("true"))
    paused_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    paused_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    batch_time: Mapped[timedelta | None] = mapped_column(INTERVAL, nullable=True)
    sleep: Mapped[timedelta | None] = mapped_column(INTERVAL, nullable=True)
    max_rate: Mapped[int | None] = mapped_column(Integer, nullable=True)
    changed_by: Mapped[str] = mapped_column(
        Text, nullable=False, server_default=text("CURRENT_USER")
    )
    changed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    held_by: Mapped[dict | None] = mapped_column(JSONB, nullable=True)
    activity: Mapped[dict | None] = mapped_column(JSONB, nullable=True)


class EnrollmentBackfillCandidate(Base):
    """Revision 0003 (since 1.3): the pass in progress of a backfill run, its pairs to
    create or reactivate numbered in (student, course) order. Unlogged: a crash empties
    it, and the run computes it again."""

    __tablename__ = "enrollment_backfill_candidates"
    __table_args__ = ({"prefixes": ("UNLOGGED",)},)

    n: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    student_id: Mapped[int] = mapped_column(Integer, nullable=False)
    course_id: Mapped[int] = mapped_column(Integer, nullable=False)
    memberships: Mapped[list[int]] = mapped_column(ARRAY(Integer), nullable=False)


class CourseEnrollmentSyncPending(Base):
    """What the sync triggers queue for the end of the transaction that wrote it (revision
    0004, 0007 or 0008 on older databases): the pairs eligible at the end of a statement,
    and what to read again. Rows live only inside that transaction; unlogged, owner only."""

    __tablename__ = "course_enrollments_sync_pending"
    __table_args__ = (
        Index("course_enrollments_sync_pending_xact", "xact"),
        {"prefixes": ("UNLOGGED",)},
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    ids: Mapped[list[int] | None] = mapped_column(ARRAY(Integer), nullable=True)
    xact: Mapped[str] = mapped_column(
        XID8, nullable=False, server_default=text("pg_current_xact_id()")
    )
    courses: Mapped[list[int] | None] = mapped_column(ARRAY(Integer), nullable=True)
    students: Mapped[list[int] | None] = mapped_column(ARRAY(Integer), nullable=True)
    opens: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))


class CourseEnrollmentSyncGuard(Base):
    """Marks of the users, groups and courses whose change, or whose pair not eligible, a
    transaction of the sync trigger acts on: written, so that two such transactions
    conflict (revision 0004, or 0008 on older databases). Unlogged, owner only."""

    __tablename__ = "course_enrollments_sync_guard"
    __table_args__ = (
        PrimaryKeyConstraint("kind", "id", name="course_enrollments_sync_guard_pkey"),
        {"prefixes": ("UNLOGGED",)},
    )

    kind: Mapped[str] = mapped_column(Text, nullable=False)
    id: Mapped[int] = mapped_column(Integer, nullable=False)
    marks: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("1"))
