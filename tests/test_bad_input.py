"""Bad input: a one-line error naming the problem, a distinct exit code, no traceback."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import create_engine, text

from enrollments_phase1.errors import EX_CONFIG, EX_NOPERM, EX_SCHEMA, EX_UNAVAILABLE, EX_USAGE
from tests.helpers import alembic, enrollments, psql, snapshot, upgrade


def one_line(result) -> str:
    """The single line a failed command printed (stdout and stderr together)."""
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert "Traceback" not in result.stdout + result.stderr
    assert len(lines) == 1, lines
    return lines[0]


def alembic_failure(result) -> str:
    """Alembic's one FAILED line (its INFO lines may come before it)."""
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    failed = [line for line in (result.stdout + result.stderr).splitlines() if "FAILED" in line]
    assert len(failed) == 1, result.stdout + result.stderr
    return failed[0]


def both_commands(url):
    return {
        "audit": enrollments(url, "audit"),
        "backfill": enrollments(url, "backfill", "--commit", "--unrecorded"),
    }


def test_malformed_url():
    # Each says what is wrong with it (1.2.0 gave the percent-encoding advice for all).
    port = "the port after the host is not a number (host:5432)"
    for name, result in both_commands("postgresql://user@host:54x2/db").items():
        assert result.returncode == EX_CONFIG, name
        assert f"malformed database URL: {port}" in one_line(result)
        assert "percent-encode" not in one_line(result)
    result = alembic("postgresql://user@host:notaport/db", "upgrade", "head")
    assert result.returncode != 0
    assert one_line(result).startswith(f"FAILED: malformed database URL: {port}")


@pytest.mark.parametrize("value", ["abc", "2.5", "-1"])
def test_a_connect_timeout_that_is_not_whole_seconds_is_refused(value):
    url = f"postgresql://user@127.0.0.1:1/db?connect_timeout={value}"
    expected = (
        "malformed database URL: connect_timeout must be a whole number of seconds "
        f"(?connect_timeout=10), not '{value}'"
    )
    for name, result in both_commands(url).items():
        assert result.returncode == EX_CONFIG, name
        assert expected in one_line(result)
    assert expected in alembic_failure(alembic(url, "current"))


def test_wrong_scheme():
    result = enrollments("mysql://root@localhost/db", "audit")
    assert result.returncode == EX_CONFIG
    assert "unsupported database URL scheme 'mysql'" in one_line(result)


def test_no_url():
    result = enrollments(None, "audit")
    assert result.returncode == EX_CONFIG
    assert "no database URL: set DATABASE_URL" in one_line(result)


def test_host_unreachable():
    url = "postgresql://postgres@127.0.0.1:1/school"
    for name, result in both_commands(url).items():
        assert result.returncode == EX_UNAVAILABLE, name
        line = one_line(result)
        assert "cannot connect to postgresql+psycopg2://postgres@127.0.0.1:1/school" in line
        assert "Connection refused" in line
    result = alembic(url, "upgrade", "head")
    assert one_line(result).startswith("FAILED: cannot connect to")


def test_database_missing(database_url):
    url = database_url.set(database=f"{database_url.database}_missing")
    for name, result in both_commands(url).items():
        assert result.returncode == EX_UNAVAILABLE, name
        assert "does not exist" in one_line(result)
    assert "does not exist" in one_line(alembic(url, "upgrade", "head"))


