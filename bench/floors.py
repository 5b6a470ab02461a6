"""The floors: the fastest hand-written SQL we know for each job, run through psql.

- **A3, the audit's counts**: the distinct (user, course) pairs of active memberships, in
  two halves by user parity joined with UNION ALL (each half gets its own parallel sort);
  users, courses and enrollments joined after; ``count(*) FILTER`` for each status.
- **A4**, the same counts from two halves by a range of student ids, each half whole:
  faster than A3 on some shapes, slower on others. The audit's floor is the faster of the
  two on each database (``python -m bench.shapes``).
- **B2, the backfill**: a MATERIALIZED CTE of the eligible pairs left-joined to
  ``course_enrollments``; reactivation by primary key from it; insertion of the rest in
  (course_id, student_id) order. No lock, no record, no conflict handling: what a backfill
  costs at the least.
- **The index**: a plain ``CREATE INDEX`` of ``(course_id, active)`` (the revision builds
  it concurrently, which reads the table twice).

A3 and B2 run with ``work_mem = '1GB'`` and ``jit = off`` (``SET LOCAL``), as the issue
that set the goals measured them. :func:`check` makes sure their counts are the audit's.
"""

from __future__ import annotations

FLOOR_SETTINGS = "SET LOCAL work_mem = '1GB'; SET LOCAL jit = off;"

A3 = f"""BEGIN; {FLOOR_SETTINGS}
SELECT
    count(*) FILTER (WHERE u.role = 'student' AND u.school_id = c.school_id) AS eligible_pairs,
    count(*) FILTER (WHERE u.role = 'student' AND u.school_id = c.school_id AND ce.active)
        AS covered,
    count(*) FILTER (WHERE u.role = 'student' AND u.school_id = c.school_id
                     AND ce.id IS NOT NULL AND NOT ce.active) AS inactive,
    count(*) FILTER (WHERE u.role = 'student' AND u.school_id = c.school_id AND ce.id IS NULL)
        AS missing,
    count(*) FILTER (WHERE u.role <> 'student') AS non_student,
    count(*) FILTER (WHERE u.role = 'student' AND u.school_id <> c.school_id) AS cross_school
FROM (
    SELECT DISTINCT gm.user_id, g.course_id
    FROM group_members AS gm JOIN groups AS g ON g.id = gm.group_id
    WHERE gm.active AND gm.user_id & 1 = 0
    UNION ALL
    SELECT DISTINCT gm.user_id, g.course_id
    FROM group_members AS gm JOIN groups AS g ON g.id = gm.group_id
    WHERE gm.active AND gm.user_id & 1 = 1
) AS p
JOIN users AS u ON u.id = p.user_id
JOIN courses AS c ON c.id = p.course_id
LEFT JOIN course_enrollments AS ce ON ce.course_id = p.course_id AND ce.student_id = p.user_id;
COMMIT;"""


def a4(middle: int) -> str:
    """**A4**: A3's counts from two halves by a range of student ids (``middle`` splits
    them), each half whole (its pairs, users and enrollments, hash joins), so that each
    runs in a process of its own; on some shapes faster than A3, on others slower."""

    def half(cond: str) -> str:
        def on(column: str) -> str:
            return cond.format(id=column)

        return f"""SELECT
        count(*) FILTER (WHERE u.role = 'student' AND u.school_id = c.school_id) AS e,
        count(*) FILTER (WHERE u.role = 'student' AND u.school_id = c.school_id AND ce.active)
            AS cov,
        count(*) FILTER (WHERE u.role = 'student' AND u.school_id = c.school_id
                         AND ce.id IS NOT NULL AND NOT ce.active) AS ina,
        count(*) FILTER (WHERE u.role = 'student' AND u.school_id = c.school_id
                         AND ce.id IS NULL) AS mis,
        count(*) FILTER (WHERE u.role <> 'student') AS ns,
        count(*) FILTER (WHERE u.role = 'student' AND u.school_id <> c.school_id) AS cs
    FROM (
        SELECT DISTINCT gm.user_id, g.course_id
        FROM group_members AS gm JOIN groups AS g ON g.id = gm.group_id
        WHERE gm.active AND {on("gm.user_id")}
    ) AS p
    JOIN users AS u ON u.id = p.user_id AND {on("u.id")}
    JOIN courses AS c ON c.id = p.course_id
    LEFT JOIN course_enrollments AS ce
        ON ce.course_id = p.course_id AND ce.student_id = p.user_id AND {on("ce.student_id")}"""

    return f"""BEGIN; {FLOOR_SETTINGS} SET LOCAL enable_nestloop = off;
SELECT sum(e), sum(cov), sum(ina), sum(mis), sum(ns), sum(cs) FROM (
    {half("{id} < " + str(int(middle)))}
    UNION ALL
    {half("{id} >= " + str(int(middle)))}
) AS halves;
COMMIT;"""


def middle_sql() -> str:
    """The student id that splits ``users`` in two, for :func:`a4`."""
    return "SELECT coalesce((min(id)::bigint + max(id) + 1) / 2, 0) FROM users"


B2 = f"""BEGIN; {FLOOR_SETTINGS}
WITH pairs AS MATERIALIZED (
    SELECT p.user_id, p.course_id, ce.id AS enrollment_id, ce.active
    FROM (
        SELECT DISTINCT gm.user_id, g.course_id
        FROM group_members AS gm
        JOIN groups AS g ON g.id = gm.group_id
        JOIN users AS u ON u.id = gm.user_id
        JOIN courses AS c ON c.id = g.course_id
        WHERE gm.active AND u.role = 'student' AND u.school_id = c.school_id
    ) AS p
    LEFT JOIN course_enrollments AS ce ON ce.course_id = p.course_id AND ce.student_id = p.user_id
),
reactivated AS (
    UPDATE course_enrollments AS ce SET active = true
    FROM pairs AS p
    WHERE ce.id = p.enrollment_id AND NOT p.active
    RETURNING ce.id
)
INSERT INTO course_enrollments (course_id, student_id, active)
SELECT course_id, user_id, true FROM pairs WHERE enrollment_id IS NULL
ORDER BY course_id, user_id;
COMMIT;"""

INDEX = "CREATE INDEX ix_floor_course_active ON course_enrollments (course_id, active);"

A3_COLUMNS = ("eligible_pairs", "covered", "inactive", "missing", "non_student", "cross_school")


def a3_counts(psql_output: str) -> dict[str, int]:
    """A3's row, as ``psql -At`` prints it (``BEGIN``/``SET``/``COMMIT`` lines aside)."""
    row = next(line for line in psql_output.splitlines() if line.count("|") == 5)
    return dict(zip(A3_COLUMNS, (int(v) for v in row.split("|")), strict=True))


def check(a3: dict[str, int], audit: dict) -> None:
    """The floor answers the audit's question: the same counts."""
    ours = {k: audit[k] for k in ("eligible_pairs", "covered", "inactive", "missing")}
    ours |= audit["anomalies"]
    if a3 != ours:
        raise SystemExit(f"bench: floor A3 counts {a3} differ from the audit's {ours}")
