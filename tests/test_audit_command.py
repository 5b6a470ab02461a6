"""``enrollments audit``: text and JSON reports, exit codes 0, 1, 2."""

import json
import re

import pytest
from sqlalchemy import text

from tests.helpers import cli, enrollments, snapshot

CONTRACT_FIELDS = {
    "status",
    "active_memberships",
    "eligible_pairs",
    "covered",
    "inactive",
    "missing",
    "coverage_percent",
    "anomalies",
    "missing_pairs",
    "inactive_pairs",
}
PAIR_FIELDS = {"student_id", "course_id", "student_name", "email", "course_name", "groups"}


def many_students(engine, students: int, enrolled: int) -> None:
    """One course, one group, ``students`` students in it, the first ``enrolled`` enrolled."""
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO schools (name) VALUES ('Big School')"))
        conn.execute(text("INSERT INTO courses (school_id, name) VALUES (1, 'Big Course')"))
        conn.execute(text("INSERT INTO groups (school_id, course_id, name) VALUES (1, 1, 'G')"))
        conn.execute(
            text(
                "INSERT INTO users (school_id, email, name)"
                " SELECT 1, 's' || i || '@big.example', 'Student ' || i"
                " FROM generate_series(1, :n) AS i"
            ),
            {"n": students},
        )
        conn.execute(
            text(
                "INSERT INTO group_members (school_id, group_id, user_id)"
                " SELECT 1, 1, id FROM users"
            )
        )
        conn.execute(
            text(
                "INSERT INTO course_enrollments (course_id, student_id)"
                " SELECT 1, id FROM users ORDER BY id LIMIT :n"
            ),
            {"n": enrolled},
        )


def test_gaps_exit_2_with_a_readable_report(story, db, capsys):
    code, out, err = cli(capsys, "audit", "--database-url", db)
    assert code == 2, err
    assert "coverage                             28.57%" in out
    assert "Missing enrollments (first 3 of 3):" in out
    assert 'Bob "Tables" \\ 50% :done <bob@north.example> -> Physics' in out
    assert "Zoë O'Connor <zoe@north.example> -> Mathématiques 101" in out
    assert "teacher   Grace Hopper" in out
    assert "FAIL: coverage is below 100%" in out


def test_json_has_the_contract_fields(story, db, capsys):
    code, out, _ = cli(capsys, "audit", "--json", "--database-url", db)
    data = json.loads(out)
    assert code == 2
    assert set(data) >= CONTRACT_FIELDS
    assert data["status"] == "fail"
    assert data["coverage_percent"] == 28.57
    assert data["anomalies"] == {"non_student": 2, "cross_school": 1}
    assert all(set(p) >= PAIR_FIELDS for p in data["missing_pairs"] + data["inactive_pairs"])
    assert data["missing_pairs"][2]["course_name"] == "Français"


def test_limit_bounds_the_lists(story, db, capsys):
    _, out, _ = cli(capsys, "audit", "--json", "--limit", "1", "--database-url", db)
    data = json.loads(out)
    assert len(data["missing_pairs"]) == 1 and data["missing"] == 3


def test_full_coverage_with_anomalies_is_a_warning(story, db, capsys):
    assert cli(capsys, "backfill", "--commit", "--unrecorded", "--database-url", db)[0] == 0
    code, out, _ = cli(capsys, "audit", "--json", "--database-url", db)
    data = json.loads(out)
    assert (code, data["status"], data["coverage_percent"]) == (1, "warning", 100.0)


def test_no_eligible_pairs_is_a_pass(legacy, db, capsys):
    code, out, _ = cli(capsys, "audit", "--database-url", db)
    assert code == 0
    assert "coverage                            100.00%" in out
    assert "PASS" in out


def test_one_gap_in_ten_thousand_is_not_100_percent(legacy, db, capsys):
    many_students(legacy, 10_000, 9_999)
    code, out, _ = cli(capsys, "audit", "--database-url", db)
    assert code == 2
    assert "99.99%" in out and "100.0" not in out
    code, out, _ = cli(capsys, "audit", "--json", "--database-url", db)
    data = json.loads(out)
    assert (data["covered"], data["eligible_pairs"], data["coverage_percent"]) == (
        9_999,
        10_000,
        99.99,
    )
    assert data["missing_pairs"][0]["student_id"] == 10_000


def test_audit_writes_nothing(story, db, capsys):
    before = snapshot(story)
    cli(capsys, "audit", "--database-url", db)
    assert snapshot(story) == before


def test_console_script_reads_database_url(story, database_url):
    result = enrollments(database_url, "audit", "--json")
    assert result.returncode == 2
    assert json.loads(result.stdout)["missing"] == 3


# --- the breakdown --------------------------------------------------------------------
@pytest.mark.parametrize("by", ["school", "course"])
def test_breakdown_rows_add_up_to_the_totals(story, db, capsys, by):
    code, out, _ = cli(capsys, "audit", "--json", "--by", by, "--database-url", db)
    data = json.loads(out)
    assert code == 2
    rows = data["breakdown"]
    key = f"{by}_id"
    for field in ("eligible_pairs", "covered", "inactive", "missing"):
        assert sum(r[field] for r in rows) == data[field], field
    assert sum(r["anomalies"] for r in rows) == sum(data["anomalies"].values())
    assert [r["missing"] for r in rows] == sorted((r["missing"] for r in rows), reverse=True)
    assert all(
        set(r) == {key, "eligible_pairs", "covered", "inactive", "missing", "anomalies"}
        for r in rows
    )


