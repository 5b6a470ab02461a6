"""The sync trigger: ``course_enrollments`` keeps covering every eligible pair while the
legacy application writes only ``group_members`` (and users, groups, courses).

It acts when a pair may become eligible:

- a membership inserted active, or activated (false or NULL to true), or moved to another
  group or user: statement-level triggers on ``group_members`` with transition tables, so
  a bulk insert costs one set-based statement, not one call per row;
- a user whose role becomes ``student`` or whose school changes, a group moved to another
  course, a course moved to another school: row-level triggers whose ``WHEN`` clause lets
  every other update through without calling anything.

**What it enrolls: one meaning in every mode.** At the end of each statement that did one
of these, the trigger reads the pairs the statement touched *as they are then* and notes
the eligible ones; it never enrolls an anomaly as it reads it. A deferred constraint trigger
writes them when the transaction commits, or at the end of the statement where the
application set ``SET CONSTRAINTS ALL IMMEDIATE``: either way the pairs eligible at the end
of a statement of the transaction. A later statement of the same transaction that ends the
membership does not take the enrollment back (the trigger never deactivates).

**Concurrency.** Two transactions can each make half of a pair eligible (one adds a
teacher's membership, the other makes the teacher a student), each seeing only its own
change. So a pair found *not* eligible, and every user, group or course whose change the
trigger acts on, is marked in ``course_enrollments_sync_guard`` (a row per user, group,
course: written, so that it conflicts) before the pairs are read once more, at commit:

- READ COMMITTED: of two such transactions the second waits at the mark for the first to
  commit, then reads again with a new snapshot and sees its change;
- REPEATABLE READ and SERIALIZABLE: the second fails with a serialization failure (40001),
  which the application retries; never a silent gap.

A pair found eligible needs no mark: its enrollment is written. So students' memberships,
the common case, mark nothing and never wait on each other.

**Ordered, once per transaction.** Everything a transaction queued is applied in one pass,
at its end: the marks in (kind, id) order, the enrollments in (course, student) order. The
trigger adds no deadlock to an application that writes in a fixed order (it takes no lock
before the application's own writes), and none between two transactions that write
memberships. Under REPEATABLE READ, an enrollment another transaction committed after this
one's snapshot is that pair's enrollment: the trigger does not fail on it.

**Plans that hold whatever the statistics say.** Each statement starts from the rows it was
given (a transition table, the queued pairs, the changed row) and reads every other table
through a ``LATERAL`` subquery that ``OFFSET 0`` keeps whole: the planner can neither
flatten it nor turn the join around, so each read is an index lookup by key, whatever it
believes of a table (an empty record that grows by millions during the deploy's backfill,
stale statistics, autovacuum off). Planner settings alone were not enough: with sequential
scans off, a plan cached on the empty record drove the claim from a full scan of the
record's index. The functions also run with sequential scans, hash and merge joins off,
except the hash join matching an ``UPDATE``'s old and new rows (a nested loop over two
transition tables is quadratic).

**Safe as a definer.** The functions run as their owner (``SECURITY DEFINER``: the
application's role needs no privilege on ``course_enrollments``) and follow PostgreSQL's
rules for writing one ("Writing SECURITY DEFINER Functions Safely"):

- ``search_path`` pinned to ``pg_catalog, pg_temp``, and every table, function and
  operator in their bodies qualified: nothing planted in a writable schema, and no
  temporary table of the calling session, stands in for ours;
- ``EXECUTE`` revoked from PUBLIC (creating a trigger needs it), and each function
  refuses to run for any table but its own: a role cannot hang one on a table of its own
  to write enrollments;
- the queue and guard tables grant nothing to anyone but their owner.

Creating a trigger takes SHARE ROW EXCLUSIVE on its table (writes wait, reads do not);
dropping one, ACCESS EXCLUSIVE. Both go in one transaction for the four tables (all the
triggers, or none), each attempt under a short ``lock_timeout`` and retried with backoff
and jitter, naming who holds the table, until the run's patience is spent.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Connection

from enrollments_phase1.db import duration_seconds
from enrollments_phase1.lock import PREPARED_JOIN
from enrollments_phase1.migration_env import MigrationSettings
from enrollments_phase1.migrations.shared.v4.definition import (
    DEFINER,
    Tables,
    indent,
    is_student,
    quote_literal,
    same_school,
)
from enrollments_phase1.migrations.shared.v4.headers import header
from enrollments_phase1.migrations.shared.v4.run import execute_block, in_transaction, run_block

PENDING = "course_enrollments_sync_pending"
GUARD = "course_enrollments_sync_guard"
EQ, NE = DEFINER.eq, DEFINER.ne
XACT = "pg_catalog.pg_current_xact_id()"
# Every statement of the functions reads by key through an index, whatever the statistics.
PLAN_SETTINGS = (
    ("plan_cache_mode", "force_generic_plan"),
    ("enable_seqscan", "off"),
    ("enable_hashjoin", "off"),
    ("enable_mergejoin", "off"),
    ("jit", "off"),
)


def _guard(tables: Tables, table: str, function: str) -> str:
    """The first lines of a function: refuse to run for any other table."""
    return f"""    IF TG_RELID {NE} {quote_literal(getattr(tables, table))}::pg_catalog.regclass THEN
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
            MESSAGE = '{function} runs only as a sync trigger of {getattr(tables, table).replace("'", "''")}';
    END IF;"""


def _by_key(alias: str, columns: str, table: str, where: str, lock: str = "") -> str:
    """A LATERAL subquery reading ``table`` by key for each row before it: ``OFFSET 0``
    keeps it a subquery of its own (never flattened into the join), so the rows before it
    drive and every read of ``table`` is an index lookup with their values, whatever the
    statistics say of either side (an empty record that grows by millions, a transition
    table of one row or of millions)."""
    return (
        f"CROSS JOIN LATERAL (SELECT {columns} FROM {table} AS {alias}"
        f" WHERE {where} OFFSET 0{lock}) AS {alias}"
    )


def _candidates(tables: Tables, source: str, which: str) -> str:
    """The active memberships ``source`` (a FROM item aliased gm, with id, user_id,
    group_id, active) selects with ``which``, with their course and whether their pair is
    eligible as they are read: (membership, student_id, group_id, course_id, eligible).
    ``source`` drives; its group, course and user are read by key."""
    return f"""SELECT gm.id AS membership, gm.user_id AS student_id, gm.group_id, g.course_id,
    ({is_student(DEFINER)} AND {same_school(DEFINER)}) AS eligible
