"""The sync trigger: ``course_enrollments`` keeps covering every eligible pair while the
legacy application writes only ``group_members`` (and users, groups, courses).

It acts when a pair may become eligible:

- a membership inserted active, or activated (false or NULL to true), or moved to another
  group or user: statement-level triggers on ``group_members`` with transition tables, so
  a bulk insert costs one set-based statement, not one call per row;
- a user whose role becomes ``student`` or whose school changes, a group moved to another
  course, a course moved to another school: row-level triggers whose ``WHEN`` clause lets
  every other update through without calling anything.

**At commit.** These triggers write no enrollment. They queue what changed (membership,
user, group or course ids) in ``course_enrollments_sync_pending``, and a deferred
constraint trigger on that table applies it when the transaction commits: it re-reads the
memberships as they are then and creates the missing enrollment or reactivates the
inactive one, in (course, student) order, in the same transaction. So the trigger takes no
lock on an enrollment before the application's own writes: an application that writes
``group_members`` and then its enrollments in a fixed order meets no deadlock the trigger
adds. It never deactivates, never enrolls an anomaly, and uses :mod:`.definition`.

**Safe as a definer.** The functions run as their owner (``SECURITY DEFINER``: the
application's role needs no privilege on ``course_enrollments``) and follow PostgreSQL's
rules for writing one ("Writing SECURITY DEFINER Functions Safely"):

- ``search_path`` pinned to ``pg_catalog, pg_temp``, and every table, function and
  operator in their bodies qualified: nothing planted in a writable schema, and no
  temporary table of the calling session, stands in for ours;
- ``EXECUTE`` revoked from PUBLIC (creating a trigger needs it), and each function
  refuses to run for any table but its own: a role cannot hang one on a table of its own
  to write enrollments;
- the queue table grants nothing to anyone but its owner.

Creating a trigger takes SHARE ROW EXCLUSIVE on its table (writes wait, reads do not);
dropping one, ACCESS EXCLUSIVE. Both go in one transaction for the four tables (all the
triggers, or none), each attempt under a short ``lock_timeout`` and retried with backoff
and jitter, naming who holds the table, until the run's patience is spent.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Connection

from enrollments_phase1.db import duration_seconds
from enrollments_phase1.migration_env import MigrationSettings
from enrollments_phase1.migrations.shared.v3.definition import (
    DEFINER,
    Tables,
    eligible,
    indent,
    quote_literal,
)
from enrollments_phase1.migrations.shared.v3.run import execute_block, in_transaction, run_block

PENDING = "course_enrollments_sync_pending"
EQ, NE = DEFINER.eq, DEFINER.ne


def _guard(tables: Tables, table: str, function: str) -> str:
    """The first lines of a function: refuse to run for any other table."""
    return f"""    IF TG_RELID {NE} {quote_literal(getattr(tables, table))}::pg_catalog.regclass THEN
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
            MESSAGE = '{function} runs only as a sync trigger of {getattr(tables, table).replace("'", "''")}';
    END IF;"""


def _pairs_statement(tables: Tables, which: str) -> str:
    """The eligible pairs behind the memberships ``which`` selects (a condition on gm or g),
    as they are now, into ``courses`` and ``students``, in (course, student) order."""
    return f"""SELECT pg_catalog.array_agg(p.course_id ORDER BY p.course_id, p.student_id),
       pg_catalog.array_agg(p.student_id ORDER BY p.course_id, p.student_id)
