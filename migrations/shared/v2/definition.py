"""The definition of eligible pairs as the 1.1 revisions run it (frozen; app/coverage.py
holds the live one, and tests/test_definition_agreement.py checks that they agree).

- active membership: ``group_members.active`` is true (NULL is inactive);
- eligible pair: a distinct (student, course) from active memberships, through
  ``groups.course_id``, where the user's role is ``'student'`` and the user's school is
  the course's school (archived students and courses count);
- anomalies: pairs from active memberships that are not eligible, ``non_student`` (the
  role is not student) and ``cross_school`` (a student of another school).

Every statement here spells the tables with the same aliases: ``gm`` (the membership),
``g`` (its group), ``c`` (the group's course), ``u`` (the member).
"""

from __future__ import annotations

ACTIVE_MEMBERSHIP = "gm.active IS TRUE"
IS_STUDENT = "u.role = 'student'"
SAME_SCHOOL = "u.school_id = c.school_id"
ELIGIBLE = f"{ACTIVE_MEMBERSHIP} AND {IS_STUDENT} AND {SAME_SCHOOL}"

# The status of a (user, course) pair behind active memberships, given the user u, the
# course c and its enrollment ce (LEFT JOINed).
STATUS = f"""CASE
    WHEN NOT ({IS_STUDENT}) THEN 'non_student'
    WHEN NOT ({SAME_SCHOOL}) THEN 'cross_school'
    WHEN ce.active THEN 'covered'
    WHEN ce.id IS NOT NULL THEN 'inactive'
    ELSE 'missing'
END"""


def indent(sql: str, prefix: str = "    ") -> str:
    """Indent every line of ``sql`` (to nest one fragment in another, readably)."""
    return "\n".join(prefix + line if line else line for line in sql.splitlines())