FROM {source}
{_by_key("g", "g.course_id", tables.groups, f"g.id {EQ} gm.group_id")}
{_by_key("c", "c.school_id", tables.courses, f"c.id {EQ} g.course_id")}
{_by_key("u", "u.role, u.school_id", tables.users, f"u.id {EQ} gm.user_id")}
WHERE gm.active IS TRUE{"" if which == "true" else f" AND {which}"}"""


def _queue_statement(tables: Tables, kind: str, candidates: str, ids: str) -> str:
    """At the end of the application's statement: queue the eligible pairs of
    ``candidates`` (written at commit) and ``ids`` (read again and marked at commit). The
    first row this transaction queues opens it (the one that fires the apply)."""
    queue = getattr(tables, PENDING)
    always = kind != "membership"  # a changed user, group or course is always marked
    return f"""INSERT INTO {queue} (kind, ids, courses, students, opens)
SELECT '{kind}', {ids}, k.courses, k.students,
    NOT EXISTS (SELECT 1 FROM {queue} AS q WHERE q.xact {EQ} {XACT})
FROM (
    SELECT pg_catalog.array_agg(x.course_id) FILTER (WHERE x.eligible) AS courses,
        pg_catalog.array_agg(x.student_id) FILTER (WHERE x.eligible) AS students,
        pg_catalog.array_agg(x.membership) FILTER (WHERE NOT x.eligible) AS rechecks,
        pg_catalog.count(*) AS touched
    FROM (
{indent(candidates, "        ")}
    ) AS x
) AS k{"" if always else f"{chr(10)}WHERE k.touched OPERATOR(pg_catalog.>) 0"}"""


def _pairs(courses: str, students: str) -> str:
    return (
        f"ROWS FROM (pg_catalog.unnest({courses}), pg_catalog.unnest({students}))"
        " AS p(course_id, student_id)"
    )


def _claim_statement(tables: Tables, courses: str = "courses", students: str = "students") -> str:
    """The enrollments of these pairs still as a backfill wrote them are the
    application's now: the undo keeps them. Still as written: the row's ``xmin`` is a
    recorded batch's (1.3's record, by its ``row_xmin`` index), or 1.2's record holds it
    unclaimed (by its ``enrollment_id`` index). Each is locked (FOR SHARE) as it is read,
    in the pairs' order (course, student), as the undo locks them: an undo that got there
    first has removed or changed the row, and the enrolling below makes it anew; one that
    comes later finds the claim. Every read is by key."""
    enrollments = tables.course_enrollments
    batches, record = tables.enrollment_backfill_batches, tables.enrollment_backfill_changes
    return f"""WITH met AS MATERIALIZED (
    SELECT e.id
    FROM {_pairs(courses, students)}
    {_by_key("e", "e.id, e.xmin", enrollments, f"e.course_id {EQ} p.course_id AND e.student_id {EQ} p.student_id AND e.active")}
    {_maybe_by_key("b", batches, f"b.row_xmin {EQ} e.xmin::pg_catalog.text::pg_catalog.int8")}
    {_maybe_by_key("r", record, f"r.enrollment_id {EQ} e.id AND r.claimed_at IS NULL")}
    WHERE b.found OR r.found
),
locked AS MATERIALIZED (
    SELECT l.id FROM met
    {_by_key("l", "l.id", enrollments, f"l.id {EQ} met.id AND l.active", " FOR SHARE")}
)
INSERT INTO {tables.enrollment_backfill_claims} (enrollment_id)
SELECT locked.id FROM locked ORDER BY locked.id
ON CONFLICT (enrollment_id) DO NOTHING"""


def _maybe_by_key(alias: str, table: str, where: str) -> str:
    """Whether ``table`` holds a row ``where`` says, for each row before it: ``alias``.found
    (NULL when not), read by key as :func:`_by_key` reads."""
    return (
        f"LEFT JOIN LATERAL (SELECT true AS found FROM {table} AS {alias}"
        f" WHERE {where} LIMIT 1 OFFSET 0) AS {alias} ON true"
    )


def _enroll_statement(tables: Tables, courses: str = "courses", students: str = "students") -> str:
    """Create the missing enrollments and reactivate the inactive ones, in order. The
    check for an active enrollment is a subplan per pair (``OFFSET 0``: never a join the
    planner could turn around), by the pair's unique index."""
    return f"""INSERT INTO {tables.course_enrollments} AS ce (course_id, student_id, active)
SELECT p.course_id, p.student_id, true
FROM {_pairs(courses, students)}
WHERE NOT EXISTS (
    SELECT 1 FROM {tables.course_enrollments} AS e
    WHERE e.course_id {EQ} p.course_id AND e.student_id {EQ} p.student_id AND e.active
    OFFSET 0
)
ORDER BY p.course_id, p.student_id
ON CONFLICT (course_id, student_id) DO UPDATE SET active = true WHERE NOT ce.active"""