@pytest.mark.embedded  # a cluster of the embedded package's binaries
def test_wrong_password(pg_server):
    """A cluster of the test's own with password authentication (the shared servers trust),
    started by pg_ctl with no start limit and always stopped."""
    from tests.cluster import Cluster, remove, workspace

    root = workspace()
    cluster = Cluster(pg_server.bin_dir, root, "passwords", 55434).initdb()
    hba = cluster.data / "pg_hba.conf"  # written in place: its owner stays the server's
    hba.write_text("local all app scram-sha-256\n" + hba.read_text())
    try:
        cluster.start()
        admin = create_engine(cluster.url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql("CREATE ROLE app LOGIN PASSWORD 'right'")
        admin.dispose()
        url = cluster.url().set(username="app", password="wrong")
        for name, result in both_commands(url).items():
            assert result.returncode == EX_UNAVAILABLE, name
            line = one_line(result)
            assert 'password authentication failed for user "app"' in line
            assert "wrong" not in line  # the password is not shown
        assert "password authentication failed" in one_line(alembic(url, "upgrade", "head"))
    finally:
        cluster.stop()
        remove(root)


def test_schema_not_migrated(database_url):
    for name, result in both_commands(database_url).items():
        assert result.returncode == EX_SCHEMA, name
        assert "the database is not migrated" in one_line(result)


def test_unknown_revision(database_url, legacy):
    with legacy.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0999'"))
    for name, result in both_commands(database_url).items():
        assert result.returncode == EX_SCHEMA, name
        assert "revision 0999, which this release does not know" in one_line(result)
    result = alembic(database_url, "upgrade", "head")
    assert "Can't locate revision identified by '0999'" in alembic_failure(result)


def test_read_only_role(database_url, story):
    with story.begin() as conn:
        conn.execute(text("DROP ROLE IF EXISTS enrollments_reader"))
        conn.execute(text("CREATE ROLE enrollments_reader LOGIN"))
        conn.execute(text("GRANT SELECT ON ALL TABLES IN SCHEMA public TO enrollments_reader"))
    before = snapshot(story)
    url = database_url.set(username="enrollments_reader", password=None)
    try:
        audit = enrollments(url, "audit", "--json")
        assert audit.returncode == 2
        assert json.loads(audit.stdout)["missing"] == 3
        dry = enrollments(url, "backfill")
        assert dry.returncode == 0
        result = enrollments(url, "backfill", "--commit", "--unrecorded")
        assert result.returncode == EX_NOPERM
        assert (
            "permission denied: role enrollments_reader may not write course_enrollments"
            in one_line(result)
        )
        assert snapshot(story) == before
    finally:
        with story.begin() as conn:
            conn.execute(text("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM enrollments_reader"))
        admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("DROP OWNED BY enrollments_reader"))
            conn.execute(text("DROP ROLE enrollments_reader"))
        admin.dispose()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["audit", "--limit", "-1"], "--limit: must be an integer from 0 to 100,000, not '-1'"),
        (["backfill", "--batch-size", "0"], "--batch-size: must be an integer from 1 to"),
        (
            ["backfill", "--commit", "--unrecorded", "--batch-size", "99999999999999999999"],
            "--batch-size: must be an integer from 1 to 1,000,000",
        ),
        (["audit", "--limit", "99999999999999999999"], "--limit: must be an integer from 0"),
        (["audit", "--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["backfill", "--lock-timeout", "soon"], "must be a PostgreSQL duration"),
        (["audit", "--by", "district"], "invalid choice: 'district'"),
        (
            ["backfill", "--commit", "--unrecorded", "--limit", "5"],
            "--limit lists the pairs a dry run would change",
        ),
        (["launch"], "invalid choice: 'launch'"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_usage_errors_are_one_line_with_a_hint(args, message):
    result = enrollments("postgresql://unused@127.0.0.1:1/x", *args)
    assert result.returncode == EX_USAGE
    line = one_line(result)
    assert message in line
    assert line.endswith("--help'")


@pytest.mark.parametrize("value", ["1.5s", "250 ms", "0", "2min", "keep"])
def test_durations_as_postgresql_takes_them(value):
    from enrollments_phase1.cli import build_parser

    args = build_parser().parse_args(["backfill", "--lock-timeout", value])
    assert args.lock_timeout == value


def test_keep_leaves_the_role_setting(database_url, story):
    from enrollments_phase1.cli import build_parser, open_connection

    with story.begin() as conn:
        conn.exec_driver_sql(
            f"ALTER DATABASE \"{database_url.database}\" SET statement_timeout = '7min'"
        )
    args = build_parser().parse_args(
        [
            "audit",
            "--statement-timeout",
            "keep",
            "--database-url",
            str(database_url.render_as_string(False)),
        ]
    )
    with open_connection(args) as session, session.connection.begin():
        conn = session.connection  # the command's settings hold in each of its transactions
        assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "7min"
        assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "5s"
        assert conn.exec_driver_sql("SHOW search_path").scalar() == "pg_catalog, pg_temp"
    with story.connect() as conn:  # and nowhere else: SET LOCAL
        assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "0"


def test_postgres_scheme_is_accepted(database_url, story):
    url = database_url.render_as_string(hide_password=False).replace(
        "postgresql+psycopg2://", "postgres://"
    )
    result = enrollments(url, "audit", "--json")
    assert result.returncode == 2, result.stderr


def test_an_unencoded_password_gets_advice_and_is_never_shown():
    for url in (
        "postgresql://app:p@ss:w%rd/x@127.0.0.1:5432/school",
        "postgresql://app:w%rd@db:5432/x",
    ):
        result = enrollments(url, "audit")
        assert result.returncode == EX_CONFIG
        line = one_line(result)
        assert "percent-encode it" in line and "%40" in line
        assert "w%rd" not in line and "ss:" not in line


@pytest.mark.parametrize("character", list("@:/#?% "))
def test_no_part_of_a_password_is_ever_shown(character):
    # Each character that must be percent-encoded in a password, left as it is: the URL
    # is refused with advice (or, where it still parses whole, the connection fails with
    # the password masked); no piece of the password appears anywhere.
    password = f"Xq7{character}Zv9{character}Wk3"
    url = f"postgresql://postgres:{password}@127.0.0.1:1/school"
    for result in (
        enrollments(url, "audit"),
        enrollments(url, "backfill", "--commit", "--unrecorded"),
        alembic(url, "upgrade", "head"),
    ):
        shown = result.stdout + result.stderr
        assert result.returncode != 0
        assert "Traceback" not in shown
        for piece in ("Xq7", "Zv9", "Wk3"):
            assert piece not in shown, shown


def test_a_password_with_at_signs_is_told_to_percent_encode():
    # As reported: a message showed "postgres:***@prod-2024@127.0.0.1...".
    url = "postgresql://postgres:Secret@prod-2024@127.0.0.1:5432/db"
    result = enrollments(url, "audit")
    assert result.returncode == EX_CONFIG
    line = one_line(result)
    assert line.startswith("enrollments audit: error: malformed database URL")
    assert "percent-encode" in line and "%40" in line
    assert "prod-2024" not in line and "Secret" not in line


def test_abbreviated_options_are_refused_and_nothing_is_written(database_url, story):
    before = snapshot(story)
    result = enrollments(database_url, "backfill", "--one", "--c")
    assert result.returncode == EX_USAGE
    assert one_line(result).startswith(
        "enrollments backfill: error: unrecognized arguments: --one --c"
    )
    assert snapshot(story) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["backfill", "--lock-timeout", "99999999999h"],
            "--lock-timeout: '99999999999h' is more than PostgreSQL takes: at most 2147483647ms",
        ),
        (
            ["audit", "--statement-timeout", "0.5ms"],
            "--statement-timeout: '0.5ms' is under 1 ms, which PostgreSQL rounds to 0, no "
            "limit at all",
        ),
        (["backfill", "--max-replica-lag", "-1s"], "--max-replica-lag: must not be negative"),
        (["backfill", "--lock-patience", "-5 min"], "--lock-patience: must not be negative"),
        (["audit", "--lock-timeout", "-1"], "--lock-timeout: must not be negative"),
        (["audit", "--frobnicate"], "enrollments audit: error: unrecognized arguments"),
    ],
)
def test_durations_postgresql_would_refuse_or_read_as_no_limit(args, message):
    result = enrollments("postgresql://unused@127.0.0.1:1/x", *args)
    assert result.returncode == EX_USAGE
    assert message in one_line(result)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("lock_timeout=0.5ms", "-x lock_timeout: '0.5ms' is under 1 ms"),
        ("statement_timeout=99999999999h", "-x statement_timeout: '99999999999h' is more than"),
        ("lock_patience=-1s", "-x lock_patience: must not be negative"),
    ],
)
def test_alembic_options_are_checked_the_same_way(option, message):
    result = alembic("postgresql://unused@127.0.0.1:1/x", "-x", option, "upgrade", "head")
    assert message in alembic_failure(result)


