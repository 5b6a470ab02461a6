"""The sync trigger and the migrations, attacked by roles as a managed database has them.

Each attack worked on 1.1.0: the tests that start from 1.1.0's own script (to 0006) show
it working there first, then `alembic upgrade head` (revision 0007) closes it. The same
attacks fail on a fresh deploy.
"""

from __future__ import annotations

import json

import psycopg2
import pytest
from psycopg2 import errors
from sqlalchemy import text

from tests.helpers import FIXTURES, alembic, enrollments, enrollments_rows, load_story, psql
from tests.roles import Roles, deploy, upgrade_head

FUNCTIONS = {
    # function: (the table its trigger would hang on, what the hostile role inserts there)
    "course_enrollments_sync_members": (
        "CREATE TEMP TABLE t (id int, school_id int, group_id int, user_id int, active boolean)",
        "CREATE TRIGGER forge AFTER INSERT ON t REFERENCING NEW TABLE AS new_members"
        " FOR EACH STATEMENT EXECUTE FUNCTION public.course_enrollments_sync_members()",
        "INSERT INTO t VALUES (999, 1, 3, 7, true)",  # Nina (no active membership) in Physics
    ),
    "course_enrollments_sync_user": (
        "CREATE TEMP TABLE t (id int, role varchar(20), school_id int)",
        "CREATE TRIGGER forge AFTER INSERT ON t FOR EACH ROW"
        " EXECUTE FUNCTION public.course_enrollments_sync_user()",
        "INSERT INTO t VALUES (7, 'student', 1)",
    ),
    "course_enrollments_sync_group": (
        "CREATE TEMP TABLE t (id int, course_id int)",
        "CREATE TRIGGER forge AFTER INSERT ON t FOR EACH ROW"
        " EXECUTE FUNCTION public.course_enrollments_sync_group()",
        "INSERT INTO t VALUES (1, 1)",
    ),
    "course_enrollments_sync_course": (
        "CREATE TEMP TABLE t (id int, school_id int)",
        "CREATE TRIGGER forge AFTER INSERT ON t FOR EACH ROW"
        " EXECUTE FUNCTION public.course_enrollments_sync_course()",
        "INSERT INTO t VALUES (1, 1)",
    ),
    "course_enrollments_sync_apply": (
        "CREATE TEMP TABLE t (id bigint, kind text, ids integer[])",
        "CREATE TRIGGER forge AFTER INSERT ON t FOR EACH ROW"
        " EXECUTE FUNCTION public.course_enrollments_sync_apply()",
        "INSERT INTO t VALUES (1, 'user', ARRAY[7])",
    ),
}


def nina_physics(engine) -> bool | None:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT active FROM course_enrollments WHERE course_id = 2 AND student_id = 7")
        ).scalar()


def forge(roles: Roles, role: str, function: str) -> Exception | None:
    """The temporary-table trick as ``role``: the error it met, or None if it went through."""
    conn = roles.connect(role)
    try:
        cur = conn.cursor()
        for statement in FUNCTIONS[function]:
            cur.execute(statement)
        conn.commit()
        return None
    except psycopg2.Error as exc:
        conn.rollback()
        return exc
    finally:
        conn.close()


def test_1_1_0_let_any_role_forge_enrollments_and_0007_stops_it(pg_server, roles, engine):
    deploy(pg_server, roles, "1.1.0")
    assert nina_physics(engine) is None
    assert forge(roles, roles.hostile, "course_enrollments_sync_members") is None
    assert nina_physics(engine) is True  # 1.1.0: an enrollment with no membership behind it
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM course_enrollments WHERE course_id = 2 AND student_id = 7"))

    upgrade_head(roles)

    failure = forge(roles, roles.hostile, "course_enrollments_sync_members")
    assert isinstance(failure, errors.InsufficientPrivilege), failure
    assert nina_physics(engine) is None


@pytest.mark.parametrize("start", ["fresh", "1.1.0"])
@pytest.mark.parametrize("function", FUNCTIONS)
def test_no_role_can_hang_a_sync_function_on_a_table_of_its_own(
    pg_server, roles, engine, start, function
):
    deploy(pg_server, roles, start)
    upgrade_head(roles)
    before = enrollments_rows(engine)
    for role in (roles.hostile, roles.app, roles.reader):
        failure = forge(roles, role, function)
        assert isinstance(failure, errors.InsufficientPrivilege), (role, failure)
        assert "permission denied for function" in str(failure)
    # The owner may create the trigger (EXECUTE is its own), but the function refuses.
    failure = forge(roles, roles.owner, function)
    assert isinstance(failure, errors.InsufficientPrivilege), failure
    assert f"{function} runs only as a sync trigger of" in str(failure)
    assert enrollments_rows(engine) == before