def _members_of(tables: Tables, which: str) -> str:
    """The memberships ``which`` selects (a condition on x), read through an index."""
    return f"SELECT x.id, x.user_id, x.group_id, x.active FROM {tables.group_members} AS x WHERE {which}"


def _members_of_courses(tables: Tables, courses: str) -> str:
    """The memberships of every group of the courses ``courses`` (an expression on y):
    the groups by their course_id index, then each group's memberships by key."""
    members = _by_key(
        "x", "x.id, x.user_id, x.group_id, x.active", tables.group_members, f"x.group_id {EQ} y.id"
    )
    return (
        f"SELECT x.id, x.user_id, x.group_id, x.active FROM {tables.groups} AS y\n"
        f"{members}\nWHERE {courses}"
    )


def _recheck_candidates(tables: Tables) -> str:
    """The candidates behind what this transaction queued to read again: the memberships
    ``m_ids``, and every membership of the users ``u_ids``, the groups ``g_ids`` and the
    courses ``c_ids``; each set read through its own index."""
    source = f"""(
    {_members_of(tables, f"x.id {EQ} ANY (m_ids)")}
    UNION
    {_members_of(tables, f"x.user_id {EQ} ANY (u_ids)")}
    UNION
    {_members_of(tables, f"x.group_id {EQ} ANY (g_ids)")}
    UNION
{indent(_members_of_courses(tables, f"y.course_id {EQ} ANY (c_ids)"), "    ")}
) AS gm"""
    return _candidates(tables, source, "true")


def _mark_statement(tables: Tables) -> str:
    """Mark (write) the guard row of every changed user, group and course, and of the
    user, group and course of every candidate not eligible as read now; in (kind, id)
    order, so that two transactions never take them in opposite orders."""
    guard = getattr(tables, GUARD)
    return f"""INSERT INTO {guard} AS k (kind, id)
SELECT DISTINCT x.kind, x.id FROM (
    SELECT 'c' AS kind, i.id FROM pg_catalog.unnest(c_ids) AS i(id)
    UNION ALL SELECT 'g', i.id FROM pg_catalog.unnest(g_ids) AS i(id)
    UNION ALL SELECT 'u', i.id FROM pg_catalog.unnest(u_ids) AS i(id)
    UNION ALL
    SELECT v.kind, v.id FROM (
{indent(_recheck_candidates(tables), "        ")}
    ) AS n
    CROSS JOIN LATERAL (VALUES ('c', n.course_id), ('g', n.group_id), ('u', n.student_id)) AS v(kind, id)
    WHERE NOT n.eligible
) AS x
ORDER BY x.kind, x.id
ON CONFLICT (kind, id) DO UPDATE SET marks = k.marks OPERATOR(pg_catalog.+) 1"""


