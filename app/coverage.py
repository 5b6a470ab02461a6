"""The live definition of eligible pairs, anomalies and coverage, as set-based SQL.

The ``enrollments audit`` and ``enrollments backfill`` commands ask "is every student
enrolled?" through this module. The revisions do not: each runs the frozen copy in its
helper version (``migrations/shared/vN``), and
tests/test_definition_agreement.py checks that this definition and the newest revision's
gate agree. Changing the definition is one edit here plus one new revision with a new
helper version (docs/migrations.md). Each
query is SQL text with no bound parameters (only integers this module formats itself).

Definitions:

- active membership: a ``group_members`` row whose ``active`` is true (NULL is inactive);
- eligible pair: a distinct (student, course) from active memberships, joined through
  ``groups.course_id``, where the user's role is ``'student'`` and the user's school is the
  course's school (archived students and courses count);
- covered / inactive / missing: the pair has an active / an inactive / no enrollment;
- anomalies: (user, course) pairs from active memberships that are not eligible, by kind
  ``non_student`` (role is not student) and ``cross_school`` (student of another school).

The audit counts every pair in one pass, and the uncovered ones also by *bucket* (a range
of student ids; at most 65,536 buckets whatever the ids). From those counts it knows, for
each kind, the first buckets that hold ``--limit`` samples of it; one more statement reads
exactly those buckets, through ``ix_member_user``: at most one more pass over the data,
whatever the density of each kind, and the server never collects the gaps, so its memory
does not grow with their number. Pairs are (student_id, course_id) throughout.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from enrollments_phase1.names import Tables, quote_literal

PUBLIC = Tables("public")  # the default schema of the helpers' callers (tests)

# --- the definition -------------------------------------------------------------------
# Every statement spells the tables with the same aliases: gm (the membership), g (its
# group), c (the group's course), u (the member), ce (the pair's enrollment).
ACTIVE_MEMBERSHIP = "gm.active IS TRUE"
IS_STUDENT = "u.role = 'student'"
SAME_SCHOOL = "u.school_id = c.school_id"
ELIGIBLE = f"{ACTIVE_MEMBERSHIP} AND {IS_STUDENT} AND {SAME_SCHOOL}"
STATUS = f"""CASE
    WHEN NOT ({IS_STUDENT}) THEN 'non_student'
    WHEN NOT ({SAME_SCHOOL}) THEN 'cross_school'
    WHEN ce.active THEN 'covered'
    WHEN ce.id IS NOT NULL THEN 'inactive'
    ELSE 'missing'
END"""

STATUSES = ("covered", "inactive", "missing", "non_student", "cross_school")
ANOMALY_KINDS = ("non_student", "cross_school")
SAMPLED_STATUSES = ("missing", "inactive", *ANOMALY_KINDS)
DEFAULT_SAMPLE_LIMIT = 10
MAX_BUCKETS = 65_536
MIN_BUCKET = 512


def indent(sql: str, prefix: str = "    ") -> str:
    """Indent every line of ``sql`` (for nesting one fragment in another, readably)."""
    return "\n".join(prefix + line if line else line for line in sql.splitlines())


def eligible_pairs_sql(t: Tables = PUBLIC) -> str:
    """SELECT of the distinct eligible (student_id, course_id) pairs."""
    return f"""SELECT DISTINCT gm.user_id AS student_id, g.course_id
FROM {t.group_members} AS gm
JOIN {t.groups} AS g ON g.id = gm.group_id
JOIN {t.courses} AS c ON c.id = g.course_id
JOIN {t.users} AS u ON u.id = gm.user_id
WHERE {ELIGIBLE}"""


def pairs_sql(t: Tables = PUBLIC, where: str = "") -> str:
    """The distinct (student, course) pairs of active memberships, with the number of
    memberships behind each (``where``: more conditions on ``gm``)."""
    return f"""SELECT gm.user_id AS student_id, g.course_id, count(*) AS memberships
