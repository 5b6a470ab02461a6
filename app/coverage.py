"""The one definition of eligible pairs, anomalies and coverage, as set-based SQL.

Everything that asks "is every student enrolled?" goes through this module: the
``enrollments audit`` and ``enrollments backfill`` commands, the backfill revision and the
coverage gate. Each query is SQL text with no bound parameters (only integers that this
module formats itself), so that the same statement runs online through SQLAlchemy and
offline in the script that ``alembic upgrade --sql`` writes for psql.

Definitions (../shared/CONTRACT.md):

- active membership: a ``group_members`` row whose ``active`` is true (NULL is inactive);
- eligible pair: a distinct (student, course) from active memberships, joined through
  ``groups.course_id``, where the user's role is ``'student'`` and the user's school is the
  course's school (archived students and courses count);
- covered / inactive / missing: the pair has an active / an inactive / no enrollment;
- anomalies: (user, course) pairs from active memberships that are not eligible, by kind
  ``non_student`` (role is not student) and ``cross_school`` (student of another school).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

# --- the definition -------------------------------------------------------------------
# The tables as this module reads them (aliases used by every fragment below).
MEMBERSHIP_SOURCE = """group_members AS gm
JOIN groups AS g ON g.id = gm.group_id
JOIN courses AS c ON c.id = g.course_id
JOIN users AS u ON u.id = gm.user_id"""
ACTIVE_MEMBERSHIP = "gm.active IS TRUE"
IS_STUDENT = "u.role = 'student'"
SAME_SCHOOL = "u.school_id = c.school_id"
PAIR_KIND = f"""CASE
    WHEN NOT ({IS_STUDENT}) THEN 'non_student'
    WHEN NOT ({SAME_SCHOOL}) THEN 'cross_school'
    ELSE 'eligible'
END"""

STATUSES = ("covered", "inactive", "missing", "non_student", "cross_school")
ANOMALY_KINDS = ("non_student", "cross_school")
DEFAULT_SAMPLE_LIMIT = 10


def indent(sql: str, prefix: str = "    ") -> str:
    """Indent every line of ``sql`` (for nesting one fragment in another, readably)."""
    return "\n".join(prefix + line if line else line for line in sql.splitlines())


def membership_range(after_id: int | None = None, up_to_id: int | None = None) -> str:
    """Extra predicate lines on ``gm.id`` for keyset batches: ``after_id < gm.id <= up_to_id``."""
    parts = []
    if after_id is not None:
        parts.append(f"\n  AND gm.id > {int(after_id)}")
    if up_to_id is not None:
        parts.append(f"\n  AND gm.id <= {int(up_to_id)}")
    return "".join(parts)


def eligible_pairs_sql(after_id: int | None = None, up_to_id: int | None = None) -> str:
    """SELECT of the distinct eligible (student_id, course_id) pairs.

    With a membership id range, only the pairs behind memberships in that range: the
    union over consecutive ranges is every eligible pair, which is what batching needs.
    """
    return f"""SELECT DISTINCT gm.user_id AS student_id, g.course_id
FROM {MEMBERSHIP_SOURCE}
WHERE {ACTIVE_MEMBERSHIP}
  AND {IS_STUDENT}
  AND {SAME_SCHOOL}{membership_range(after_id, up_to_id)}"""


def classified_pairs_sql() -> str:
    """SELECT of every (user, course) pair behind active memberships, with its status.

    Columns: ``student_id``, ``course_id``, ``groups`` (active memberships behind the
    pair) and ``status``: one of :data:`STATUSES`.
    """
    member_pairs = f"""SELECT gm.user_id AS student_id, g.course_id, count(*) AS groups,
{indent(PAIR_KIND)} AS kind
FROM {MEMBERSHIP_SOURCE}
WHERE {ACTIVE_MEMBERSHIP}
GROUP BY gm.user_id, g.course_id, kind"""
    return f"""SELECT p.student_id, p.course_id, p.groups,
    CASE
        WHEN p.kind <> 'eligible' THEN p.kind
        WHEN ce.active THEN 'covered'
        WHEN ce.id IS NOT NULL THEN 'inactive'
        ELSE 'missing'
    END AS status
FROM (
{indent(member_pairs)}
) AS p
LEFT JOIN course_enrollments AS ce
    ON ce.course_id = p.course_id AND ce.student_id = p.student_id"""


def coverage_counts_sql() -> str:
    """One row of counts: memberships, pairs by status. The gate and the audit both use it."""
    return f"""SELECT
    coalesce(sum(groups), 0) AS active_memberships,
    count(*) FILTER (WHERE status IN ('covered', 'inactive', 'missing')) AS eligible_pairs,
    count(*) FILTER (WHERE status = 'covered') AS covered,
    count(*) FILTER (WHERE status = 'inactive') AS inactive,
    count(*) FILTER (WHERE status = 'missing') AS missing,
    count(*) FILTER (WHERE status = 'non_student') AS non_student,
    count(*) FILTER (WHERE status = 'cross_school') AS cross_school
FROM (
{indent(classified_pairs_sql())}
) AS pairs"""


def uncovered_pairs_sql(limit: int) -> str:
    """The first ``limit`` uncovered pairs (missing or inactive) by (student, course)."""
    return f"""SELECT student_id, course_id, groups, status