def _apply_body(tables: Tables) -> str:
    queue = getattr(tables, PENDING)
    recheck = _recheck_candidates(tables)
    write = f"""{_claim_statement(tables)};
{_enroll_statement(tables)};"""
    write_one = f"""{_claim_statement(tables, "one_course", "one_student")};
{_enroll_statement(tables, "one_course", "one_student")};"""
    return f"""DECLARE
    courses integer[];
    students integer[];
    m_ids integer[];
    u_ids integer[];
    g_ids integer[];
    c_ids integer[];
    one_course integer[];
    one_student integer[];
BEGIN
{_guard(tables, PENDING, "course_enrollments_sync_apply")}
    -- An earlier firing has applied everything this transaction queued.
    IF NOT EXISTS (SELECT 1 FROM {queue} AS q WHERE q.id {EQ} NEW.id) THEN
        RETURN NULL;
    END IF;
    -- Everything this transaction queued, in one pass: its pairs eligible at the end of a
    -- statement, and what to read again.
    WITH mine AS MATERIALIZED (
        DELETE FROM {queue} AS q WHERE q.xact {EQ} {XACT}
        RETURNING q.kind, q.ids, q.courses, q.students
    ),
    ids AS (
        SELECT m.kind, i.id FROM mine AS m CROSS JOIN LATERAL pg_catalog.unnest(m.ids) AS i(id)
    ),
    -- The pairs in one pass, both arrays in the same order (sorted once, below).
    queued AS (
        SELECT pg_catalog.array_agg(p.course_id) AS courses, pg_catalog.array_agg(p.student_id) AS students
        FROM mine AS m
        CROSS JOIN LATERAL ROWS FROM (pg_catalog.unnest(m.courses), pg_catalog.unnest(m.students)) AS p(course_id, student_id)
    )
    SELECT queued.courses, queued.students,
        (SELECT pg_catalog.array_agg(DISTINCT i.id) FROM ids AS i WHERE i.kind {EQ} 'membership'),
        (SELECT pg_catalog.array_agg(DISTINCT i.id) FROM ids AS i WHERE i.kind {EQ} 'user'),
        (SELECT pg_catalog.array_agg(DISTINCT i.id) FROM ids AS i WHERE i.kind {EQ} 'group'),
        (SELECT pg_catalog.array_agg(DISTINCT i.id) FROM ids AS i WHERE i.kind {EQ} 'course')
    INTO courses, students, m_ids, u_ids, g_ids, c_ids
    FROM queued;
    IF m_ids IS NOT NULL OR u_ids IS NOT NULL OR g_ids IS NOT NULL OR c_ids IS NOT NULL THEN
        -- Mark what a concurrent transaction may be changing too (see the module's notes):
        -- the second of two waits here (READ COMMITTED) or fails (REPEATABLE READ) ...
{indent(_mark_statement(tables), "        ")};
        -- ... then read again: under READ COMMITTED a new snapshot, taken after the wait.
        SELECT pg_catalog.array_cat(courses, pg_catalog.array_agg(n.course_id)),
            pg_catalog.array_cat(students, pg_catalog.array_agg(n.student_id))
        INTO courses, students
        FROM (
{indent(recheck, "            ")}
        ) AS n
        WHERE n.eligible;
    END IF;
    IF courses IS NULL THEN
        RETURN NULL;
    END IF;
    -- Each pair once, in (course, student) order.
    SELECT pg_catalog.array_agg(p.course_id ORDER BY p.course_id, p.student_id),
        pg_catalog.array_agg(p.student_id ORDER BY p.course_id, p.student_id)
    INTO courses, students
    FROM (
        SELECT DISTINCT x.course_id, x.student_id
        FROM ROWS FROM (pg_catalog.unnest(courses), pg_catalog.unnest(students)) AS x(course_id, student_id)
    ) AS p;
    IF pg_catalog.current_setting('transaction_isolation') {EQ} 'read committed' THEN
{indent(write, "        ")}
        RETURN NULL;
    END IF;
    BEGIN
{indent(write, "        ")}
    EXCEPTION WHEN serialization_failure THEN
        -- REPEATABLE READ or SERIALIZABLE: a pair's enrollment was committed by another
        -- transaction after this one's snapshot. That pair has its enrollment; every other
        -- pair is written, one by one.
        FOR i IN 1 .. pg_catalog.cardinality(courses) LOOP
            one_course := ARRAY[courses[i]];
            one_student := ARRAY[students[i]];
            BEGIN
{indent(write_one, "                ")}
            EXCEPTION WHEN serialization_failure THEN
                NULL;
            END;
        END LOOP;
    END;
    RETURN NULL;
END"""


MEMBER_SOURCE = {
    "INSERT": ("new_members AS gm", "true"),
    # Only rows that may have become eligible: activated, or moved.
    "UPDATE": (
        "new_members AS gm JOIN old_members AS o ON o.id OPERATOR(pg_catalog.=) gm.id",
        "(o.active IS NOT TRUE OR o.group_id OPERATOR(pg_catalog.<>) gm.group_id"
        " OR o.user_id OPERATOR(pg_catalog.<>) gm.user_id)",
    ),
}


def _members_body(tables: Tables) -> str:
    insert, update = (
        _queue_statement(
            tables,
            "membership",
            _candidates(tables, source, which),
            "k.rechecks",
        )
        for source, which in (MEMBER_SOURCE["INSERT"], MEMBER_SOURCE["UPDATE"])
    )
    return f"""BEGIN
{_guard(tables, "group_members", "course_enrollments_sync_members")}
    IF TG_OP {EQ} 'INSERT' THEN
{indent(insert, "        ")};
    ELSE
        -- The statement's old and new rows matched by a hash join, whatever their number
        -- (a nested loop over two transition tables is quadratic); the settings are the
        -- function's own, put back when it returns.
        PERFORM pg_catalog.set_config('enable_hashjoin', 'on', true);
        PERFORM pg_catalog.set_config('enable_nestloop', 'off', true);
{indent(update, "        ")};
    END IF;
    RETURN NULL;
END"""


