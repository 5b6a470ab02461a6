"""Small legacy data sets with known gaps, for the demo and the tests.

Rows carry no ids: loaded into an empty database, ids are 1, 2, ... in list order, which
the expected figures below rely on. Each table is a ``sa.table()`` snapshot of revision
``0001`` (not ``enrollments_phase1.models``), so the data loads at that revision.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

LEGACY_TABLES = {
    "schools": sa.table("schools", sa.column("name")),
    "users": sa.table(
        "users",
        sa.column("school_id"),
        sa.column("email"),
        sa.column("name"),
        sa.column("role"),
        sa.column("archived"),
    ),
    "courses": sa.table(
        "courses",
        sa.column("school_id"),
        sa.column("name"),
        sa.column("code"),
        sa.column("is_active"),
    ),
    "groups": sa.table(
        "groups",
        sa.column("school_id"),
        sa.column("course_id"),
        sa.column("name"),
        sa.column("team_number"),
    ),
    "group_members": sa.table(
        "group_members",
        sa.column("school_id"),
        sa.column("group_id"),
        sa.column("user_id"),
        sa.column("role_in_team"),
        sa.column("active"),
    ),
    "course_enrollments": sa.table(
        "course_enrollments",
        sa.column("course_id"),
        sa.column("student_id"),
        sa.column("active"),
    ),
}


def _user(school: int, email: str, name: str, role: str = "student", archived: bool = False):
    return {"school_id": school, "email": email, "name": name, "role": role, "archived": archived}


def _member(group: int, user: int, active: bool | None = True, school: int = 1):
    return {
        "school_id": school,
        "group_id": group,
        "user_id": user,
        "role_in_team": None,
        "active": active,
    }


def _enrolled(course: int, student: int, active: bool = True):
    return {"course_id": course, "student_id": student, "active": active}


# The story the demo tells. Users: 1 Ada, 2 Zoë, 3 Bob (quotes, backslash, percent,
# colon), 4 Grace (teacher), 5 Émile (school 2), 6 an archived student, 7 Nina (her only
# membership has active NULL), 8 an admin. Courses 1 and 2 of school 1, 3 archived, 4 of
# school 2.
STORY: dict[str, list[dict[str, Any]]] = {
    "schools": [{"name": "Northside High"}, {"name": "O'Brien Académie"}],
    "users": [
        _user(1, "ada@north.example", "Ada Lovelace"),
        _user(1, "zoe@north.example", "Zoë O'Connor"),
        _user(1, "bob@north.example", 'Bob "Tables" \\ 50% :done'),
        _user(1, "grace@north.example", "Grace Hopper", role="teacher"),
        _user(2, "emile@obrien.example", "Émile Durand"),
        _user(1, "old@north.example", "Olga Oldtimer", archived=True),
        _user(1, "nina@north.example", "Nina Null"),
        _user(1, "alan@north.example", "Alan Admin", role="admin"),
    ],
    "courses": [
        {"school_id": 1, "name": "Mathématiques 101", "code": "MATH-101", "is_active": True},
        {"school_id": 1, "name": "Physics", "code": None, "is_active": True},
        {"school_id": 1, "name": "History (archived)", "code": "HIST", "is_active": False},
        {"school_id": 2, "name": "Français", "code": "FR", "is_active": True},
    ],
    "groups": [
        {"school_id": 1, "course_id": 1, "name": "Math A", "team_number": 1},
        {"school_id": 1, "course_id": 1, "name": "Math B", "team_number": 2},
        {"school_id": 1, "course_id": 2, "name": "Physics A", "team_number": None},
        {"school_id": 1, "course_id": 3, "name": "History A", "team_number": None},
        {"school_id": 2, "course_id": 4, "name": "Français A", "team_number": None},
    ],
    "group_members": [
        _member(1, 1),  # Ada, Math A        } Ada in course 1 through two groups: covered
        _member(2, 1),  # Ada, Math B        }
        _member(3, 1),  # Ada, Physics: missing
        _member(1, 2),  # Zoë, Math A: inactive enrollment, reactivated
        _member(3, 2, active=False),  # Zoë, Physics: inactive membership, stays inactive
        _member(3, 3),  # Bob, Physics: missing
        _member(4, 3),  # Bob, History (archived course): covered
        _member(1, 4),  # Grace (teacher), Math A: anomaly non_student
        _member(2, 5),  # Émile (school 2), Math B: anomaly cross_school
        _member(5, 5, school=2),  # Émile, Français: missing
        _member(4, 6),  # Olga (archived student), History: inactive, reactivated
        _member(1, 7, active=None),  # Nina, active NULL: not eligible
        _member(3, 8),  # Alan (admin), Physics: anomaly non_student
    ],
    "course_enrollments": [
        _enrolled(1, 1),  # Ada, Math: covered
        _enrolled(1, 2, active=False),  # Zoë, Math: inactive
        _enrolled(3, 3),  # Bob, History: covered
        _enrolled(3, 6, active=False),  # Olga, History: inactive
        _enrolled(2, 2, active=False),  # Zoë, Physics: only membership inactive: untouched
        _enrolled(2, 6),  # Olga, Physics: active, no membership behind it: untouched
    ],
}

# What the audit says of STORY before and after the backfill.
STORY_BEFORE = {
    "active_memberships": 11,
    "eligible_pairs": 7,
    "covered": 2,
    "inactive": 2,
    "missing": 3,
    "anomalies": {"non_student": 2, "cross_school": 1},
}
STORY_AFTER = {
    "active_memberships": 11,
    "eligible_pairs": 7,
    "covered": 7,
    "inactive": 0,
    "missing": 0,
    "anomalies": {"non_student": 2, "cross_school": 1},
}
# course_enrollments after the backfill, as (course_id, student_id, active).
STORY_ENROLLMENTS_AFTER = sorted(
    [
        (1, 1, True),
        (1, 2, True),
        (3, 3, True),
        (3, 6, True),
        (2, 2, False),
        (2, 6, True),
        (2, 1, True),
        (2, 3, True),
        (4, 5, True),
    ]
)


def load(connection: Connection, data: dict[str, list[dict[str, Any]]] = STORY) -> None:
    """Insert ``data`` table by table, in the order of :data:`LEGACY_TABLES`."""
    for name, table in LEGACY_TABLES.items():
        rows = data.get(name)
        if rows:
            connection.execute(sa.insert(table), rows)
