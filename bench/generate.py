"""Generate a realistic legacy database (revision 0001 schema) with set-based SQL.

Default size: 200,000 students in 6 courses each, one or two groups per course (about
1.5 million memberships); about 20% of eligible pairs miss an enrollment, 10% have an
inactive one, 5% of memberships are inactive (some NULL), plus teachers in groups and
students with a membership in another school's course.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

SCHOOLS = 20
COURSES_PER_SCHOOL = 60
GROUPS_PER_COURSE = 4
COURSES_PER_STUDENT = 6


def generate(connection: Connection, students: int = 200_000) -> dict[str, int]:
    """Fill an empty 0001 database; returns row counts. Deterministic for a given size."""
    steps = [
        # Schools, courses (every 30th archived), groups.
        f"""INSERT INTO schools (name)
            SELECT 'School ' || s FROM generate_series(1, {SCHOOLS}) AS s""",
        f"""INSERT INTO courses (school_id, name, code, is_active)
            SELECT s, 'Course ' || s || '-' || c, 'C' || c, c % 30 <> 0
            FROM generate_series(1, {SCHOOLS}) AS s, generate_series(1, {COURSES_PER_SCHOOL}) AS c
            ORDER BY s, c""",
        f"""INSERT INTO groups (school_id, course_id, name, team_number)
            SELECT c.school_id, c.id, 'Group ' || g, g
            FROM courses AS c, generate_series(1, {GROUPS_PER_COURSE}) AS g
            ORDER BY c.id, g""",
        # Students (1% archived), then one teacher per course and a few admins.
        f"""INSERT INTO users (school_id, email, name, role, archived)
            SELECT 1 + i % {SCHOOLS}, 'student' || i || '@school.example',
                   'Student ' || i, 'student', i % 100 = 0
            FROM generate_series(1, {students}) AS i""",
        """INSERT INTO users (school_id, email, name, role)
            SELECT school_id, 'teacher' || id || '@school.example', 'Teacher ' || id, 'teacher'
            FROM courses ORDER BY id""",
        f"""INSERT INTO users (school_id, email, name, role)
            SELECT s, 'admin' || s || '@school.example', 'Admin ' || s, 'admin'
            FROM generate_series(1, {SCHOOLS}) AS s""",
        # Student memberships: 6 distinct courses of the student's school; group 1 or 2
        # always, a second group for a quarter of the pairs; 5% inactive (1 in 5 NULL).
        f"""INSERT INTO group_members (school_id, group_id, user_id, role_in_team, active)
            SELECT u.school_id, g.id, u.id, NULL,
                   CASE WHEN (u.id * 7 + k * 3 + g.team_number) % 20 <> 0 THEN true
                        WHEN (u.id + k) % 5 = 0 THEN NULL ELSE false END
            FROM users AS u
            CROSS JOIN generate_series(0, {COURSES_PER_STUDENT - 1}) AS k
            JOIN courses AS c ON c.school_id = u.school_id
             AND c.code = 'C' || (1 + (u.id * 7 + k * 13) % {COURSES_PER_SCHOOL})
            JOIN groups AS g ON g.course_id = c.id
             AND (g.team_number = 1 + u.id % 2
                  OR (g.team_number = 3 + u.id % 2 AND (u.id + k) % 4 = 0))
            WHERE u.role = 'student'
            ORDER BY u.id, k, g.team_number""",
        # Teachers in a group of their course; 1 student in 200 also in another school's
        # course (cross-school anomalies).
        """INSERT INTO group_members (school_id, group_id, user_id, role_in_team, active)
            SELECT t.school_id, g.id, t.id, 'teacher', true
            FROM users AS t
            JOIN courses AS c ON t.email = 'teacher' || c.id || '@school.example'
            JOIN groups AS g ON g.course_id = c.id AND g.team_number = 1
            WHERE t.role = 'teacher'""",
        f"""INSERT INTO group_members (school_id, group_id, user_id, role_in_team, active)
            SELECT g.school_id, g.id, u.id, NULL, true
            FROM users AS u
            JOIN groups AS g ON g.id = 1 + (u.id * 31) % ({
            SCHOOLS * COURSES_PER_SCHOOL * GROUPS_PER_COURSE
        })
            WHERE u.role = 'student' AND u.id % 200 = 0 AND g.school_id <> u.school_id""",
        # Enrollments for the pairs behind student memberships of their own school:
        # 70% active, 10% inactive, 20% missing (by a hash of the pair).
        """INSERT INTO course_enrollments (course_id, student_id, active)
            SELECT course_id, user_id, (user_id * 17 + course_id) % 10 <> 0
            FROM (
                SELECT DISTINCT gm.user_id, g.course_id
                FROM group_members AS gm
                JOIN groups AS g ON g.id = gm.group_id
                JOIN users AS u ON u.id = gm.user_id
                WHERE u.role = 'student' AND u.school_id = g.school_id
            ) AS pairs
            WHERE (user_id * 17 + course_id) % 10 NOT IN (1, 2)
            ORDER BY user_id, course_id""",
    ]
    for sql in steps:
        connection.execute(text(sql))
    counts = {}
    for table in ("users", "courses", "groups", "group_members", "course_enrollments"):
        counts[table] = connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
    return counts