# A changed user, group or course: the memberships behind it, read at the end of the
# statement, through an index.
def _entity_members(tables: Tables, kind: str) -> str:
    if kind == "course":
        return _members_of_courses(tables, f"y.course_id {EQ} NEW.id")
    column = {"user": "x.user_id", "group": "x.group_id"}[kind]
    return _members_of(tables, f"{column} {EQ} NEW.id")


def _row_body(tables: Tables, table: str, kind: str, function: str) -> str:
    source = f"(\n{indent(_entity_members(tables, kind))}\n) AS gm"
    candidates = _candidates(tables, source, "true")
    return f"""BEGIN
{_guard(tables, table, function)}
{indent(_queue_statement(tables, kind, candidates, "ARRAY[NEW.id]"), "    ")};
    RETURN NULL;
END"""


@dataclass(frozen=True)
class Function:
    name: str
    body: str
    comment: str


def functions(tables: Tables) -> list[Function]:
    return [
        Function(
            "course_enrollments_sync_members",
            _members_body(tables),
            "queues the memberships a statement inserted active, activated or moved",
        ),
        Function(
            "course_enrollments_sync_user",
            _row_body(tables, "users", "user", "course_enrollments_sync_user"),
            "queues a user who became a student or moved school",
        ),
        Function(
            "course_enrollments_sync_group",
            _row_body(tables, "groups", "group", "course_enrollments_sync_group"),
            "queues a group moved to another course",
        ),
        Function(
            "course_enrollments_sync_course",
            _row_body(tables, "courses", "course", "course_enrollments_sync_course"),
            "queues a course moved to another school",
        ),
        Function(
            "course_enrollments_sync_apply",
            _apply_body(tables),
            "at commit: enrolls what was queued",
        ),
    ]


@dataclass(frozen=True)
class Trigger:
    name: str
    table: str
    function: str
    definition: str  # CREATE [CONSTRAINT] TRIGGER name ... with {table} and {function}

    def create_sql(self, tables: Tables) -> str:
        return self.definition.format(
            name=self.name,
            table=getattr(tables, self.table),
            function=getattr(tables, self.function),
        )


TRIGGERS = (
    Trigger(
        "course_enrollments_sync_on_insert",
        "group_members",
        "course_enrollments_sync_members",
        "CREATE TRIGGER {name} AFTER INSERT ON {table} REFERENCING NEW TABLE AS new_members\n"
        "FOR EACH STATEMENT EXECUTE FUNCTION {function}()",
    ),
    Trigger(
        "course_enrollments_sync_on_update",
        "group_members",
        "course_enrollments_sync_members",
        "CREATE TRIGGER {name} AFTER UPDATE ON {table}\n"
        "REFERENCING OLD TABLE AS old_members NEW TABLE AS new_members\n"
        "FOR EACH STATEMENT EXECUTE FUNCTION {function}()",
    ),
    Trigger(
        "course_enrollments_sync_on_user",
        "users",
        "course_enrollments_sync_user",
        "CREATE TRIGGER {name} AFTER UPDATE OF role, school_id ON {table} FOR EACH ROW\n"
        "WHEN (NEW.role = 'student' AND (OLD.role IS DISTINCT FROM NEW.role\n"
        "      OR OLD.school_id IS DISTINCT FROM NEW.school_id))\n"
        "EXECUTE FUNCTION {function}()",
    ),
    Trigger(
        "course_enrollments_sync_on_group",
        "groups",
        "course_enrollments_sync_group",
        "CREATE TRIGGER {name} AFTER UPDATE OF course_id ON {table} FOR EACH ROW\n"
        "WHEN (OLD.course_id IS DISTINCT FROM NEW.course_id)\n"
        "EXECUTE FUNCTION {function}()",
    ),
    Trigger(
        "course_enrollments_sync_on_course",
        "courses",
        "course_enrollments_sync_course",
        "CREATE TRIGGER {name} AFTER UPDATE OF school_id ON {table} FOR EACH ROW\n"
        "WHEN (OLD.school_id IS DISTINCT FROM NEW.school_id)\n"
        "EXECUTE FUNCTION {function}()",
    ),
)
APPLY = Trigger(
    "course_enrollments_sync_apply",
    PENDING,
    "course_enrollments_sync_apply",
    "CREATE CONSTRAINT TRIGGER {name} AFTER INSERT ON {table}\n"
    "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.opens) EXECUTE FUNCTION {function}()",
)
TABLES = ("group_members", "users", "groups", "courses")
ALL_TRIGGERS = (*TRIGGERS, APPLY)
NAMES = tuple(f.name for f in functions(Tables()))