# --- data and schema not as expected: 65, naming what --------------------------------------
def test_a_not_null_column_without_default_is_named(database_url, story):
    with story.begin() as conn:
        conn.execute(
            text("ALTER TABLE course_enrollments ADD COLUMN source text NOT NULL DEFAULT 'x'")
        )
        conn.execute(text("ALTER TABLE course_enrollments ALTER COLUMN source DROP DEFAULT"))
    result = enrollments(database_url, "backfill", "--commit", "--unrecorded")
    assert result.returncode == EX_SCHEMA, result.stderr
    line = next(line for line in result.stderr.splitlines() if "error:" in line)
    assert 'column "source"' in line and "course_enrollments" in line


def test_an_exhausted_id_sequence_is_named(database_url, story):
    with story.begin() as conn:
        conn.execute(text("ALTER SEQUENCE course_enrollments_id_seq MAXVALUE 6"))
    result = enrollments(database_url, "backfill", "--commit", "--unrecorded")
    assert result.returncode == EX_SCHEMA, result.stderr
    line = next(line for line in result.stderr.splitlines() if "error:" in line)
    assert "course_enrollments_id_seq" in line and "maximum value" in line


def test_a_missing_unique_constraint_and_duplicates_are_named(database_url, story):
    before = snapshot(story)
    with story.begin() as conn:
        conn.execute(
            text("ALTER TABLE course_enrollments DROP CONSTRAINT uq_course_enrollment_once")
        )
        conn.execute(text("INSERT INTO course_enrollments (course_id, student_id) VALUES (1, 1)"))
    for name, result in both_commands(database_url).items():
        assert result.returncode == EX_SCHEMA, name
        line = one_line(result)
        assert "uq_course_enrollment_once is missing" in line
        assert "1 (course, student) pairs have more than one enrollment" in line
        assert "the first (course 1, student 1)" in line
    with story.connect() as conn:
        assert (
            conn.execute(text("SELECT count(*) FROM course_enrollments")).scalar()
            == len(before["course_enrollments"]) + 1
        )