INTO courses, students
FROM (
    SELECT DISTINCT g.course_id, gm.user_id AS student_id
    FROM {tables.group_members} AS gm
    JOIN {tables.groups} AS g ON g.id {EQ} gm.group_id
    JOIN {tables.courses} AS c ON c.id {EQ} g.course_id
    JOIN {tables.users} AS u ON u.id {EQ} gm.user_id
    WHERE {which}
      AND {eligible(DEFINER)}
) AS p"""


def _claim_statement(tables: Tables) -> str:
    """The enrollments a backfill recorded for these pairs are the application's now: the
    undo keeps them. Locked (FOR SHARE) in (course, student) order, as the undo locks them:
    an undo that got there first has removed the row, and the enrolling below makes it
    anew; one that comes later finds the claim."""
    pairs = (
        "ROWS FROM (pg_catalog.unnest(courses), pg_catalog.unnest(students))"
        " AS p(course_id, student_id)"
    )
    return f"""WITH met AS (
    SELECT e.id
    FROM {pairs}
    JOIN {tables.course_enrollments} AS e
        ON e.course_id {EQ} p.course_id AND e.student_id {EQ} p.student_id
    JOIN {tables.enrollment_backfill_changes} AS r ON r.enrollment_id {EQ} e.id
    WHERE e.active AND r.claimed_at IS NULL
    ORDER BY e.course_id, e.student_id
    FOR SHARE OF e
)
UPDATE {tables.enrollment_backfill_changes} AS r SET claimed_at = pg_catalog.now()
FROM met WHERE r.enrollment_id {EQ} met.id AND r.claimed_at IS NULL"""


def _enroll_statement(tables: Tables) -> str:
    """Create the missing enrollments and reactivate the inactive ones, in order."""
    return f"""INSERT INTO {tables.course_enrollments} AS ce (course_id, student_id, active)
SELECT p.course_id, p.student_id, true
FROM ROWS FROM (pg_catalog.unnest(courses), pg_catalog.unnest(students)) AS p(course_id, student_id)
WHERE NOT EXISTS (
    SELECT 1 FROM {tables.course_enrollments} AS e
    WHERE e.course_id {EQ} p.course_id AND e.student_id {EQ} p.student_id AND e.active
)
ORDER BY p.course_id, p.student_id
ON CONFLICT (course_id, student_id) DO UPDATE SET active = true WHERE NOT ce.active"""


# What each kind of queued id selects: memberships, or the memberships of users, groups,
# courses.
KINDS = {
    "membership": f"gm.id {EQ} ANY (NEW.ids)",
    "user": f"gm.user_id {EQ} ANY (NEW.ids)",
    "group": f"gm.group_id {EQ} ANY (NEW.ids)",
    "course": f"g.course_id {EQ} ANY (NEW.ids)",
}


def _apply_body(tables: Tables) -> str:
    branches = "\n".join(
        f"""    {"IF" if i == 0 else "ELSIF"} NEW.kind {EQ} '{kind}' THEN
{indent(_pairs_statement(tables, which), "        ")};"""
        for i, (kind, which) in enumerate(KINDS.items())
    )
    return f"""DECLARE
    courses integer[];
    students integer[];
BEGIN
{_guard(tables, PENDING, "course_enrollments_sync_apply")}
{branches}
    END IF;
    IF courses IS NOT NULL THEN
{indent(_claim_statement(tables), "        ")};
{indent(_enroll_statement(tables), "        ")};
    END IF;
    DELETE FROM {getattr(tables, PENDING)} AS q WHERE q.id {EQ} NEW.id;
    RETURN NULL;
END"""


def _members_body(tables: Tables) -> str:
    queue = getattr(tables, PENDING)
    return f"""BEGIN
{_guard(tables, "group_members", "course_enrollments_sync_members")}
    IF TG_OP {EQ} 'INSERT' THEN
        INSERT INTO {queue} (kind, ids)
        SELECT 'membership', pg_catalog.array_agg(n.id)
        FROM new_members AS n
        WHERE n.active IS TRUE
        HAVING pg_catalog.count(*) OPERATOR(pg_catalog.>) 0;
    ELSE
        -- Only rows that may have become eligible: activated, or moved.
        INSERT INTO {queue} (kind, ids)
        SELECT 'membership', pg_catalog.array_agg(n.id)
        FROM new_members AS n
        JOIN old_members AS o ON o.id {EQ} n.id
        WHERE n.active IS TRUE
          AND (o.active IS NOT TRUE OR o.group_id {NE} n.group_id OR o.user_id {NE} n.user_id)
        HAVING pg_catalog.count(*) OPERATOR(pg_catalog.>) 0;
    END IF;
    RETURN NULL;
END"""


def _row_body(tables: Tables, table: str, kind: str, function: str) -> str:
    return f"""BEGIN
{_guard(tables, table, function)}
    INSERT INTO {getattr(tables, PENDING)} (kind, ids) VALUES ('{kind}', ARRAY[NEW.id]);
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
    "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {function}()",
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
    """The trigger is there, on its table, calling our function."""
    return f"{_named(tables, trigger)} AND t.tgfoid = {_function_oid(tables, trigger.function)}"


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