def _named(tables: Tables, trigger: Trigger) -> str:
    """A trigger of that name is on its table (whatever it calls)."""
    return (
        f"SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = {tables.regclass(trigger.table)}"
        f" AND t.tgname = '{trigger.name}' AND NOT t.tgisinternal"
    )


def _ours(tables: Tables, trigger: Trigger) -> str:
    """The trigger is there, on its table, calling our function (the apply trigger: once
    per transaction, ``WHEN (NEW.opens)``)."""
    ours = f"{_named(tables, trigger)} AND t.tgfoid = {_function_oid(tables, trigger.function)}"
    return ours + (" AND t.tgqual IS NOT NULL" if trigger is APPLY else "")


def _function_oid(tables: Tables, name: str) -> str:
    return f"pg_catalog.to_regprocedure({quote_literal(getattr(tables, name) + '()')})"


def keeping_sql(tables: Tables) -> str:
    """SELECT true when sync triggers keep coverage: the five triggers on the legacy tables
    are there (this version's or 1.1's) and, where a queue table exists, so is the trigger
    that applies it at commit."""
    on_tables = "\n   AND ".join(f"EXISTS ({_named(tables, trig)})" for trig in TRIGGERS)
    return (
        f"SELECT {on_tables}\n   AND ({tables.regclass(PENDING)} IS NULL"
        f" OR EXISTS ({_named(tables, APPLY)})) AS keeping"
    )


def installed_sql(tables: Tables) -> str:
    """SELECT true when every sync trigger is installed (on its table, calling ours)."""
    return (
        "SELECT "
        + "\n   AND ".join(f"EXISTS ({_ours(tables, t)})" for t in ALL_TRIGGERS)
        + " AS installed"
    )


def queue_sql(tables: Tables, settings: MigrationSettings) -> str:
    """One DO block: the queue and the guard, as this version keeps them. 1.2's queue gains
    its columns in place, under a short lock on the queue alone (retried): in-flight
    transactions that queued under 1.2's functions finish first, and the defaults keep
    1.2's functions working until they are replaced."""
    queue, guard = getattr(tables, PENDING), getattr(tables, GUARD)
    column = (
        f"SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = {tables.regclass(PENDING)}"
        " AND attname = 'xact' AND NOT attisdropped"
    )
    body = f"""SET LOCAL client_min_messages = warning;
-- What the sync triggers queue for the end of the transaction that wrote it: rows live
-- only inside that transaction. Owner only; unlogged (never kept past a crash).
CREATE UNLOGGED TABLE IF NOT EXISTS {queue} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind text NOT NULL,
    ids integer[],
    xact xid8 DEFAULT pg_catalog.pg_current_xact_id() NOT NULL,
    courses integer[],
    students integer[],
    opens boolean DEFAULT true NOT NULL
);
IF NOT EXISTS ({column}) THEN
    -- 1.2's queue (rows only of transactions in flight, which this lock waited for).
    ALTER TABLE {queue} ALTER COLUMN ids DROP NOT NULL,
        ADD COLUMN xact xid8, ADD COLUMN courses integer[], ADD COLUMN students integer[],
        ADD COLUMN opens boolean;
    ALTER TABLE {queue} ALTER COLUMN xact SET DEFAULT pg_catalog.pg_current_xact_id(),
        ALTER COLUMN xact SET NOT NULL, ALTER COLUMN opens SET DEFAULT true,
        ALTER COLUMN opens SET NOT NULL;
END IF;
CREATE INDEX IF NOT EXISTS {PENDING}_xact ON {queue} (xact);
REVOKE ALL ON {queue} FROM PUBLIC;
-- Marks of users, groups and courses whose change, or whose pair not eligible, a
-- transaction acts on: written, so that two such transactions conflict. Owner only.
CREATE UNLOGGED TABLE IF NOT EXISTS {guard} (
    kind text NOT NULL,
    id integer NOT NULL,
    marks bigint DEFAULT 1 NOT NULL,
    CONSTRAINT {GUARD}_pkey PRIMARY KEY (kind, id)
);
REVOKE ALL ON {guard} FROM PUBLIC;"""
    return with_lock_retries(
        "preparing the sync queue",
        body,
        tables,
        (PENDING,),
        ("RowExclusiveLock", *CREATE_CONFLICTS[1:]),
        settings,
    )


def objects_sql(tables: Tables) -> list[str]:
    """The functions, created or replaced, and their privileges. Locks no table: run after
    :func:`queue_sql`, before the triggers exist or under older ones (which then call these
    bodies at once), in one transaction."""
    settings = "\n".join(f"SET {name} = {value}" for name, value in PLAN_SETTINGS)
    parts = []
    for function in functions(tables):
        parts.append(
            f"""-- {function.name}: {function.comment}.
CREATE OR REPLACE FUNCTION {getattr(tables, function.name)}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
{settings}
AS $sync$
{function.body}
$sync$"""
        )
        parts.append(f"REVOKE ALL ON FUNCTION {getattr(tables, function.name)}() FROM PUBLIC")
    return parts