def test_legacy_tables_in_another_schema_stop_an_upgrade_from_base(pg_server, database_url, engine):
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA legacy")
    upgrade_in_legacy = database_url.update_query_dict({"options": "-csearch_path=legacy"})
    assert alembic(upgrade_in_legacy, "upgrade", "0001").returncode == 0
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE legacy.alembic_version")  # production: never stamped
    line = alembic_failure(alembic(database_url, "upgrade", "head"))
    assert "the legacy tables are in schema legacy, not in public where this run" in line
    script = alembic(None, "upgrade", "head", "--sql").stdout
    offline = psql(pg_server, database_url, script)
    assert offline.returncode != 0
    assert "the legacy tables are in schema legacy" in offline.stderr
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT to_regclass('public.schools')").scalar() is None


ODD_NAMES = [
    'O\'Brien "Bobby"',
    "back\\slash \\n",
    "100% sure %s %d %%",
    "colon :name ::text :1",
    "Zoë Ångström Øster 李小龍",
    "$$ $gate$ dollar",
]


def odd_legacy_data(engine) -> None:
    """Odd but possible: a course with 3,000 groups, a student in 300 groups, names with
    quotes, backslashes, percent signs, colons, dollar quotes and non-ASCII letters, active
    NULL, a teacher, an admin, a cross-school membership."""
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO schools (name) VALUES (:a), (:b)"), {"a": ODD_NAMES[0], "b": "B"}
        )
        conn.execute(
            text("INSERT INTO courses (school_id, name) VALUES (1, :n), (1, :m), (2, :o)"),
            {"n": ODD_NAMES[2], "m": ODD_NAMES[3], "o": ODD_NAMES[5]},
        )
        conn.execute(
            text(
                "INSERT INTO groups (school_id, course_id, name)"
                " SELECT 1, 1, 'G' || i FROM generate_series(1, 3000) i"
            )
        )
        conn.execute(
            text("INSERT INTO groups (school_id, course_id, name) VALUES (1, 2, :n), (2, 3, 'X')"),
            {"n": ODD_NAMES[1]},
        )
        for i, name in enumerate(ODD_NAMES):
            conn.execute(
                text("INSERT INTO users (school_id, email, name, role) VALUES (1, :e, :n, :r)"),
                {
                    "e": f"{i}:%@x'y",
                    "n": name,
                    "r": ("student", "teacher", "admin")[i % 3] if i < 3 else "student",
                },
            )
        # user 1 (student) in 300 groups of course 1; everyone in course 2's group;
        # user 4 also in school 2's course (cross-school); user 6 with active NULL.
        conn.execute(
            text(
                "INSERT INTO group_members (school_id, group_id, user_id)"
                " SELECT 1, g, 1 FROM generate_series(1, 300) g"
            )
        )
        conn.execute(
            text(
                "INSERT INTO group_members (school_id, group_id, user_id, active)"
                " SELECT 1, 3001, id, CASE WHEN id = 6 THEN NULL ELSE true END FROM users"
            )
        )
        conn.execute(
            text("INSERT INTO group_members (school_id, group_id, user_id) VALUES (2, 3002, 4)")
        )