def objects_sql(tables: Tables) -> list[str]:
    """The queue table and the functions, created or replaced, and their privileges.

    Locks no legacy table: run before the triggers exist, or under 1.1's triggers (which
    then call these bodies at once), in one transaction."""
    queue = getattr(tables, PENDING)
    parts = [
        "SET LOCAL client_min_messages = warning",
        f"""-- What the sync triggers queue for the commit of the transaction that wrote it:
-- rows live only inside that transaction. Owner only; unlogged (never kept past a crash).
CREATE UNLOGGED TABLE IF NOT EXISTS {queue} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind text NOT NULL,
    ids integer[] NOT NULL
)""",
        f"REVOKE ALL ON {queue} FROM PUBLIC",
    ]
    for function in functions(tables):
        parts.append(
            f"""-- {function.name}: {function.comment}.
CREATE OR REPLACE FUNCTION {getattr(tables, function.name)}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $sync$
{function.body}
$sync$"""
        )
        parts.append(f"REVOKE ALL ON FUNCTION {getattr(tables, function.name)}() FROM PUBLIC")
    parts.append(
        f"""-- At commit, apply what was queued (only our functions write the queue).
DO $apply$
BEGIN
    IF NOT EXISTS ({_ours(tables, APPLY)}) THEN
        IF EXISTS ({_named(tables, APPLY)}) THEN
            DROP TRIGGER {APPLY.name} ON {queue};
        END IF;
{indent(APPLY.create_sql(tables), "        ")};
    END IF;
END
$apply$"""
    )
    return parts


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
) -> str:
    """A DO block running ``body`` (statements that lock the tables ``on``), each attempt
    under the run's short ``lock_timeout``, retried with backoff and jitter until the
    run's patience is spent; every waiting line and the final failure name the sessions
    that hold a conflicting lock (pid, application_name, state, transaction age)."""
    relations = ", ".join(tables.regclass(t) for t in on)
    wanted = ", ".join(f"'{m}'" for m in modes)
    return f"""-- {what}: each attempt waits at most lock_timeout ({settings.lock_timeout}) for the tables, so the
-- application's writes never queue behind it for longer; retried until {settings.lock_patience}.
DO $ddl$
DECLARE
    started timestamptz := pg_catalog.clock_timestamp();
    attempt integer := 0;
    holders text;
BEGIN
    LOOP
        BEGIN
{indent(body, "            ")}
            EXIT;
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            attempt := attempt + 1;
            SELECT pg_catalog.string_agg(DISTINCT pg_catalog.format('pid %s (%s, %s, transaction open for %s)',
                       a.pid, coalesce(nullif(a.application_name, ''), 'no application_name'),
                       coalesce(a.state, 'state hidden: grant pg_monitor to see it'),
                       coalesce(pg_catalog.date_trunc('second', pg_catalog.clock_timestamp() - a.xact_start)::text, 'a time hidden')), '; ')
            INTO holders
            FROM pg_catalog.pg_locks AS l
            JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
            WHERE l.granted AND l.relation IN ({relations})
              AND l.mode IN ({wanted}) AND l.pid <> pg_catalog.pg_backend_pid();
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
        "installing the sync triggers", creates, tables, TABLES, CREATE_CONFLICTS, settings
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
            *(f"DROP FUNCTION IF EXISTS {getattr(tables, name)}();" for name in NAMES),
        ]
    )
    return with_lock_retries(
        "dropping the sync triggers", drops, tables, TABLES, DROP_CONFLICTS, settings
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
    """Queue table and functions (one transaction, no legacy table locked), then the
    triggers of the four tables (one transaction, retried), then stray old functions."""
    with in_transaction(connection):
        for statement in objects_sql(tables):
            execute_block(connection, statement)
    run_block(connection, create_triggers_sql(tables, settings))
    run_block(connection, strays_sql(tables))


def drop(connection: Connection | None, tables: Tables, settings: MigrationSettings) -> None:
    """Every object of the sync trigger, in the transaction ``connection`` holds (the
    revision's: online its connection, offline None)."""
    execute_block(connection, drop_sql(tables, settings))
