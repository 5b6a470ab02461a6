"""The sync trigger: ``course_enrollments`` keeps covering every eligible pair while the
legacy application writes only ``group_members`` (and users, groups, courses).

It acts when a pair may become eligible:

- a membership inserted active, or activated (false or NULL to true), or moved to another
  group or user: statement-level triggers on ``group_members`` with transition tables, so
  a bulk insert costs one set-based statement, not one call per row;
- a user whose role becomes ``student`` or whose school changes, a group moved to another
  course, a course moved to another school: row-level triggers whose ``WHEN`` clause lets
  every other update through without calling anything.

It creates the missing enrollment or reactivates the inactive one, in (course, student)
order. It never deactivates, never enrolls an anomaly, and uses the definition of
:mod:`.definition`. The functions run as their owner (``SECURITY DEFINER``, with the
``search_path`` of the migration), so the application's role needs no privilege on
``course_enrollments``. The phase that retires ``group_members`` drops them.

Creating a trigger takes SHARE ROW EXCLUSIVE on its table (writes wait, reads do not) for
a moment; each table's triggers go in their own short transaction under the session's
``lock_timeout``, retried with backoff. Offline, the same through a ``DO`` block per table.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Connection

from migrations.shared.v2.definition import ELIGIBLE, indent
from migrations.shared.v2.run import run_block

# INSERT of the eligible pairs of `source` (a FROM clause giving gm, g, c, u) that have no
# active enrollment; an inactive one is reactivated through ON CONFLICT.
UPSERT = """INSERT INTO course_enrollments AS ce (course_id, student_id, active)
SELECT p.course_id, p.student_id, true
FROM (
    SELECT DISTINCT g.course_id, gm.user_id AS student_id
    FROM {source}
    WHERE {eligible}{extra}
) AS p
WHERE NOT EXISTS (
    SELECT 1 FROM course_enrollments AS e
    WHERE e.course_id = p.course_id AND e.student_id = p.student_id AND e.active
)
ORDER BY p.course_id, p.student_id
ON CONFLICT (course_id, student_id) DO UPDATE SET active = true WHERE NOT ce.active"""

JOINS = """JOIN groups AS g ON g.id = gm.group_id
JOIN courses AS c ON c.id = g.course_id
JOIN users AS u ON u.id = gm.user_id"""


def upsert(source: str, condition: str = "") -> str:
    """The INSERT over ``source`` (gm, then JOINS), restricted by ``condition``."""
    return UPSERT.format(
        source=f"{source}\n{JOINS}".replace("\n", "\n    "),
        eligible=ELIGIBLE,
        extra=f"\n      AND {condition}" if condition else "",
    )


MEMBERS_BODY = f"""BEGIN
    IF TG_OP = 'INSERT' THEN
{indent(upsert("new_members AS gm"), "        ")};
    ELSE
        -- Only rows that may have become eligible: activated, or moved.
{indent(upsert("new_members AS gm" + chr(10) + "JOIN old_members AS o ON o.id = gm.id", "(o.active IS NOT TRUE OR o.group_id <> gm.group_id OR o.user_id <> gm.user_id)"), "        ")};
    END IF;
    RETURN NULL;
END"""

USER_BODY = f"""BEGIN
{indent(upsert("group_members AS gm", "gm.user_id = NEW.id"))};
    RETURN NULL;
END"""

GROUP_BODY = f"""BEGIN
{indent(upsert("group_members AS gm", "gm.group_id = NEW.id"))};
    RETURN NULL;
END"""

COURSE_BODY = f"""BEGIN
{indent(upsert("group_members AS gm", "g.course_id = NEW.id"))};
    RETURN NULL;