def test_odd_legacy_data_online_and_offline(pg_server, database_url, legacy):
    odd_legacy_data(legacy)
    audit = enrollments(database_url, "audit", "--json")
    data = json.loads(audit.stdout)
    assert audit.returncode == 2
    assert (data["eligible_pairs"], data["missing"]) == (4, 4)
    assert data["anomalies"] == {"non_student": 2, "cross_school": 1}
    assert {p["student_name"] for p in data["missing_pairs"]} == {
        ODD_NAMES[0],
        ODD_NAMES[3],
        ODD_NAMES[4],
    }
    assert [p["groups"] for p in data["missing_pairs"] if p["course_id"] == 1] == [300]
    text_report = enrollments(database_url, "audit")
    for name in (ODD_NAMES[0], ODD_NAMES[1], ODD_NAMES[2], ODD_NAMES[4], ODD_NAMES[5]):
        assert name in text_report.stdout

    # Offline: the script is generated without reading data, so it stays valid; run it.
    script = alembic(None, "upgrade", "0001:head", "--sql").stdout
    applied = psql(pg_server, database_url, script)
    assert applied.returncode == 0, applied.stderr
    after = json.loads(enrollments(database_url, "audit", "--json").stdout)
    assert (after["covered"], after["status"]) == (4, "warning")


def test_odd_names_in_the_online_gate_message(database_url, legacy):
    odd_legacy_data(legacy)
    upgrade(legacy, "0004")
    with legacy.begin() as conn:  # a gap behind the odd names, as an app without dual write
        conn.execute(text("DELETE FROM course_enrollments"))
    result = alembic(database_url, "upgrade", "head")
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    for name in (ODD_NAMES[0], ODD_NAMES[3], ODD_NAMES[4]):
        assert name in result.stdout
    assert "100% sure" in result.stdout  # a course name with % signs, printed as is
    assert alembic(database_url, "current").stdout.strip() == "0004"


