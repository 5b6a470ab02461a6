"""The definition of eligible pairs as the revisions on helpers v4 run it (frozen;
app/coverage.py holds the live one, and tests/test_definition_agreement.py checks that they
agree), and the names every statement of v4 uses.

- active membership: ``group_members.active`` is true (NULL is inactive);
- eligible pair: a distinct (student, course) from active memberships, through
  ``groups.course_id``, where the user's role is ``'student'`` and the user's school is
  the course's school (archived students and courses count);
- anomalies: pairs from active memberships that are not eligible, ``non_student`` (the
  role is not student) and ``cross_school`` (a student of another school).

Every statement spells the tables with the same aliases: ``gm`` (the membership), ``g``
(its group), ``c`` (the group's course), ``u`` (the member).

**Names.** Every table is qualified with the schema the legacy tables live in (resolved
when the run starts; ``enrollments_phase1.names.Tables``), and every statement runs with ``search_path =
pg_catalog, pg_temp``: no object planted in a writable schema, and no temporary table, can
stand in for ours or for a built-in operator or function. The bodies of the ``SECURITY
DEFINER`` trigger functions also qualify every operator and function (:data:`DEFINER`),
as PostgreSQL's extension scripts do.
"""

from __future__ import annotations

from dataclasses import dataclass

from enrollments_phase1.names import PINNED_SEARCH_PATH, Tables, quote_ident, quote_literal

__all__ = ["PINNED_SEARCH_PATH", "Tables", "quote_ident", "quote_literal"]


@dataclass(frozen=True)
class Operators:
    """How a fragment spells the operators it uses: plainly (the statements of a
    migration run, whose search_path is pinned) or qualified (definer function bodies)."""

    eq: str = "="
    ne: str = "<>"


PLAIN = Operators()
DEFINER = Operators(eq="OPERATOR(pg_catalog.=)", ne="OPERATOR(pg_catalog.<>)")


def active_membership(ops: Operators = PLAIN) -> str:
    return "gm.active IS TRUE"


def is_student(ops: Operators = PLAIN) -> str:
    return f"u.role {ops.eq} 'student'"


def same_school(ops: Operators = PLAIN) -> str:
    return f"u.school_id {ops.eq} c.school_id"


def eligible(ops: Operators = PLAIN) -> str:
    return f"{active_membership(ops)} AND {is_student(ops)} AND {same_school(ops)}"


ACTIVE_MEMBERSHIP = active_membership()
IS_STUDENT = is_student()
SAME_SCHOOL = same_school()
ELIGIBLE = eligible()

# The status of a (user, course) pair behind active memberships, given the user u, the
# course c and its enrollment ce (LEFT JOINed).
STATUS = f"""CASE
    WHEN NOT ({IS_STUDENT}) THEN 'non_student'
    WHEN NOT ({SAME_SCHOOL}) THEN 'cross_school'
    WHEN ce.active THEN 'covered'
    WHEN ce.id IS NOT NULL THEN 'inactive'
    ELSE 'missing'
END"""


def counted(expr: str) -> str:
    """SQL that writes the number ``expr`` with thousands separators (1,234,567), as the
    commands print counts: for the scripts' NOTICE and exception texts."""
    return f"to_char({expr}, 'FM999,999,999,990')"


def indent(sql: str, prefix: str = "    ") -> str:
    """Indent every line of ``sql`` (to nest one fragment in another, readably)."""
    return "\n".join(prefix + line if line else line for line in sql.splitlines())
