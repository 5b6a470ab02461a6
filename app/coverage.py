"""The live definition of eligible pairs, anomalies and coverage, as set-based SQL.

The ``enrollments audit`` and ``enrollments backfill`` commands ask "is every student
enrolled?" through this module. The revisions do not: each runs the frozen copy in its
helper version (``migrations/shared/vN``), and tests/test_definition_agreement.py checks
that this definition and the newest revision's gate agree. Changing the definition is one
edit here plus one new revision with a new helper version (docs/migrations.md). Each
query is SQL text with no bound parameters (only integers this module formats itself).

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

STATUSES = ("covered", "inactive", "missing", "non_student", "cross_school")
ANOMALY_KINDS = ("non_student", "cross_school")
SAMPLED_STATUSES = ("missing", "inactive", *ANOMALY_KINDS)
DEFAULT_SAMPLE_LIMIT = 10


def indent(sql: str, prefix: str = "    ") -> str:
    """Indent every line of ``sql`` (for nesting one fragment in another, readably)."""
    return "\n".join(prefix + line if line else line for line in sql.splitlines())


def membership_source(after_id: int | None = None, up_to_id: int | None = None) -> str:
    """The FROM clause of memberships with their group, course and user.

    With a keyset batch (``after_id < gm.id <= up_to_id``) the batch is read first, by
    primary key, behind an ``OFFSET 0`` fence, so the plan stays small even on tables
    without statistics (right after a bulk load).
    """
    if after_id is None and up_to_id is None:
        return MEMBERSHIP_SOURCE
    bounds = []
    if after_id is not None:
        bounds.append(f"id > {int(after_id)}")
    if up_to_id is not None:
        bounds.append(f"id <= {int(up_to_id)}")
    batch = f"""(
    SELECT * FROM group_members
    WHERE {" AND ".join(bounds)}
    OFFSET 0
) AS gm"""
    return MEMBERSHIP_SOURCE.replace("group_members AS gm", batch, 1)


def eligible_pairs_sql(after_id: int | None = None, up_to_id: int | None = None) -> str:
    """SELECT of the distinct eligible (student_id, course_id) pairs.

    With a membership id range, only the pairs behind memberships in that range: the
    union over consecutive ranges is every eligible pair, which is what batching needs.
    """
    return f"""SELECT DISTINCT gm.user_id AS student_id, g.course_id
FROM {membership_source(after_id, up_to_id)}
WHERE {ACTIVE_MEMBERSHIP}
  AND {IS_STUDENT}
  AND {SAME_SCHOOL}"""


def classified_pairs_sql() -> str:
    """SELECT of every (user, course) pair behind active memberships, with its status.

    Columns: ``student_id``, ``course_id`` and ``status``: one of :data:`STATUSES`. The
    memberships are reduced to distinct pairs first and the users and courses joined
    after: the cheapest plan PostgreSQL finds for 1.5 million memberships (see
    docs/benchmarks.md).
    """
    return f"""SELECT p.student_id, p.course_id,
    CASE
        WHEN NOT ({IS_STUDENT}) THEN 'non_student'
        WHEN NOT ({SAME_SCHOOL}) THEN 'cross_school'
        WHEN ce.active THEN 'covered'
        WHEN ce.id IS NOT NULL THEN 'inactive'
        ELSE 'missing'
    END AS status
FROM (
    SELECT DISTINCT gm.user_id AS student_id, g.course_id
    FROM group_members AS gm
    JOIN groups AS g ON g.id = gm.group_id
    WHERE {ACTIVE_MEMBERSHIP}
) AS p
JOIN users AS u ON u.id = p.student_id
JOIN courses AS c ON c.id = p.course_id
LEFT JOIN course_enrollments AS ce
    ON ce.course_id = p.course_id AND ce.student_id = p.student_id"""


PAIR_KEY_SHIFT = 4294967296  # pair key = student_id * 2^32 + course_id (ids are int4)


def coverage_sql(sample_limit: int = 0) -> str:
    """One row: the counts, and the first ``sample_limit`` pairs of each non-covered status.

    A single pass over the memberships. The samples are pair keys (``student_id * 2^32 +
    course_id``, see :func:`split_pair_key`), the smallest first; only the uncovered and
    anomalous pairs are collected for them. The gate and the audit both use this.
    """
    limit = int(sample_limit)
    samples = "".join(
        f""",
    ARRAY(SELECT k FROM unnest({status}_keys) AS k ORDER BY k LIMIT {limit}) AS first_{status}"""
        for status in SAMPLED_STATUSES
    )
    collect = "".join(
        f""",
        array_agg(pair_key) FILTER (WHERE status = '{status}') AS {status}_keys"""
        for status in SAMPLED_STATUSES
    )
    return f"""SELECT active_memberships, eligible_pairs, covered, inactive, missing,
    non_student, cross_school{samples if limit > 0 else ""}