# --- messages that name the right thing ---------------------------------------------------
def test_alembic_advice_names_its_own_options(database_url, story):
    import psycopg2

    from tests.helpers import libpq_url

    upgrade(story, "0003")
    holder = psycopg2.connect(libpq_url(database_url))
    holder.cursor().execute(
        "SELECT 1 FROM course_enrollments WHERE course_id = 1 AND student_id = 2 FOR UPDATE"
    )
    try:
        result = alembic(
            database_url,
            "-x",
            "lock_timeout=30s",
            "-x",
            "statement_timeout=300ms",
            "upgrade",
            "head",
        )
    finally:
        holder.rollback()
        holder.close()
    line = alembic_failure(result)
    assert "statement timeout" in line and "raise -x statement_timeout=DURATION" in line
    assert "--statement-timeout" not in line and "--batch-size" not in line


def test_cli_advice_names_its_own_flags(database_url, story):
    import psycopg2

    from tests.helpers import libpq_url

    holder = psycopg2.connect(libpq_url(database_url))
    holder.cursor().execute("LOCK TABLE course_enrollments IN ACCESS EXCLUSIVE MODE")
    try:
        result = enrollments(
            database_url,
            "backfill",
            "--commit",
            "--unrecorded",
            "--lock-timeout",
            "200ms",
            "--lock-patience",
            "1s",
        )
    finally:
        holder.rollback()
        holder.close()
    assert result.returncode == 75
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr  # (before it: the retries, said as they happen)
    assert "raise --lock-timeout or --lock-patience" in errors[0] and "-x " not in errors[0]


def test_a_role_that_may_not_read_a_table_is_told_so(database_url, story):
    with story.begin() as conn:
        conn.execute(text("DROP ROLE IF EXISTS enrollments_partial"))
        conn.execute(text("CREATE ROLE enrollments_partial LOGIN"))
        conn.execute(text("GRANT SELECT ON schools, users, courses, groups TO enrollments_partial"))
    url = database_url.set(username="enrollments_partial", password=None)
    try:
        for name, result in both_commands(url).items():
            assert result.returncode == EX_NOPERM, name
            line = one_line(result)
            assert "role enrollments_partial may not read group_members" in line
            assert "not migrated" not in line and "stamp" not in line
        failed = alembic_failure(alembic(url, "upgrade", "head"))
        assert "permission denied" in failed and "stamp" not in failed
    finally:
        admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("DROP OWNED BY enrollments_partial"))
            conn.execute(text("DROP ROLE enrollments_partial"))
        admin.dispose()


def test_an_unstamped_legacy_database_is_told_to_stamp(database_url, story):
    with story.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
    before = snapshot(story)
    line = alembic_failure(alembic(database_url, "upgrade", "head"))
    assert "this database was never stamped; run alembic stamp 0001 once" in line
    assert snapshot(story) == before
    assert alembic(database_url, "stamp", "0001").returncode == 0
    assert alembic(database_url, "upgrade", "head").returncode == 0


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (
            [],
            "the legacy tables revision 0001 stands for are not in schema public: schools, "
            "users, courses, groups, group_members, course_enrollments missing",
        ),
        (
            ["CREATE TABLE group_members (id serial PRIMARY KEY, team text, person text)"],
            "schools, users, courses, groups, course_enrollments missing",
        ),
    ],
    ids=["empty", "unrelated group_members"],
)
def test_stamp_refuses_a_database_without_the_legacy_tables(database_url, engine, setup, expected):
    with engine.begin() as conn:
        for statement in setup:
            conn.execute(text(statement))
    line = alembic_failure(alembic(database_url, "stamp", "0001"))
    assert "stamp refused: " in line and expected in line and "nothing was stamped" in line
    with engine.connect() as conn:
        stamped = conn.execute(text("SELECT to_regclass('alembic_version') IS NOT NULL")).scalar()
        if stamped:
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 0


def test_stamp_refuses_legacy_named_tables_of_another_shape(database_url, story):
    # All six names are there, but group_members is another table.
    with story.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
        conn.execute(text("ALTER TABLE group_members DROP COLUMN active"))
    line = alembic_failure(alembic(database_url, "stamp", "0001"))
    assert (
        'stamp refused: table "public".group_members is not the legacy one: it lacks column(s) '
        "active; nothing was stamped" in line
    )
    assert alembic(database_url, "current").stdout.strip() == ""