FROM (
{indent(classified_pairs_sql())}
) AS pairs
WHERE status IN ('missing', 'inactive')
ORDER BY student_id, course_id
LIMIT {int(limit)}"""


def sample_pairs_sql(limit: int) -> str:
    """Up to ``limit`` pairs of each non-covered status, with names, in one pass.

    The classified pairs are materialised once (only the uncovered and anomalous ones,
    a small part of a healthy database) and each status takes its first ``limit``.
    """
    limit = int(limit)
    per_status = "\nUNION ALL\n".join(
        f"""(SELECT * FROM flagged WHERE status = '{status}'
    ORDER BY student_id, course_id LIMIT {limit})"""
        for status in ("missing", "inactive", *ANOMALY_KINDS)
    )
    return f"""WITH flagged AS MATERIALIZED (
    SELECT * FROM (
{indent(classified_pairs_sql(), "        ")}
    ) AS pairs
    WHERE status <> 'covered'
), sampled AS (
{indent(per_status)}
)
SELECT s.status, s.student_id, s.course_id, s.groups,
    u.name AS student_name, u.email, u.role, c.name AS course_name
FROM sampled AS s
JOIN users AS u ON u.id = s.student_id
JOIN courses AS c ON c.id = s.course_id
ORDER BY s.status, s.student_id, s.course_id"""


# --- the report -----------------------------------------------------------------------
@dataclass(frozen=True)
class PairSample:
    """One (student, course) pair as the report shows it."""

    student_id: int
    course_id: int
    student_name: str
    email: str
    course_name: str
    groups: int
    role: str = "student"

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def coverage_percent(covered: int, eligible: int) -> float:
    """covered/eligible in percent, rounded down to 2 decimals: never 100 unless all are."""
    if eligible == 0:
        return 100.0
    return (covered * 10_000 // eligible) / 100


@dataclass
class CoverageReport:
    """Counts of the coverage of eligible pairs, plus bounded samples."""

    active_memberships: int
    eligible_pairs: int
    covered: int
    inactive: int
    missing: int
    anomalies: dict[str, int]
    missing_pairs: list[PairSample] = field(default_factory=list)
    inactive_pairs: list[PairSample] = field(default_factory=list)
    anomaly_pairs: dict[str, list[PairSample]] = field(default_factory=dict)

    @property
    def uncovered(self) -> int:
        return self.inactive + self.missing

    @property
    def coverage_percent(self) -> float:
        return coverage_percent(self.covered, self.eligible_pairs)

    @property
    def anomaly_count(self) -> int:
        return sum(self.anomalies.values())

    @property
    def status(self) -> str:
        """``fail`` below 100%, ``warning`` at 100% with anomalies, else ``pass``."""
        if self.covered < self.eligible_pairs:
            return "fail"
        if self.anomaly_count:
            return "warning"
        return "pass"

    @property
    def exit_code(self) -> int:
        return {"pass": 0, "warning": 1, "fail": 2}[self.status]

    def counts_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "active_memberships": self.active_memberships,
            "eligible_pairs": self.eligible_pairs,
            "covered": self.covered,
            "inactive": self.inactive,
            "missing": self.missing,
            "coverage_percent": self.coverage_percent,
            "anomalies": dict(self.anomalies),
        }

    def as_json(self) -> dict[str, Any]:
        data = self.counts_json()
        data["missing_pairs"] = [p.as_json() for p in self.missing_pairs]
        data["inactive_pairs"] = [p.as_json() for p in self.inactive_pairs]
        data["anomaly_pairs"] = {
            kind: [p.as_json() for p in self.anomaly_pairs.get(kind, [])] for kind in ANOMALY_KINDS
        }
        return data

    def summary_line(self) -> str:
        return (
            f"coverage {self.coverage_percent:.2f}%: {self.covered:,} of "
            f"{self.eligible_pairs:,} eligible (student, course) pairs have an active "
            f"enrollment; {self.missing:,} missing, {self.inactive:,} inactive; "
            f"anomalies: {self.anomalies['non_student']:,} non_student, "
            f"{self.anomalies['cross_school']:,} cross_school"
        )


def coverage_counts(connection: Connection) -> CoverageReport:
    """The counts only: one pass over the memberships, no samples."""
    row = connection.execute(text(coverage_counts_sql())).mappings().one()
    return CoverageReport(
        active_memberships=int(row["active_memberships"]),
        eligible_pairs=int(row["eligible_pairs"]),
        covered=int(row["covered"]),
        inactive=int(row["inactive"]),
        missing=int(row["missing"]),
        anomalies={kind: int(row[kind]) for kind in ANOMALY_KINDS},
    )


def audit(connection: Connection, limit: int = DEFAULT_SAMPLE_LIMIT) -> CoverageReport:
    """The full coverage report: counts, and up to ``limit`` samples of each kind of gap."""
    report = coverage_counts(connection)
    if limit <= 0 or report.uncovered + report.anomaly_count == 0:
        return report
    samples: dict[str, list[PairSample]] = {status: [] for status in STATUSES}
    for row in connection.execute(text(sample_pairs_sql(limit))).mappings():
        samples[row["status"]].append(
            PairSample(
                student_id=row["student_id"],
                course_id=row["course_id"],
                student_name=row["student_name"],
                email=row["email"],
                course_name=row["course_name"],
                groups=int(row["groups"]),
                role=row["role"],
            )
        )
    report.missing_pairs = samples["missing"]
    report.inactive_pairs = samples["inactive"]
    report.anomaly_pairs = {kind: samples[kind] for kind in ANOMALY_KINDS}
    return report
