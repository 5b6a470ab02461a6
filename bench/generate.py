"""Generate a legacy database (revision 0001 schema) of a given *shape*, set-based.

A shape says how the data is laid out, a size how much of it there is. The knobs are the
ones plans and batches are sensitive to: memberships per student, students per course
(students over courses), courses per school, the share of pairs already enrolled, the
share of anomalies, and gaps in the ids. Three shapes ship (``SHAPES``); ``--shape
name:knob=value,...`` in ``python -m bench.run`` describes another, for instance a copy of
your own data's proportions.

Every shape: one or two groups per (student, course) pair, a share of inactive memberships
(1 in 5 of them NULL), a teacher per course in one of its groups, students who are also
in another school's course (cross-school anomalies), archived students and courses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from sqlalchemy import text
from sqlalchemy.engine import Connection


@dataclass(frozen=True)
class Shape:
    name: str = "default"
    schools: int = 20
    courses_per_school: int = 60
    courses_per_student: int = 6  # distinct courses of a student (in their school)
    second_group_every: int = 4  # 1 pair in N has a membership in a second group
    enrolled_active_pct: int = 70  # of eligible pairs, with an active enrollment
    enrolled_inactive_pct: int = 10  # ... with an inactive one; the rest is missing
    inactive_membership_pct: int = 5
    cross_school_every: int = 200  # 1 student in N also in another school's course
    teachers_per_course: int = 1
    id_stride: int = 1  # user and membership ids 1, 1 + stride, ...: gaps between ids

    GROUPS_PER_COURSE = 4

    @property
    def courses(self) -> int:
        return self.schools * self.courses_per_school

    def memberships_per_student(self) -> float:
        per_pair = 1 + 1 / self.second_group_every
        return self.courses_per_student * per_pair

    def students_for(self, memberships: int) -> int:
        """Students that make about ``memberships`` memberships in this shape."""
        return max(1, round(memberships / self.memberships_per_student()))

    def describe(self) -> str:
        return (
            f"{self.name}: {self.schools} schools x {self.courses_per_school} courses, each "
            f"student in {self.courses_per_student} of their school's courses "
            f"({self.memberships_per_student():.2f} memberships), "
            f"{self.enrolled_active_pct}% of pairs enrolled, {self.enrolled_inactive_pct}% "
            f"inactive, {self.teachers_per_course} teacher(s) a course in a group, 1 student "
            f"in {self.cross_school_every} cross-school, id stride {self.id_stride}"
        )

    def as_json(self) -> dict:
        return asdict(self)

    @classmethod
    def parse(cls, spec: str) -> Shape:
        """``name`` of a shipped shape, or ``name:knob=value,...`` (knobs of ``Shape``;
        a shipped name first takes its values as the base)."""
        name, _, knobs = spec.partition(":")
        base = SHAPES.get(name, cls(name=name))
        known = {f.name for f in fields(cls)} - {"name"}
        values = {}
        for item in filter(None, knobs.split(",")):
            key, _, value = item.partition("=")
            if key not in known:
                raise ValueError(f"unknown shape knob {key!r}: one of {', '.join(sorted(known))}")
            values[key] = int(value)
        return replace(base, name=name, **values)


SHAPES = {
    # The original bench's data: 20 schools of 60 courses, 6 courses a student.
    "default": Shape(),
    # Many memberships a student and many students a course, mostly enrolled already:
    # 10 schools of 30 courses, each student in 25 of their school's 30.
    "dense": Shape(
        name="dense",
        schools=10,
        courses_per_school=30,
        courses_per_student=25,
        second_group_every=10,
        enrolled_active_pct=95,
        enrolled_inactive_pct=2,
        inactive_membership_pct=2,
        cross_school_every=1000,
    ),
    # A first deploy: nothing enrolled yet; many small schools (5 courses each), 3 courses
    # a student; many anomalies (3 teachers a course in groups, 1 student in 20 in another
    # school's course); ids with gaps (every 13th id used).
    "fresh": Shape(
        name="fresh",
        schools=400,
        courses_per_school=5,
        courses_per_student=3,
        second_group_every=2,
        enrolled_active_pct=0,
        enrolled_inactive_pct=0,
        inactive_membership_pct=10,
        cross_school_every=20,
        teachers_per_course=3,
        id_stride=13,
    ),
}


def generate(
    connection: Connection, students: int = 200_000, shape: Shape | None = None
) -> dict[str, int]:
    """Fill an empty 0001 database; returns row counts. Deterministic for a given size and
    shape."""
    s = shape or SHAPES["default"]
    if s.courses_per_student > s.courses_per_school:
        raise ValueError("courses_per_student cannot exceed courses_per_school")
    stride = int(s.id_stride)
    groups = s.courses * Shape.GROUPS_PER_COURSE
    # A student's k-th course: k steps of a stride coprime with courses_per_school, so that
    # the courses of one student are distinct.
    step = next(
        n for n in range(13, 13 + s.courses_per_school) if _gcd(n, s.courses_per_school) == 1
    )
    next_id = f"(SELECT coalesce(max(id), 0) FROM group_members) + {stride} * row_number() OVER"
    inactive = max(1, round(100 / s.inactive_membership_pct)) if s.inactive_membership_pct else 0
    member_active = (
        f"CASE WHEN (u.id / {stride} * 7 + k * 3 + g.team_number) % {inactive} <> 0 THEN true "
        f"WHEN (u.id / {stride} + k) % 5 = 0 THEN NULL ELSE false END"
        if inactive
        else "true"
    )
    steps = [
        f"""INSERT INTO schools (name)
            SELECT 'School ' || s FROM generate_series(1, {s.schools}) AS s""",
        f"""INSERT INTO courses (school_id, name, code, is_active)
            SELECT s, 'Course ' || s || '-' || c, 'C' || c, c % 30 <> 0
            FROM generate_series(1, {s.schools}) AS s,
                 generate_series(1, {s.courses_per_school}) AS c
            ORDER BY s, c""",
        f"""INSERT INTO groups (school_id, course_id, name, team_number)
            SELECT c.school_id, c.id, 'Group ' || g, g
            FROM courses AS c, generate_series(1, {Shape.GROUPS_PER_COURSE}) AS g
            ORDER BY c.id, g""",
        # Students (1% archived), ids 1, 1 + stride, ...; then teachers and admins.
        f"""INSERT INTO users (id, school_id, email, name, role, archived)
            SELECT 1 + (i - 1) * {stride}, 1 + i % {s.schools}, 'student' || i || '@school.example',
                   'Student ' || i, 'student', i % 100 = 0
            FROM generate_series(1, {students}) AS i""",
        f"""INSERT INTO users (id, school_id, email, name, role)
            SELECT {students * stride} + row_number() OVER (ORDER BY c.id, t) * {stride},
                   c.school_id, 'teacher' || c.id || '-' || t || '@school.example',
                   'Teacher ' || c.id || '-' || t, 'teacher'
            FROM courses AS c, generate_series(1, {s.teachers_per_course}) AS t""",
        f"""INSERT INTO users (id, school_id, email, name, role)
            SELECT (SELECT max(id) FROM users) + s * {stride}, s,
                   'admin' || s || '@school.example', 'Admin ' || s, 'admin'
            FROM generate_series(1, {s.schools}) AS s""",
        "SELECT setval(pg_get_serial_sequence('users', 'id'), (SELECT max(id) FROM users))",
        # Student memberships: courses_per_student distinct courses of the student's
        # school; group 1 or 2 always, group 3 or 4 too for 1 pair in second_group_every.
        f"""INSERT INTO group_members (id, school_id, group_id, user_id, role_in_team, active)
            SELECT {next_id} (ORDER BY u.id, k, g.team_number),
                   u.school_id, g.id, u.id, NULL, {member_active}
            FROM users AS u
            CROSS JOIN generate_series(0, {s.courses_per_student - 1}) AS k
            JOIN courses AS c ON c.school_id = u.school_id
             AND c.code = 'C' || (1 + (u.id / {stride} * 7 + k * {step}) % {s.courses_per_school})
            JOIN groups AS g ON g.course_id = c.id
             AND (g.team_number = 1 + u.id / {stride} % 2
                  OR (g.team_number = 3 + u.id / {stride} % 2
                      AND (u.id / {stride} + k) % {s.second_group_every} = 0))
            WHERE u.role = 'student'
            ORDER BY 1""",
        # Teachers in a group of their course; some students also in another school's
        # course (cross-school anomalies).
        f"""INSERT INTO group_members (id, school_id, group_id, user_id, role_in_team, active)
            SELECT {next_id} (ORDER BY t.id), t.school_id, g.id, t.id, 'teacher', true
            FROM users AS t
            JOIN courses AS c ON c.id = split_part(substr(t.email, 8), '-', 1)::integer
            JOIN groups AS g ON g.course_id = c.id AND g.team_number = 1
            WHERE t.role = 'teacher'
            ORDER BY 1""",
        f"""INSERT INTO group_members (id, school_id, group_id, user_id, role_in_team, active)
            SELECT {next_id} (ORDER BY u.id), g.school_id, g.id, u.id, NULL, true
            FROM users AS u
            JOIN groups AS g ON g.id = 1 + (u.id / {stride} * 31) % {groups}
            WHERE u.role = 'student' AND u.id / {stride} % {s.cross_school_every} = 0
              AND g.school_id <> u.school_id
            ORDER BY 1""",
        """SELECT setval(pg_get_serial_sequence('group_members', 'id'),
                         (SELECT max(id) FROM group_members))""",
        # Enrollments of the eligible-looking pairs (student, own school): active,
        # inactive or missing by a hash of the pair.
        f"""INSERT INTO course_enrollments (course_id, student_id, active)
            SELECT course_id, user_id, (user_id * 17 + course_id) % 100 < {s.enrolled_active_pct}
            FROM (
                SELECT DISTINCT gm.user_id, g.course_id
                FROM group_members AS gm
                JOIN groups AS g ON g.id = gm.group_id
                JOIN users AS u ON u.id = gm.user_id
                WHERE u.role = 'student' AND u.school_id = g.school_id
            ) AS pairs
            WHERE (user_id * 17 + course_id) % 100
                  < {s.enrolled_active_pct + s.enrolled_inactive_pct}
            ORDER BY user_id, course_id""",
    ]
    for sql in steps:
        connection.execute(text(sql))
    counts = {}
    for table in ("users", "courses", "groups", "group_members", "course_enrollments"):
        counts[table] = connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
    return counts


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a
