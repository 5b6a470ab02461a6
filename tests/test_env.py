"""migrations/env.py: the URL, one-line errors, -x options, offline
without a database."""

import re

from tests.helpers import alembic


def test_online_upgrade_without_url_fails_with_one_line_error():
    result = alembic(None, "upgrade", "head")
    output = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode != 0
    assert output == [
        "FAILED: no database URL: set DATABASE_URL "
        "(for example postgresql://user:password@host:5432/dbname)"
    ]


def test_offline_sql_needs_no_database():
    result = alembic("postgresql://nobody@127.0.0.1:1/none", "upgrade", "head", "--sql")
    assert result.returncode == 0, result.stderr
    assert "CREATE TABLE public.course_enrollments" in result.stdout
    assert result.stdout.rstrip().endswith("COMMIT;")
    assert alembic(None, "upgrade", "head", "--sql").stdout == result.stdout


def test_malformed_url_is_one_line_error():
    result = alembic("not a url", "upgrade", "head")
    output = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode != 0
    assert len(output) == 1
    assert output[0].startswith("FAILED: malformed database URL")


def test_unknown_x_option_is_refused():
    result = alembic(None, "-x", "lock_timout=5s", "upgrade", "head", "--sql")
    assert result.returncode != 0
    assert "unknown -x option(s): lock_timout" in result.stdout + result.stderr


def test_the_settings_start_every_transaction_of_the_offline_script():
    """SET LOCAL in each transaction: nothing is left on the connection (through a pooler,
    another client's)."""
    result = alembic(None, "-x", "lock_timeout=750ms", "upgrade", "head", "--sql")
    assert result.returncode == 0, result.stderr
    script = result.stdout
    assert script.startswith("\\set ON_ERROR_STOP on\n")
    settings = (
        "BEGIN;\n\nSET LOCAL search_path = pg_catalog, pg_temp;\n\n"
        "SET LOCAL lock_timeout = '750ms';\n\nSET LOCAL statement_timeout = '0';\n\n"
    )
    prelude = settings + "DO $lock$"
    # The first transaction makes the lock's table where it is missing, then takes it.
    first = script.index("BEGIN;")
    assert script.index(settings + "-- The enrollments lock's table") == first
    assert script.count("BEGIN;") == script.count(prelude) + 1 > 10
    session_level = r"^(SET|RESET) (lock_timeout|statement_timeout|search_path)[^\n]*;$"
    assert not re.search(session_level, script, re.M)


def test_an_unexpected_exception_is_one_failed_line(tmp_path, database_url):
    """A bug inside env.py (here: taking the lock raises) ends in Alembic's one FAILED
    line, naming the exception, not in a traceback."""
    (tmp_path / "sitecustomize.py").write_text(
        "import enrollments_phase1.lock\n"
        "def broken(self, *args, **kwargs):\n"
        "    raise RuntimeError('boom')\n"
        "enrollments_phase1.lock.LockSession.acquire = broken\n"
    )
    result = alembic(database_url, "upgrade", "head", PYTHONPATH=str(tmp_path))
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
    assert failed == ["FAILED: internal error: RuntimeError: boom (a bug; please report it)"]