FROM {t.group_members} AS gm
JOIN {t.groups} AS g ON g.id = gm.group_id
WHERE {ACTIVE_MEMBERSHIP}{where}
GROUP BY gm.user_id, g.course_id"""


# The plan of the counting statement, pinned for it alone: every pair is joined to its
# user, course and enrollment, so a nested loop of index scans is never the right strategy,
# whatever the planner estimates; hash joins and a hashed GROUP BY are. work_mem bounds each
# hash or sort of the statement (hash_mem_multiplier times it for a hash; beyond, it spills
# to disk in batches). JIT only costs here.
COUNTING_SETTINGS = {
    "enable_nestloop": "off",
    "jit": "off",
    "work_mem": "64MB",
}


@contextlib.contextmanager
def pinned_plan(connection: Connection) -> Iterator[None]:
    """:data:`COUNTING_SETTINGS` for the statements run inside, ``SET LOCAL`` (the caller's
    transaction), then the settings as they were. After a failure inside nothing is put
    back: the transaction is aborted (a statement run there would hide the error, a
    statement timeout say, behind "current transaction is aborted"), and its rollback
    undoes ``SET LOCAL``."""
    names = list(COUNTING_SETTINGS)
    before = connection.execute(
        text("SELECT " + ", ".join(f"pg_catalog.current_setting('{n}')" for n in names))
    ).one()
    _set_local(connection, COUNTING_SETTINGS)
    yield
    _set_local(connection, dict(zip(names, before, strict=True)))


def _set_local(connection: Connection, settings: dict[str, str]) -> None:
    calls = ", ".join(
        f"pg_catalog.set_config('{n}', {quote_literal(v)}, true)" for n, v in settings.items()
    )
    connection.execute(text(f"SELECT {calls}"))


def classified_pairs_sql(t: Tables = PUBLIC, within: str | None = None) -> str:
    """SELECT of every (user, course) pair behind active memberships, with its status;
    with ``within`` (a condition on an id, ``"{id} < 1000"``), only the students whose id
    meets it.

    Columns: ``student_id``, ``course_id``, ``status`` (one of :data:`STATUSES`) and
    ``memberships`` (the active memberships behind the pair). The memberships are reduced
    to pairs first and the users, courses and enrollments joined after. With ``within``,
    each table keyed by the student is read for those students alone: a condition on an
    indexed column, whose estimate the planner makes from its histogram.
    """

    def where(column: str) -> str:
        return f" AND {within.format(id=column)}" if within else ""

    return f"""SELECT p.student_id, p.course_id, c.school_id, p.memberships,
{indent(STATUS)} AS status
FROM (
{indent(pairs_sql(t, where("gm.user_id")))}
) AS p
JOIN {t.users} AS u ON u.id = p.student_id{where("u.id")}
JOIN {t.courses} AS c ON c.id = p.course_id
LEFT JOIN {t.course_enrollments} AS ce
    ON ce.course_id = p.course_id AND ce.student_id = p.student_id{where("ce.student_id")}"""


def bounds_sql(t: Tables = PUBLIC) -> str:
    return f"SELECT coalesce(min(id), 0), coalesce(max(id), 0) FROM {t.users}"


def bucket_width(lo: int, hi: int) -> int:
    """Student ids per bucket: at least :data:`MIN_BUCKET`, and at most :data:`MAX_BUCKETS`
    buckets (a bucket of 512 students is a few thousand memberships to read for samples)."""
    return max(MIN_BUCKET, -(-(hi - lo + 1) // MAX_BUCKETS))


def halves(lo: int, hi: int) -> tuple[str, str]:
    """Conditions on a student id that split ids [lo, hi] in two, for :func:`counts_sql`;
    every id is in one of them (an id outside [lo, hi] too)."""
    middle = lo + (hi - lo + 1) // 2
    return (f"{{id}} < {middle}", f"{{id}} >= {middle}")


BREAKDOWNS = {"school": "school_id", "course": "course_id"}


def counts_sql(
    t: Tables = PUBLIC,
    lo: int = 0,
    width: int = MIN_BUCKET,
    by: str | None = None,
    hi: int | None = None,
) -> str:
    """One row per (status, bucket): pairs, the active memberships behind them, and the
    bucket's first pair of that status (``first_pair``: [student_id, course_id]).

    Covered pairs are not bucketed; bucket b holds student ids [lo + b * width,
    lo + (b + 1) * width). With ``by`` (school or course), also one row per (status,
    school or course), from the same pass (GROUPING SETS); ``per_part`` tells them apart.
    One pass over the memberships, no list of pairs kept.

    The students (ids ``lo`` to ``hi``, the bounds of ``users``) are counted in two
    halves of their ids, each whole: its pairs, users and enrollments, in a process of
    its own (the planner's Parallel Append), then added up. Every join is by hash on its
    half, with estimates the statistics give (id ranges). 1.1.0 split by ``user_id & 1``,
    an expression without statistics: estimated at 0.5% of its rows, it led the planner
    into a nested loop over millions of pairs.
    """
    hi = lo + width * MAX_BUCKETS - 1 if hi is None else hi  # the ids buckets can hold
    bucket = (
        "CASE WHEN k.status = 'covered' THEN NULL\n"
        f"         ELSE (k.student_id::bigint - {int(lo)}) / {int(width)} END"
    )
    if by is None:
        part, grouping, per_part = "NULL::integer", "GROUP BY 1, 2", "false"
    else:
        part = f"k.{BREAKDOWNS[by]}"
        grouping = f"GROUP BY GROUPING SETS ((k.status, {bucket}), (k.status, {part}))"
        per_part = f"GROUPING({part}) = 0"
    counted = "\nUNION ALL\n".join(
        f"""SELECT k.status, {bucket} AS bucket, {part} AS part, {per_part} AS per_part,
    count(*) AS pairs, sum(k.memberships) AS memberships,
    min(ARRAY[k.student_id, k.course_id]) FILTER (WHERE k.status <> 'covered') AS first_pair
FROM (
{indent(classified_pairs_sql(t, within))}
) AS k
{grouping}"""
        for within in halves(lo, hi)
    )
    return f"""SELECT h.status, h.bucket, h.part, h.per_part,
    sum(h.pairs)::bigint AS pairs, sum(h.memberships)::bigint AS memberships,
    min(h.first_pair) AS first_pair
FROM (
{indent(counted)}
) AS h
GROUP BY 1, 2, 3, 4"""


def samples_sql(
    ranges: list[tuple[int, int, tuple[str, ...], int | None]], limit: int, t: Tables = PUBLIC
) -> str:
    """The first ``limit`` pairs of each status, by (student, course), with names and the
    memberships behind each, from the students of ``ranges``: (lo, hi, statuses, course),
    student ids [lo, hi), the statuses wanted there and, where not None, the one course
    (a single pair: its student's memberships alone are read). One statement, whatever the
    number of ranges.

    Each range's memberships are read through ``ix_member_user``, and each lookup is a
    ``LATERAL ... OFFSET 0`` subquery: an index scan per pair, whatever the statistics. An
    anomaly's status does not depend on its enrollment: a range where only anomalies are
    wanted does not look the enrollments up (the costliest of the lookups).
    """
    values = ",\n".join(
        f"({int(lo)}, {int(hi)}, ARRAY[{', '.join(quote_literal(s) for s in statuses)}]::text[],"
        f" {'false' if set(statuses) <= set(ANOMALY_KINDS) else 'true'},"
        f" CAST({'NULL' if course is None else int(course)} AS integer))"
        for lo, hi, statuses, course in ranges
    )
    return f"""SELECT * FROM (
    SELECT k.*, row_number() OVER (PARTITION BY k.status ORDER BY k.student_id, k.course_id) AS n
    FROM (
        SELECT p.student_id, p.course_id, p.memberships, u.name AS student_name, u.email,
            u.role, c.name AS course_name, p.wanted,
{indent(STATUS, "            ")} AS status
        FROM (
            SELECT gm.user_id AS student_id, g.course_id, count(*) AS memberships,
                r.wanted, r.enrollments
            FROM (VALUES
{indent(values, "                ")}
            ) AS r(lo, hi, wanted, enrollments, course)
            CROSS JOIN LATERAL (
                SELECT x.user_id, x.group_id FROM {t.group_members} AS x
                WHERE x.user_id >= r.lo AND x.user_id < r.hi AND x.active IS TRUE OFFSET 0
            ) AS gm
            CROSS JOIN LATERAL (
                SELECT x.course_id FROM {t.groups} AS x WHERE x.id = gm.group_id OFFSET 0
            ) AS g
            WHERE r.course IS NULL OR g.course_id = r.course
            GROUP BY gm.user_id, g.course_id, r.wanted, r.enrollments
        ) AS p
        CROSS JOIN LATERAL (
            SELECT x.name, x.email, x.role, x.school_id FROM {t.users} AS x
            WHERE x.id = p.student_id OFFSET 0
        ) AS u
        CROSS JOIN LATERAL (
            SELECT x.name, x.school_id FROM {t.courses} AS x WHERE x.id = p.course_id OFFSET 0
        ) AS c
        LEFT JOIN LATERAL (
            SELECT x.id, x.active FROM {t.course_enrollments} AS x
            WHERE p.enrollments AND x.course_id = p.course_id AND x.student_id = p.student_id
            OFFSET 0
        ) AS ce ON true
    ) AS k
    WHERE k.status = ANY (k.wanted)
) AS s
WHERE s.n <= {int(limit)}
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
    breakdown_by: str | None = None
    breakdown: list[dict[str, int]] = field(default_factory=list)
    breakdown_names: dict[int, str] = field(default_factory=dict)
    security_warnings: list[str] = field(default_factory=list)

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
        if self.breakdown_by is not None:
            data["breakdown"] = self.breakdown
        data["security_warnings"] = list(self.security_warnings)
        return data

    def summary_line(self) -> str:
        return (
            f"coverage {self.coverage_percent:.2f}%: {self.covered:,} of "
            f"{self.eligible_pairs:,} eligible (student, course) pairs have an active "
            f"enrollment; {self.missing:,} missing, {self.inactive:,} inactive; "
            f"anomalies: {self.anomalies['non_student']:,} non_student, "
            f"{self.anomalies['cross_school']:,} cross_school pairs"
        )


def coverage_counts(connection: Connection, t: Tables = PUBLIC) -> CoverageReport:
    """The counts only: one pass over the memberships, no samples."""
    return audit(connection, limit=0, t=t)


def audit(
    connection: Connection,
    limit: int = DEFAULT_SAMPLE_LIMIT,
    by: str | None = None,
    t: Tables = PUBLIC,
) -> CoverageReport:
    """The coverage report: counts, up to ``limit`` samples of each kind of gap, and with
    ``by`` (school or course) a breakdown.

    Run it in a REPEATABLE READ transaction for counts and samples from one snapshot (the
    commands do). Memory here and in the server is bounded by ``limit``, the number of
    buckets and the number of schools or courses, whatever the number of gaps.
    """
    pairs = dict.fromkeys(STATUSES, 0)
    memberships = 0
    buckets: dict[int, dict[str, tuple[int, list[int]]]] = {}
    parts: dict[int, dict[str, int]] = {}
    lo, hi = connection.execute(text(bounds_sql(t))).one()
    width = bucket_width(lo, hi)
    with pinned_plan(connection):
        rows = connection.execute(text(counts_sql(t, lo, width, by, hi))).all()
    for row in rows:
        if row.per_part:
            counts = parts.setdefault(int(row.part), dict.fromkeys(STATUSES, 0))
            counts[row.status] += int(row.pairs)
            continue
        pairs[row.status] += int(row.pairs)
        memberships += int(row.memberships)
        if row.bucket is not None:
            buckets.setdefault(int(row.bucket), {})[row.status] = (
                int(row.pairs),
                row.first_pair,
            )
    report = CoverageReport(
        active_memberships=memberships,
        eligible_pairs=pairs["covered"] + pairs["inactive"] + pairs["missing"],
        covered=pairs["covered"],
        inactive=pairs["inactive"],
        missing=pairs["missing"],
        anomalies={kind: pairs[kind] for kind in ANOMALY_KINDS},
    )
    if by is not None:
        report.breakdown_by = by
        report.breakdown = sorted(
            (
                {
                    BREAKDOWNS[by]: key,
                    "eligible_pairs": c["covered"] + c["inactive"] + c["missing"],
                    "covered": c["covered"],
                    "inactive": c["inactive"],
                    "missing": c["missing"],
                    "anomalies": c["non_student"] + c["cross_school"],
                }
                for key, c in parts.items()
            ),
            key=lambda r: (-r["missing"], -r["inactive"], r[BREAKDOWNS[by]]),
        )
        report.breakdown_names = _breakdown_names(connection, report.breakdown[:limit], by, t)
    if limit > 0:
        samples = _samples(connection, buckets, lo, width, limit, t)
        report.missing_pairs = samples["missing"]
        report.inactive_pairs = samples["inactive"]
        report.anomaly_pairs = {kind: samples[kind] for kind in ANOMALY_KINDS}
    return report


def _breakdown_names(
    connection: Connection, rows: list[dict], by: str, t: Tables
) -> dict[int, str]:
    """The names of the schools or courses of the breakdown rows the text shows (the
    first ``--limit``), in one lookup; JSON keeps the ids only, as the contract says."""
    table = t.schools if by == "school" else t.courses
    ids = ",".join(str(int(r[BREAKDOWNS[by]])) for r in rows)
    if not ids:
        return {}
    return dict(
        connection.execute(
            text(f"SELECT id, name FROM {table} WHERE id = ANY (ARRAY[{ids}]::integer[])")
        ).all()
    )


def _samples(
    connection: Connection,
    buckets: dict[int, dict[str, tuple[int, list[int]]]],
    lo: int,
    width: int,
    limit: int,
    t: Tables,
) -> dict[str, list[PairSample]]:
    """The first ``limit`` pairs of each sampled status, in one statement: from the counts
    per bucket, the first buckets that hold ``limit`` of each; a bucket that holds one
    pair of a status is that pair (the counts name it), read alone; the others are read
    whole. A sparse kind costs a few pairs' lookups, a dense one its first bucket."""
    found: dict[str, list[PairSample]] = {status: [] for status in SAMPLED_STATUSES}
    wanted: dict[int, list[str]] = {}
    single: list[tuple[int, int, tuple[str, ...], int | None]] = []
    for status in SAMPLED_STATUSES:
        have = 0
        for bucket in sorted(b for b, counts in buckets.items() if status in counts):
            if have >= limit:
                break
            pairs, first = buckets[bucket][status]
            if pairs == 1:
                student, course = int(first[0]), int(first[1])
                single.append((student, student + 1, (status,), course))
            else:
                wanted.setdefault(bucket, []).append(status)
            have += pairs
    ranges = single + [
        (lo + bucket * width, lo + (bucket + 1) * width, tuple(statuses), None)
        for bucket, statuses in sorted(wanted.items())
    ]
    if not ranges:
        return found
    for row in connection.execute(text(samples_sql(ranges, limit, t))):
        found[row.status].append(
            PairSample(
                student_id=row.student_id,
                course_id=row.course_id,
                student_name=row.student_name,
                email=row.email,
                course_name=row.course_name,
                groups=int(row.memberships),
                role=row.role,
            )
        )
    return found