@pytest.mark.parametrize("start", ["fresh", "1.1.0"])
def test_no_role_can_call_a_sync_function_directly(pg_server, roles, start):
    deploy(pg_server, roles, start)
    upgrade_head(roles)
    conn = roles.connect(roles.hostile)
    try:
        for function in FUNCTIONS:
            with pytest.raises(psycopg2.Error):
                conn.cursor().execute(f"SELECT public.{function}()")
            conn.rollback()
    finally:
        conn.close()


def privileges(engine) -> dict[str, object]:
    with engine.connect() as conn:
        functions = conn.execute(
            text(
                "SELECT p.proname, p.prosecdef, p.proconfig,"
                " EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner)))"
                "         AS a WHERE a.grantee = 0) AS public"
                " FROM pg_proc AS p WHERE p.proname LIKE 'course_enrollments_sync%'"
                " ORDER BY 1"
            )
        ).all()
        tables = conn.execute(
            text(
                "SELECT c.relname FROM pg_class AS c, aclexplode(c.relacl) AS a"
                " WHERE a.grantee = 0 AND c.relname IN ('enrollment_backfill_changes',"
                " 'enrollment_backfill_runs', 'enrollment_backfill_runs_id_seq',"
                " 'enrollment_backfill_batches', 'enrollment_backfill_batches_id_seq',"
                " 'enrollment_backfill_claims', 'enrollment_backfill_candidates',"
                " 'course_enrollments_sync_pending')"
            )
        ).all()
    return {"functions": functions, "public_tables": tables}


@pytest.mark.parametrize("start", ["fresh", "1.1.0"])
def test_what_the_revisions_install_grants_nothing_to_public(pg_server, roles, engine, start):
    # A default privilege that grants every new table and function to PUBLIC: the revisions
    # revoke it from theirs.
    conn = roles.connect(roles.owner)
    conn.autocommit = True
    conn.cursor().execute("ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC")
    conn.close()
    deploy(pg_server, roles, start)
    upgrade_head(roles)
    found = privileges(engine)
    assert [f.proname for f in found["functions"]] == sorted(
        ["course_enrollments_sync_members", "course_enrollments_sync_user",
         "course_enrollments_sync_group", "course_enrollments_sync_course",
         "course_enrollments_sync_apply"]
    )  # fmt: skip
    for function in found["functions"]:
        assert function.prosecdef and not function.public, function
        assert function.proconfig[0] == "search_path=pg_catalog, pg_temp", function
    assert found["public_tables"] == []


def test_the_0007_downgrade_keeps_the_hardened_functions(pg_server, roles, engine):
    deploy(pg_server, roles, "fresh")
    result = alembic(roles.url(roles.owner), "downgrade", "0006")
    assert result.returncode == 0, result.stdout + result.stderr
    for function in privileges(engine)["functions"]:
        assert not function.public, function
    failure = forge(roles, roles.hostile, "course_enrollments_sync_members")
    assert isinstance(failure, errors.InsufficientPrivilege)