def apply_trigger_sql(tables: Tables, settings: MigrationSettings) -> str:
    """One DO block: the trigger that applies the queue, once per transaction (1.2's fired
    for every queued row: replaced), under a short lock on the queue, retried."""
    queue = getattr(tables, PENDING)
    body = f"""IF NOT EXISTS ({_ours(tables, APPLY)}) THEN
    IF EXISTS ({_named(tables, APPLY)}) THEN
        DROP TRIGGER {APPLY.name} ON {queue};
    END IF;
{indent(APPLY.create_sql(tables))};
END IF;"""
    return with_lock_retries(
        "installing the trigger that applies the sync queue",
        body,
        tables,
        (PENDING,),
        DROP_CONFLICTS,
        settings,
    )


# The lock modes a CREATE TRIGGER (SHARE ROW EXCLUSIVE) and a DROP TRIGGER (ACCESS
# EXCLUSIVE) wait for: whoever holds one of them on the table is named.
CREATE_CONFLICTS = (
    "RowExclusiveLock",
    "ShareUpdateExclusiveLock",
    "ShareLock",
    "ShareRowExclusiveLock",
    "ExclusiveLock",
    "AccessExclusiveLock",
)
DROP_CONFLICTS = ("AccessShareLock", "RowShareLock", *CREATE_CONFLICTS)


def with_lock_retries(
    what: str,
    body: str,
    tables: Tables,
    on: tuple[str, ...],
    modes: tuple[str, ...],
    settings: MigrationSettings,
    take: str | None = None,
) -> str:
    """A DO block running ``body`` (statements that lock the tables ``on``), each attempt
    under the run's short ``lock_timeout``, retried with backoff and jitter until the
    run's patience is spent; every waiting line and the final failure name the sessions
    that hold a conflicting lock (pid, application_name, state, transaction age).

    With ``take`` (a lock mode), each attempt first locks the tables ``on`` in that mode,
    in order, all within one ``lock_timeout``: each lock waits only for what is left of
    it. Locked one after another with a whole ``lock_timeout`` each, the application's
    writes to the first table queued behind the granted lock while the others were
    waited for (2.5 s measured with 500 ms)."""
    relations = ", ".join(tables.regclass(t) for t in on)
    wanted = ", ".join(f"'{m}'" for m in modes)
    upfront = (
        f"""-- the tables, all within one lock_timeout (none set: each waits as long as it takes)
budget := nullif(pg_catalog.current_setting('lock_timeout'), '0');
deadline := pg_catalog.clock_timestamp() + budget::interval;
FOREACH relation IN ARRAY ARRAY[{relations}] LOOP
    IF budget IS NOT NULL THEN
        PERFORM pg_catalog.set_config('lock_timeout', pg_catalog.ceil(1000 * pg_catalog.date_part('epoch',
            greatest(deadline - pg_catalog.clock_timestamp(), interval '1 ms')))::bigint || 'ms', true);
    END IF;
    EXECUTE pg_catalog.format('LOCK TABLE %s IN {take} MODE', relation);
END LOOP;
PERFORM pg_catalog.set_config('lock_timeout', coalesce(budget, '0'), true);
"""
        if take
        else ""
    )
    return f"""-- {what}: each attempt waits at most lock_timeout ({settings.lock_timeout}) for the tables, so the
-- application's writes never queue behind it for longer; retried until {settings.lock_patience}.
DO $ddl$
DECLARE
    started timestamptz := pg_catalog.clock_timestamp();
    attempt integer := 0;
    holders text;
    budget text;
    deadline timestamptz;
    relation regclass;
BEGIN
    LOOP
        BEGIN
{indent(upfront + body, "            ")}
            EXIT;
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            attempt := attempt + 1;
            -- in this database only (another database's relation may have the same oid); a
            -- prepared transaction (no pid) by its gid, found through its own xid's lock
            SELECT pg_catalog.string_agg(DISTINCT CASE
                       WHEN l.pid IS NULL THEN pg_catalog.format('prepared transaction %s (owner %s, prepared %s ago: COMMIT PREPARED or ROLLBACK PREPARED ends it)',
                           coalesce(pg_catalog.quote_literal(px.gid), '(gid not readable)'), coalesce(px.owner::text, '?'),
                           coalesce(pg_catalog.date_trunc('second', pg_catalog.clock_timestamp() - px.prepared)::text, '?'))
                       ELSE pg_catalog.format('pid %s (%s, %s, transaction open for %s)',
                           a.pid, coalesce(nullif(a.application_name, ''), 'no application_name'),
                           coalesce(a.state, 'state hidden: grant pg_monitor to see it'),
                           coalesce(pg_catalog.date_trunc('second', pg_catalog.clock_timestamp() - a.xact_start)::text, 'a time hidden'))
                   END, '; ')
            INTO holders
            FROM pg_catalog.pg_locks AS l
            LEFT JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
{indent(PREPARED_JOIN, "            ")}
            WHERE l.granted AND l.relation IN ({relations})
              AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d
                                WHERE d.datname = pg_catalog.current_database())
              AND l.mode IN ({wanted}) AND l.pid IS DISTINCT FROM pg_catalog.pg_backend_pid();
            holders := coalesce(holders, 'a session that has just let go');
            IF pg_catalog.clock_timestamp() - started > interval '{duration_seconds(settings.lock_patience):g} s' THEN
                RAISE EXCEPTION USING ERRCODE = 'lock_not_available',
                    MESSAGE = pg_catalog.format('{what}: gave up after %s attempts over %s (lock_patience {settings.lock_patience}); the tables are held by %s',
                        attempt, pg_catalog.date_trunc('second', pg_catalog.clock_timestamp() - started), holders);
            END IF;
            RAISE WARNING '{what}: a lock was not granted within {settings.lock_timeout} (attempt %); held by %; retrying', attempt, holders;
            PERFORM pg_catalog.pg_sleep(least(5.0, pg_catalog.random() * 0.2 * 2 ^ least(attempt, 6)));
        END;
    END LOOP;
END
$ddl$"""