END"""


@dataclass(frozen=True)
class Trigger:
    name: str
    table: str
    function: str
    definition: str  # what follows CREATE TRIGGER name


TRIGGERS = (
    Trigger(
        "course_enrollments_sync_on_insert",
        "group_members",
        "course_enrollments_sync_members",
        "AFTER INSERT ON group_members REFERENCING NEW TABLE AS new_members\n"
        "FOR EACH STATEMENT EXECUTE FUNCTION course_enrollments_sync_members()",
    ),
    Trigger(
        "course_enrollments_sync_on_update",
        "group_members",
        "course_enrollments_sync_members",
        "AFTER UPDATE ON group_members REFERENCING OLD TABLE AS old_members NEW TABLE AS new_members\n"
        "FOR EACH STATEMENT EXECUTE FUNCTION course_enrollments_sync_members()",
    ),
    Trigger(
        "course_enrollments_sync_on_user",
        "users",
        "course_enrollments_sync_user",
        "AFTER UPDATE OF role, school_id ON users FOR EACH ROW\n"
        "WHEN (NEW.role = 'student' AND (OLD.role IS DISTINCT FROM NEW.role\n"
        "      OR OLD.school_id IS DISTINCT FROM NEW.school_id))\n"
        "EXECUTE FUNCTION course_enrollments_sync_user()",
    ),
    Trigger(
        "course_enrollments_sync_on_group",
        "groups",
        "course_enrollments_sync_group",
        "AFTER UPDATE OF course_id ON groups FOR EACH ROW\n"
        "WHEN (OLD.course_id IS DISTINCT FROM NEW.course_id)\n"
        "EXECUTE FUNCTION course_enrollments_sync_group()",
    ),
    Trigger(
        "course_enrollments_sync_on_course",
        "courses",
        "course_enrollments_sync_course",
        "AFTER UPDATE OF school_id ON courses FOR EACH ROW\n"
        "WHEN (OLD.school_id IS DISTINCT FROM NEW.school_id)\n"
        "EXECUTE FUNCTION course_enrollments_sync_course()",
    ),
)
TABLES = ("group_members", "users", "groups", "courses")
FUNCTIONS = {
    "course_enrollments_sync_members": MEMBERS_BODY,
    "course_enrollments_sync_user": USER_BODY,
    "course_enrollments_sync_group": GROUP_BODY,
    "course_enrollments_sync_course": COURSE_BODY,
}


def functions_sql() -> str:
    """CREATE OR REPLACE of the trigger functions (locks no table)."""
    return "\n\n".join(
        f"""CREATE OR REPLACE FUNCTION {name}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT
AS $sync$
{body}
$sync$;"""
        for name, body in FUNCTIONS.items()
    )


def create_trigger_sql(trigger: Trigger) -> str:
    return f"CREATE TRIGGER {trigger.name} {trigger.definition}"


def exists_sql(trigger: Trigger) -> str:
    return (
        f"SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass('{trigger.table}')"
        f" AND tgname = '{trigger.name}' AND NOT tgisinternal"
    )


def installed_sql() -> str:
    """SELECT true when every sync trigger is installed."""
    return (
        "SELECT "
        + "\n   AND ".join(f"EXISTS ({exists_sql(t)})" for t in TRIGGERS)
        + " AS installed"
    )


def install_table_sql(table: str) -> str:
    """A DO block: create the sync triggers of ``table`` that are missing.

    Retried on a lock timeout with backoff and jitter, so that the application's writes
    never queue behind it for longer than ``lock_timeout`` at a time.
    """
    creates = "\n".join(
        f"""            IF NOT EXISTS ({exists_sql(t)}) THEN
                EXECUTE {dollar(create_trigger_sql(t))};
            END IF;"""
        for t in TRIGGERS
        if t.table == table
    )
    return f"""-- Install the sync triggers on {table}: a moment of SHARE ROW EXCLUSIVE (writes to
-- {table} wait, reads do not), retried on a lock timeout.
DO $install$
DECLARE
    attempt integer := 0;
BEGIN
    LOOP
        BEGIN
{creates}
            EXIT;
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            attempt := attempt + 1;
            IF attempt > 5 THEN
                RAISE;
            END IF;
            RAISE WARNING 'installing the sync triggers on {table}: lock not granted, retrying (attempt % of 5)', attempt;
            PERFORM pg_sleep(random() * 0.2 * 2 ^ attempt);
        END;
    END LOOP;
END
$install$"""


def dollar(sql: str) -> str:
    return f"$ddl${sql}$ddl$"


def drop_functions_sql() -> str:
    return "\n".join(f"DROP FUNCTION IF EXISTS {name}();" for name in FUNCTIONS).removesuffix(";")


def install(connection: Connection | None) -> None:
    """Create the functions, then each table's triggers in a transaction of its own."""
    run_block(connection, functions_sql().removesuffix(";"))
    for table in TABLES:
        run_block(connection, install_table_sql(table))


def drop_table_block(table: str) -> str:
    """A DO block dropping ``table``'s sync triggers, retried on a lock timeout."""
    drops = "\n".join(
        f"            DROP TRIGGER IF EXISTS {t.name} ON {t.table};"
        for t in TRIGGERS
        if t.table == table
    )
    return f"""-- Drop the sync triggers on {table}: a moment of ACCESS EXCLUSIVE, retried on a lock timeout.
DO $drop$
DECLARE
    attempt integer := 0;
BEGIN
    LOOP
        BEGIN
{drops}
            EXIT;
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            attempt := attempt + 1;
            IF attempt > 5 THEN
                RAISE;
            END IF;
            RAISE WARNING 'dropping the sync triggers on {table}: lock not granted, retrying (attempt % of 5)', attempt;
            PERFORM pg_sleep(random() * 0.2 * 2 ^ attempt);
        END;
    END LOOP;
END
$drop$"""


def drop(connection: Connection | None) -> None:
    """Drop the triggers (each table in a transaction of its own), then the functions."""
    for table in TABLES:
        run_block(connection, drop_table_block(table))
    run_block(connection, drop_functions_sql())