# --- objects planted in a writable public ------------------------------------------------
# Each stands in for a built-in of the exact types a statement uses (an exact match wins
# over pg_catalog's), and logs who ran it. 1.1.0 compared u.role = 'student' (varchar):
# the first of them ran as the migration role, and in the trigger as its owner.
PLANTED = [
    "CREATE TABLE public.hostile_log (caller text, what text)",
    "GRANT INSERT ON public.hostile_log TO PUBLIC",
    """CREATE FUNCTION public.hostile_eq(varchar, varchar) RETURNS boolean
       LANGUAGE plpgsql AS $$ BEGIN
           BEGIN
               INSERT INTO public.hostile_log VALUES (current_user, 'varchar = varchar');
           EXCEPTION WHEN read_only_sql_transaction THEN
               RAISE WARNING 'hostile code ran as %', current_user;
           END;
           RETURN $1::text = $2::text;
       END $$""",
    "CREATE OPERATOR public.= (LEFTARG = varchar, RIGHTARG = varchar,"
    " FUNCTION = public.hostile_eq)",
    """CREATE FUNCTION public.hostile_ne(varchar, varchar) RETURNS boolean
       LANGUAGE plpgsql AS $$ BEGIN
           BEGIN
               INSERT INTO public.hostile_log VALUES (current_user, 'varchar <> varchar');
           EXCEPTION WHEN read_only_sql_transaction THEN
               RAISE WARNING 'hostile code ran as %', current_user;
           END;
           RETURN $1::text <> $2::text;
       END $$""",
    "CREATE OPERATOR public.<> (LEFTARG = varchar, RIGHTARG = varchar,"
    " FUNCTION = public.hostile_ne)",
    """CREATE FUNCTION public.unnest(bigint[]) RETURNS SETOF bigint
       LANGUAGE plpgsql AS $$ BEGIN
           BEGIN
               INSERT INTO public.hostile_log VALUES (current_user, 'unnest(bigint[])');
           EXCEPTION WHEN read_only_sql_transaction THEN
               RAISE WARNING 'hostile code ran as %', current_user;
           END;
           RETURN QUERY SELECT pg_catalog.unnest($1);
       END $$""",
    """CREATE FUNCTION public.cardinality(text[]) RETURNS integer
       LANGUAGE plpgsql AS $$ BEGIN
           BEGIN
               INSERT INTO public.hostile_log VALUES (current_user, 'cardinality(text[])');
           EXCEPTION WHEN read_only_sql_transaction THEN
               RAISE WARNING 'hostile code ran as %', current_user;
           END;
           RETURN pg_catalog.cardinality($1);
       END $$""",
]


def plant(roles: Roles) -> None:
    conn = roles.connect(roles.hostile)
    conn.autocommit = True
    try:
        for statement in PLANTED:
            conn.cursor().execute(statement)
    finally:
        conn.close()


def hostile_calls(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text("SELECT * FROM public.hostile_log"))]


@pytest.mark.parametrize("runner", ["owner", "superuser"])
def test_a_planted_operator_never_runs_in_the_deploy_the_commands_or_the_trigger(
    pg_server, database_url, roles, engine, runner
):
    roles.open_public()
    owner = roles.url(roles.owner)
    assert alembic(owner, "upgrade", "0001").returncode == 0
    load_story(roles.engine(roles.owner))
    plant(roles)
    url = owner if runner == "owner" else database_url
    with engine.begin() as conn:  # a gap for the gate and the commands to find
        conn.execute(text("UPDATE users SET role = 'teacher' WHERE id = 6"))

    result = alembic(url, "upgrade", "head")
    assert result.returncode == 0, result.stdout + result.stderr
    roles.grant_application()
    for args in (("audit",), ("audit", "--by", "school"), ("backfill",), ("backfill", "--commit")):
        assert enrollments(url, *args).returncode in (0, 1), args
    app = roles.connect(roles.app)  # the application writes: the trigger runs as the owner
    app.cursor().execute("UPDATE users SET role = 'student' WHERE id = 6")
    app.cursor().execute(
        "INSERT INTO group_members (school_id, group_id, user_id) VALUES (1, 3, 7)"
    )
    app.commit()
    app.close()
    assert (2, 7, True) in enrollments_rows(engine)
    assert alembic(url, "downgrade", "0003").returncode == 0

    assert hostile_calls(engine) == []


def test_1_1_0_ran_a_planted_operator_as_the_migration_role(pg_server, roles, engine):
    """The attack the test above guards against, shown on 1.1.0's own script."""
    roles.open_public()
    owner = roles.url(roles.owner)
    assert alembic(owner, "upgrade", "0001").returncode == 0
    load_story(roles.engine(roles.owner))
    plant(roles)
    script = (FIXTURES / "release_1_1_0" / "upgrade_0001_0006.sql").read_text()
    assert psql(pg_server, owner, script).returncode == 0
    callers = {caller for caller, _ in hostile_calls(engine)}
    assert callers == {roles.owner}


# --- temporary tables in the application's own session -----------------------------------
# A temporary table named like each table the trigger uses, in the application's session
# (with rows that, read in its place, would enroll a teacher or the wrong course), and how
# many rows it must still hold afterwards: the trigger neither reads nor writes it.
SHADOWS = {
    "groups": (
        "CREATE TEMP TABLE groups (id int, school_id int, course_id int, name text)",
        "INSERT INTO groups VALUES (3, 1, 1, 'not Physics')",
    ),
    "users": (
        "CREATE TEMP TABLE users (id int, school_id int, role text)",
        "INSERT INTO users SELECT g, 1, 'student' FROM generate_series(1, 10) g",
    ),
    "courses": (
        "CREATE TEMP TABLE courses (id int, school_id int)",
        "INSERT INTO courses VALUES (2, 2)",
    ),
    "course_enrollments": (
        "CREATE TEMP TABLE course_enrollments"
        " (id serial, course_id int, student_id int, active boolean)",
    ),
    "group_members": (
        "CREATE TEMP TABLE group_members (id int, school_id int, group_id int, user_id int,"
        " active boolean)",
    ),
    "course_enrollments_sync_pending": (
        "CREATE TEMP TABLE course_enrollments_sync_pending (id bigint, kind text, ids int[])",
    ),
}


