"""The row-by-row baseline: what the original scripts did, one pair at a time.

They loaded the memberships into Python and, for each (student, course) pair, ran one
SELECT for its enrollment and then one INSERT or UPDATE when it had a gap, each a round
trip. Run here on the first ``--pairs`` eligible pairs (by membership id); the bench
scales the time up to all eligible pairs.

Usage: python -m bench.rowbyrow URL --pairs N   (prints: pairs seconds)
"""

from __future__ import annotations

import argparse
import time

import psycopg2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--pairs", type=int, default=5000)
    args = parser.parse_args()
    conn = psycopg2.connect(args.url)
    conn.autocommit = True
    cur = conn.cursor()
    started = time.monotonic()
    # As the original: memberships loaded into Python, pairs made there.
    cur.execute(
        "SELECT gm.user_id, g.course_id, u.role, u.school_id, c.school_id"
        " FROM group_members gm JOIN groups g ON g.id = gm.group_id"
        " JOIN users u ON u.id = gm.user_id JOIN courses c ON c.id = g.course_id"
        " WHERE gm.active ORDER BY gm.id LIMIT %s",
        (args.pairs * 2,),
    )
    pairs: list[tuple[int, int]] = []
    seen = set()
    for user_id, course_id, role, user_school, course_school in cur.fetchall():
        if role == "student" and user_school == course_school and (user_id, course_id) not in seen:
            seen.add((user_id, course_id))
            pairs.append((user_id, course_id))
    pairs = pairs[: args.pairs]
    for student_id, course_id in pairs:
        cur.execute(
            "SELECT id, active FROM course_enrollments WHERE student_id = %s AND course_id = %s",
            (student_id, course_id),
        )
        row = cur.fetchone()
        if row is None:
            cur.execute(
                "INSERT INTO course_enrollments (course_id, student_id, active)"
                " VALUES (%s, %s, true)",
                (course_id, student_id),
            )
        elif not row[1]:
            cur.execute("UPDATE course_enrollments SET active = true WHERE id = %s", (row[0],))
    print(len(pairs), time.monotonic() - started)


if __name__ == "__main__":
    main()