def test_breakdown_by_school_of_the_story(story, db, capsys):
    _, out, _ = cli(capsys, "audit", "--json", "--by", "school", "--database-url", db)
    rows = json.loads(out)["breakdown"]
    assert rows == [
        {
            "school_id": 1,
            "eligible_pairs": 6,
            "covered": 2,
            "inactive": 2,
            "missing": 2,
            "anomalies": 3,
        },
        {
            "school_id": 2,
            "eligible_pairs": 1,
            "covered": 0,
            "inactive": 0,
            "missing": 1,
            "anomalies": 0,
        },
    ]
    code, text_report, _ = cli(capsys, "audit", "--by", "school", "--database-url", db)
    assert code == 2
    assert (
        "By school (most missing first):\n"
        "    school  name                 eligible  covered inactive  missing anomalies\n"
        "         1  Northside High              6        2        2        2         3\n"
        "         2  O'Brien Académie            1        0        0        1         0\n"
    ) in text_report


def test_the_breakdown_by_course_shows_limit_rows_with_names(story, db, capsys):
    code, text_report, _ = cli(
        capsys, "audit", "--by", "course", "--limit", "1", "--database-url", db
    )
    assert code == 2
    assert (
        "By course (most missing first):\n"
        "    course  name                 eligible  covered inactive  missing anomalies\n"
        "         2  Physics                     2        0        0        2         1\n"
        "  ... and 3 more courses (--limit shows more; --json lists all)\n"
    ) in text_report
    table = text_report.split("By course")[1].split("\n\n")[0]
    assert max(len(line) for line in table.splitlines()) < 80


def test_no_breakdown_without_by(story, db, capsys):
    _, out, _ = cli(capsys, "audit", "--json", "--database-url", db)
    assert "breakdown" not in json.loads(out)


# --- output -----------------------------------------------------------------------------
def test_limit_0_prints_no_empty_tables(story, db, capsys):
    code, out, _ = cli(capsys, "audit", "--limit", "0", "--database-url", db)
    assert code == 2
    assert "first 0 of" not in out and "student name / email" not in out
    assert re.search(r"^  missing enrollment +3$", out, re.MULTILINE)


def test_json_is_ascii_whatever_the_output_encoding(story, database_url):
    result = enrollments(database_url, "audit", "--json", PYTHONIOENCODING="ascii")
    assert result.returncode == 2, result.stderr
    result.stdout.encode("ascii")
    data = json.loads(result.stdout)
    assert "Zoë O'Connor" in {p["student_name"] for p in data["inactive_pairs"]}


@pytest.mark.parametrize("limit", ["10", "1000"])
def test_a_reader_that_goes_away_is_not_an_error(story, database_url, limit):
    """``enrollments audit --json | head -c 10``: the command's own exit code, no error."""
    import subprocess

    from tests.helpers import VENV_BIN, url_string

    for _ in range(5):
        proc = subprocess.Popen(
            [str(VENV_BIN / "enrollments"), "audit", "--json", "--limit", limit],
            env={"DATABASE_URL": url_string(database_url), "PATH": ""},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert len(proc.stdout.read(10)) == 10
        proc.stdout.close()  # the reader goes away
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=60) == 2, err
        assert "error" not in err and "Traceback" not in err


def test_verbose_is_taken_after_the_command_too(story, database_url):
    result = enrollments(database_url, "audit", "-v", "--limit", "0")
    assert result.returncode == 2, result.stderr
    before = enrollments(database_url, "-v", "audit", "--limit", "0")
    assert before.returncode == 2, before.stderr


def test_a_statement_timeout_is_exit_75_and_says_so(database_url, story, db):
    # The counting statement waits on a lock past --statement-timeout: 1.2.0 put its plan's
    # settings back on the aborted transaction and reported "current transaction is
    # aborted", exit 70.
    import psycopg2

    from tests.helpers import libpq_url

    holder = psycopg2.connect(libpq_url(database_url))
    holder.cursor().execute("LOCK TABLE group_members IN ACCESS EXCLUSIVE MODE")
    try:
        result = enrollments(db, "audit", "--statement-timeout", "300ms")
    finally:
        holder.rollback()
        holder.close()
    assert result.returncode == 75, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "statement timeout" in lines[0], result.stderr
    assert "current transaction is aborted" not in result.stderr


def test_verbose_shows_where_an_unforeseen_error_came_from(story, db, capsys, monkeypatch):
    # An error nobody foresaw is exit 70 with one line that says to run with -v; with -v
    # the traceback comes first.
    from enrollments_phase1 import cli as cli_module

    def broken(connection, **kwargs):
        connection.execute(text("SELECT 1 / 0"))

    monkeypatch.setattr(cli_module, "audit", broken)
    code, _, err = cli(capsys, "audit", "--database-url", db)
    assert code == 70
    assert err.count("\n") == 1 and "run with -v for details" in err
    assert "Traceback" not in err
    code, _, err = cli(capsys, "-v", "audit", "--database-url", db)
    assert code == 70
    assert "Traceback (most recent call last)" in err and "DivisionByZero" in err
    assert err.strip().splitlines()[-1].startswith("enrollments audit: error: database error:")