FROM (
    SELECT
        (SELECT count(*) FROM group_members AS gm WHERE {ACTIVE_MEMBERSHIP})
            AS active_memberships,
        count(*) FILTER (WHERE status IN ('covered', 'inactive', 'missing')) AS eligible_pairs,
        count(*) FILTER (WHERE status = 'covered') AS covered,
        count(*) FILTER (WHERE status = 'inactive') AS inactive,
        count(*) FILTER (WHERE status = 'missing') AS missing,
        count(*) FILTER (WHERE status = 'non_student') AS non_student,
        count(*) FILTER (WHERE status = 'cross_school') AS cross_school{
        collect if limit > 0 else ""
    }
    FROM (
        SELECT pairs.*, pairs.student_id::bigint * {PAIR_KEY_SHIFT} + pairs.course_id AS pair_key
        FROM (
{indent(classified_pairs_sql(), "            ")}
        ) AS pairs
    ) AS pairs
) AS coverage"""


def split_pair_key(key: int) -> tuple[int, int]:
    """(student_id, course_id) of a pair key."""
    return key // PAIR_KEY_SHIFT, key % PAIR_KEY_SHIFT


def pair_details_sql(pairs: list[tuple[int, int]]) -> str:
    """Names, email and the active memberships behind each of a few (student, course) pairs."""
    values = ", ".join(f"({int(s)}, {int(c)})" for s, c in pairs)
    return f"""SELECT k.student_id, k.course_id, u.name AS student_name, u.email, u.role,
    c.name AS course_name,
    (SELECT count(*) FROM group_members AS gm JOIN groups AS g ON g.id = gm.group_id
     WHERE gm.user_id = k.student_id AND g.course_id = k.course_id
       AND {ACTIVE_MEMBERSHIP}) AS groups
FROM (VALUES {values}) AS k (student_id, course_id)
JOIN users AS u ON u.id = k.student_id
JOIN courses AS c ON c.id = k.course_id"""


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
    return audit(connection, limit=0)


def audit(connection: Connection, limit: int = DEFAULT_SAMPLE_LIMIT) -> CoverageReport:
    """The coverage report: counts, and up to ``limit`` samples of each kind of gap.

    One pass over the memberships (:func:`coverage_sql`), then a lookup of names for the
    few sampled pairs. Memory here is bounded by ``limit``, whatever the table sizes.
    """
    row = connection.execute(text(coverage_sql(limit))).mappings().one()
    report = CoverageReport(
        active_memberships=int(row["active_memberships"]),
        eligible_pairs=int(row["eligible_pairs"]),
        covered=int(row["covered"]),
        inactive=int(row["inactive"]),
        missing=int(row["missing"]),
        anomalies={kind: int(row[kind]) for kind in ANOMALY_KINDS},
    )
    if limit <= 0:
        return report
    wanted = {
        status: [split_pair_key(k) for k in row[f"first_{status}"]] for status in SAMPLED_STATUSES
    }
    pairs = [pair for keys in wanted.values() for pair in keys]
    if not pairs:
        return report
    details = {
        (r["student_id"], r["course_id"]): r
        for r in connection.execute(text(pair_details_sql(pairs))).mappings()
    }
    samples = {
        status: [
            PairSample(
                student_id=s,
                course_id=c,
                student_name=details[(s, c)]["student_name"],
                email=details[(s, c)]["email"],
                course_name=details[(s, c)]["course_name"],
                groups=int(details[(s, c)]["groups"]),
                role=details[(s, c)]["role"],
            )
            for s, c in keys
        ]
        for status, keys in wanted.items()
    }
    report.missing_pairs = samples["missing"]
    report.inactive_pairs = samples["inactive"]
    report.anomaly_pairs = {kind: samples[kind] for kind in ANOMALY_KINDS}
    return report