SHADOW_ROWS = {
    "groups": 1,
    "users": 10,
    "courses": 1,
    "course_enrollments": 0,
    "group_members": 0,
    "course_enrollments_sync_pending": 0,
}


@pytest.mark.parametrize("start", ["fresh", "1.1.0"])
@pytest.mark.parametrize("table", SHADOWS)
def test_a_temporary_table_of_the_application_changes_nothing(
    pg_server, database_url, roles, engine, start, table
):
    deploy(pg_server, roles, start)
    upgrade_head(roles)
    app = roles.connect(roles.app)
    cur = app.cursor()
    for statement in SHADOWS[table]:
        cur.execute(statement)
    # Nina joins Physics A, a teacher joins too; the statements name the real table.
    cur.execute("INSERT INTO public.group_members (school_id, group_id, user_id) VALUES (1, 3, 7)")
    cur.execute("INSERT INTO public.group_members (school_id, group_id, user_id) VALUES (1, 3, 4)")
    app.commit()
    cur.execute(f"SELECT count(*) FROM pg_temp.{table}")
    shadow_rows = cur.fetchone()[0]
    app.close()
    rows = enrollments_rows(engine)
    assert (2, 7, True) in rows  # Nina, in Physics (group 3's real course)
    assert not [r for r in rows if r[1] == 4]  # the teacher: never
    assert shadow_rows == SHADOW_ROWS[table]
    audit = json.loads(enrollments(database_url, "audit", "--json").stdout)
    assert audit["coverage_percent"] == 100.0


# --- the audit says what to change --------------------------------------------------------
def test_the_audit_warns_of_a_superuser_migration_and_a_writable_public(database_url, roles, story):
    roles.open_public()
    assert alembic(database_url, "upgrade", "head").returncode == 0  # as the superuser

    result = enrollments(database_url, "audit", "--json")

    warnings = json.loads(result.stdout)["security_warnings"]
    assert result.returncode == 1  # the anomalies' verdict; warnings do not change it
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("the sync trigger's functions belong to superuser")
    assert "REVOKE CREATE ON SCHEMA public FROM PUBLIC" in warnings[1]
    text_report = enrollments(database_url, "audit").stdout
    assert "Security warnings (they do not change the exit code):" in text_report


def test_the_audit_has_no_warning_for_the_managed_layout(pg_server, database_url, roles):
    deploy(pg_server, roles, "fresh")
    data = json.loads(enrollments(roles.url(roles.reader), "audit", "--json").stdout)
    assert data["security_warnings"] == []


def test_a_migration_run_as_a_superuser_warns_before_it_changes_anything(
    pg_server, database_url, roles
):
    deploy(pg_server, roles, "fresh")
    owner = roles.url(roles.owner)
    as_owner = alembic(owner, "downgrade", "0003")
    as_superuser = alembic(database_url, "upgrade", "0004")
    assert alembic(database_url, "downgrade", "0003").returncode == 0
    script = alembic(None, "upgrade", "0003:0004", "--sql").stdout
    by_owner = psql(pg_server, owner, script)
    assert alembic(owner, "downgrade", "0003").returncode == 0
    by_superuser = psql(pg_server, database_url, script)

    assert as_owner.returncode == 0 and "superuser" not in as_owner.stderr
    assert as_superuser.returncode == 0, as_superuser.stderr
    warning = [line for line in as_superuser.stderr.splitlines() if "superuser" in line]
    assert len(warning) == 1
    assert warning[0].endswith(
        f"alembic runs as superuser {database_url.username}: the sync trigger's functions it "
        "installs run as their owner, with every privilege; run the migrations as "
        f"{roles.owner}, the owner of the legacy tables"
    ), warning
    assert by_owner.returncode == 0, by_owner.stderr
    assert "superuser" not in by_owner.stderr
    assert by_superuser.returncode == 0, by_superuser.stderr
    assert "WARNING:  this script runs as superuser " in by_superuser.stderr