def create_triggers_sql(tables: Tables, settings: MigrationSettings) -> str:
    """One DO block: the missing sync triggers on the four tables (and any that calls a
    function not ours, replaced), all in one transaction."""
    creates = "\n".join(
        f"""IF NOT EXISTS ({_ours(tables, t)}) THEN
    IF EXISTS ({_named(tables, t)}) THEN
        DROP TRIGGER {t.name} ON {getattr(tables, t.table)};
    END IF;
{indent(t.create_sql(tables))};
END IF;"""
        for t in TRIGGERS
    )
    return with_lock_retries(
        "installing the sync triggers",
        creates,
        tables,
        TABLES,
        CREATE_CONFLICTS,
        settings,
        take="SHARE ROW EXCLUSIVE",
    )


def drop_sql(tables: Tables, settings: MigrationSettings) -> str:
    """One DO block: every object of the sync trigger gone, all or none: the triggers on
    the four tables (a short lock on each, retried), the queue and its trigger, the
    functions. Run in the transaction that records the revision below, so that a
    downgrade cut short leaves all of them and the revision it started from."""
    drops = "\n".join(
        [
            *(f"DROP TRIGGER IF EXISTS {t.name} ON {getattr(tables, t.table)};" for t in TRIGGERS),
            f"DROP TABLE IF EXISTS {getattr(tables, PENDING)};",
            f"DROP TABLE IF EXISTS {getattr(tables, GUARD)};",
            *(f"DROP FUNCTION IF EXISTS {getattr(tables, name)}();" for name in NAMES),
        ]
    )
    return with_lock_retries(
        "dropping the sync triggers",
        drops,
        tables,
        TABLES,
        DROP_CONFLICTS,
        settings,
        take="ACCESS EXCLUSIVE",
    )


def strays_sql(tables: Tables) -> str:
    """A DO block dropping sync functions of ours outside the legacy schema that no trigger
    calls (1.1 created them wherever the session's search_path put them)."""
    return f"""-- Older sync functions outside {tables.schema} that no trigger calls any more: dropped, so
-- that none is left for a role to call.
DO $strays$
DECLARE
    f record;
BEGIN
    FOR f IN
        SELECT p.oid::pg_catalog.regprocedure AS signature
        FROM pg_catalog.pg_proc AS p
        JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
        WHERE p.proname IN ({", ".join(quote_literal(n) for n in NAMES)})
          AND n.nspname <> {tables.literal}
          AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgfoid = p.oid)
    LOOP
        EXECUTE pg_catalog.format('DROP FUNCTION %s', f.signature);
    END LOOP;
END
$strays$"""


def install(connection: Connection | None, tables: Tables, settings: MigrationSettings) -> None:
    """The queue and the guard (a short lock on the queue, retried), the functions (one
    transaction, no table locked), the trigger that applies the queue, the triggers of
    the four tables (one transaction, retried), then stray old functions. At each step
    what the application writes is still enrolled, by the old functions or the new."""
    header("queue")
    run_block(connection, queue_sql(tables, settings))
    header("functions")
    with in_transaction(connection):
        for statement in objects_sql(tables):
            execute_block(connection, statement)
    header("apply trigger")
    run_block(connection, apply_trigger_sql(tables, settings))
    header("triggers")
    run_block(connection, create_triggers_sql(tables, settings))
    header("strays")
    run_block(connection, strays_sql(tables))


def drop(connection: Connection | None, tables: Tables, settings: MigrationSettings) -> None:
    """Every object of the sync trigger, in the transaction ``connection`` holds (the
    revision's: online its connection, offline None)."""
    header("drop sync")
    execute_block(connection, drop_sql(tables, settings))
