"""Helpers the tests share: the server, the real commands, psql, table contents."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine

from enrollments_phase1 import sample_data

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


@dataclass
class PostgresForTests:
    """A PostgreSQL server the tests may create databases on, with its client tools."""

    admin_url: URL
    bin_dir: Path

    def tool(self, name: str) -> str:
        return str(self.bin_dir / name)

    def create_database(self, template: str | None = None) -> URL:
        name = f"t_{uuid.uuid4().hex[:16]}"
        engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            copy = f' TEMPLATE "{template}"' if template else ""
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"{copy}')
        engine.dispose()
        return self.admin_url.set(database=name)

    def drop_database(self, url: URL) -> None:
        engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
        engine.dispose()


def libpq_url(url: URL) -> str:
    """The URL as psql and pg_dump take it."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def url_string(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def story_rows() -> list[dict]:
    """The sample legacy data as pytest-alembic rows (one ``__tablename__`` each)."""
    return [
        {"__tablename__": table, **row}
        for table in sample_data.LEGACY_TABLES
        for row in sample_data.STORY.get(table, [])
    ]


# --- running the real commands ----------------------------------------------------------
@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def run_command(args: list[str], database_url: URL | str | None, **env: str) -> Run:
    """Run a console script of this project (``alembic``, ``enrollments``) as users do: its
    exit code, its stdout and its stderr. In this process (the same entry points the
    console scripts call, with this environment, this directory, and their own logging),
    which spares a Python start per call; in a process of its own where the environment
    must change what Python imports (``PYTHONPATH``)."""
    environ = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    if database_url is not None:
        environ["DATABASE_URL"] = (
            database_url if isinstance(database_url, str) else url_string(database_url)
        )
    environ.update(env)
    if "PYTHONPATH" in env:
        exe = str(VENV_BIN / args[0])
        proc = subprocess.run(
            [exe, *args[1:]], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=600
        )
        return Run(proc.returncode, proc.stdout, proc.stderr)
    return _in_process(args, environ)


_ONE_AT_A_TIME = threading.Lock()  # the environment and sys.stdout are the process's


class _Captured(io.StringIO):
    """What a console script writes, as its UTF-8 stdout or stderr would take it (Alembic
    encodes with the stream's encoding)."""

    encoding = "utf-8"


def _alembic_main(argv: list[str]) -> None:
    """``alembic ARGV`` as its console script runs it (alembic.config.main), but printing to
    the sys.stdout of now: Config's default stdout is the one of when Alembic was imported."""
    from alembic.config import CommandLine, Config

    command_line = CommandLine(prog="alembic")
    options = command_line.parser.parse_args(argv)
    if not hasattr(options, "cmd"):
        command_line.parser.error("too few arguments")
    toml, ini = command_line._inis_from_config(options)
    config = Config(
        file_=ini, toml_file=toml, ini_section=options.name, cmd_opts=options, stdout=sys.stdout
    )
    command_line.run_cmd(config, options)


def _in_process(args: list[str], environ: dict[str, str]) -> Run:
    import contextlib
    import logging

    out, err = _Captured(), _Captured()
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    saved = [(lg, lg.handlers[:], lg.level, lg.propagate, lg.disabled) for lg in loggers]
    with _ONE_AT_A_TIME, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        before = dict(os.environ)
        os.environ.clear()
        os.environ.update(environ)
        try:
            if args[0] == "alembic":
                _alembic_main(args[1:])
                code = 0
            else:
                from enrollments_phase1.cli import main as enrollments_main

                code = enrollments_main(args[1:])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            os.environ.clear()
            os.environ.update(before)
            for lg, handlers, level, propagate, disabled in saved:
                lg.handlers[:] = handlers
                lg.setLevel(level)
                lg.propagate, lg.disabled = propagate, disabled
    return Run(code & 0xFF, out.getvalue(), err.getvalue())


def alembic(database_url: URL | str | None, *args: str, **env: str) -> Run:
    return run_command(["alembic", *args], database_url, **env)


def enrollments(database_url: URL | str | None, *args: str, **env: str) -> Run:
    return run_command(["enrollments", *args], database_url, **env)


def status_of(database_url: URL | str) -> dict:
    """``enrollments status --json``, read (it exits 0 whenever it can read the state)."""
    import json

    result = enrollments(database_url, "status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def psql(server: PostgresForTests, url: URL, sql: str) -> Run:
    """Run a script with ``psql -v ON_ERROR_STOP=1``, as a DBA would."""
    proc = subprocess.run(
        [server.tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", libpq_url(url)],
        input=sql,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def enrollments_rows(engine: Engine) -> list[tuple]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                text(
                    "SELECT course_id, student_id, active FROM course_enrollments"
                    " ORDER BY course_id, student_id"
                )
            )
        ]


def load_story(engine: Engine) -> None:
    with engine.begin() as conn:
        sample_data.load(conn)


def _in_process_config(engine: Engine, x: tuple[str, ...]):
    import argparse

    from alembic.config import Config

    config = Config(str(ROOT / "alembic.ini"), cmd_opts=argparse.Namespace(x=list(x)))
    config.attributes["connection"] = engine
    config.attributes["configure_logger"] = False
    return config


def upgrade(engine: Engine, revision: str, *x: str) -> None:
    """``alembic [-x X ...] upgrade`` in-process on ``engine`` (faster than the console
    script)."""
    from alembic import command

    command.upgrade(_in_process_config(engine, x), revision)


def downgrade(engine: Engine, revision: str, *x: str) -> None:
    """``alembic [-x X ...] downgrade`` in-process on ``engine``."""
    from alembic import command

    command.downgrade(_in_process_config(engine, x), revision)


LEGACY_TABLE_NAMES = (
    "schools",
    "users",
    "courses",
    "groups",
    "group_members",
    "course_enrollments",
)


def snapshot(engine: Engine) -> dict[str, list[tuple]]:
    """Every row of every legacy table, for "nothing changed" assertions."""
    with engine.connect() as conn:
        return {
            table: [tuple(r) for r in conn.execute(text(f"SELECT * FROM {table} ORDER BY id"))]
            for table in LEGACY_TABLE_NAMES
        }


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """``enrollments ARGS`` in-process: (exit code, stdout, stderr)."""
    from enrollments_phase1.cli import main

    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def at_0004_with_a_gap(database_url: URL, engine: Engine) -> list[tuple]:
    """The story backfilled by 0004 (sync trigger installed), then a gap the trigger does
    not close: the application deletes an enrollment (Ada in Physics) while her membership
    stays active. Returns course_enrollments at that point."""
    upgrade(engine, "0001")
    load_story(engine)
    upgrade(engine, "0004")
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM course_enrollments WHERE course_id = 2 AND student_id = 1"))
    return enrollments_rows(engine)


# --- processes in the background and waiting on the database -----------------------------
class Background:
    """A console script of this project running beside the test, its output read as it
    comes, so that a test can wait for a line it prints (an event, not a sleep)."""

    def __init__(self, args: list[str], database_url: URL | str | None, **env: str) -> None:
        import threading

        environ = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        if database_url is not None:
            environ["DATABASE_URL"] = (
                database_url if isinstance(database_url, str) else url_string(database_url)
            )
        environ.update(env)
        exe = args[0] if os.path.isabs(args[0]) else str(VENV_BIN / args[0])
        self.proc = subprocess.Popen(
            [exe, *args[1:]],
            cwd=ROOT,
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(stream, lines), daemon=True)
            for stream, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream, lines: list[str]) -> None:
        for line in stream:
            with self._changed:
                lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        return "".join(self.out) + "".join(self.err)

    def wait_for(self, needle: str, timeout: float = 60) -> str:
        """Block until a line containing ``needle`` is printed; return that line."""
        import time

        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.out + self.err:
                    if needle in line:
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or (
                    self.proc.poll() is not None and not any(r.is_alive() for r in self._readers)
                ):
                    raise AssertionError(f"never printed {needle!r}:\n{self.output}")
                self._changed.wait(min(left, 0.5))

    def finish(self, timeout: float = 120) -> Run:
        self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=10)
        return Run(self.proc.returncode, "".join(self.out), "".join(self.err))


def wait_until(engine: Engine, sql: str, timeout: float = 60, **params) -> object:
    """Poll a catalog query (pg_stat_activity, pg_locks) until it returns a truthy value."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as conn:
            value = conn.execute(text(sql), params).scalar()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {sql}")
        time.sleep(0.05)


# An inactive enrollment that the backfill reactivates two thirds into its walk: holding
# its row lock stops a run there.
LATE_INACTIVE = """WITH late AS (
    SELECT DISTINCT ce.id, ce.student_id, ce.course_id FROM course_enrollments ce
    JOIN groups g ON g.course_id = ce.course_id
    JOIN courses c ON c.id = ce.course_id
    JOIN group_members gm ON gm.group_id = g.id AND gm.user_id = ce.student_id
    JOIN users u ON u.id = gm.user_id
    WHERE NOT ce.active AND gm.active AND u.role = 'student' AND u.school_id = c.school_id
)
SELECT id FROM late ORDER BY student_id, course_id
OFFSET (SELECT count(*) * 2 / 3 FROM late) LIMIT 1"""


WAITING_ON_LOCK = (
    "SELECT pid FROM pg_stat_activity WHERE application_name = :app"
    " AND wait_event_type = 'Lock' AND datname = current_database() LIMIT 1"
)


def _head() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(Config(str(ROOT / "alembic.ini"))).get_current_head()


HEAD = _head()  # the newest revision


class Application:
    """Writes like the application, in a thread, until stopped.

    Each transaction adds a student and a membership in one of the groups (the legacy
    application writes only ``group_members``; with ``dual_write`` it also enrolls the
    pair, as the Phase 1 application does). Every 5th also enrolls an existing pair that
    may be a gap (racing the backfill); every 7th deactivates one of the students it added
    earlier: the membership, then the enrollment, as the application does when a student
    leaves. Commit times come from the server's clock, to compare with the backfill's.
    """

    def __init__(self, url: URL, dual_write: bool = False, pause: float = 0.005) -> None:
        import threading

        self.url = libpq_url(url)
        self.dual_write = dual_write
        self.pause = pause
        self.stop_event = threading.Event()
        self.errors: list[str] = []
        self.commits: list = []  # server timestamps
        self.deactivated: list[tuple[int, int]] = []  # (student, course) that left
        self.thread = threading.Thread(target=self.run, daemon=True)

    def start(self) -> Application:
        self.thread.start()
        return self

    def run(self) -> None:
        import time

        import psycopg2

        conn = psycopg2.connect(self.url, application_name="application")
        cur = conn.cursor()
        cur.execute("SELECT id, school_id, course_id FROM groups ORDER BY id")
        groups = cur.fetchall()
        cur.execute("SELECT coalesce(max(id), 1) FROM group_members")
        max_member = cur.fetchone()[0]
        conn.commit()
        added: list[tuple[int, int, int]] = []  # (user, group, course)
        i = 0
        while not self.stop_event.is_set():
            i += 1
            group_id, school_id, course_id = groups[(i * 7919) % len(groups)]
            try:
                cur.execute(
                    "INSERT INTO users (school_id, email, name) VALUES (%s, %s, %s) RETURNING id",
                    (school_id, f"app{i}-{time.monotonic_ns()}@example", f"New {i}"),
                )
                user_id = cur.fetchone()[0]
                cur.execute(
                    "INSERT INTO group_members (school_id, group_id, user_id) VALUES (%s, %s, %s)",
                    (school_id, group_id, user_id),
                )
                if self.dual_write:
                    cur.execute(
                        "INSERT INTO course_enrollments (course_id, student_id) VALUES (%s, %s)"
                        " ON CONFLICT (course_id, student_id) DO NOTHING",
                        (course_id, user_id),
                    )
                    if i % 5 == 0:  # an existing pair, maybe a gap the backfill is closing
                        cur.execute(
                            "INSERT INTO course_enrollments (course_id, student_id)"
                            " SELECT g.course_id, gm.user_id FROM group_members gm"
                            " JOIN groups g ON g.id = gm.group_id"
                            " JOIN users u ON u.id = gm.user_id"
                            " JOIN courses c ON c.id = g.course_id"
                            " WHERE gm.active AND u.role = 'student' AND u.school_id = c.school_id"
                            " AND gm.id = %s ON CONFLICT (course_id, student_id) DO NOTHING",
                            (1 + (i * 104729) % max_member,),
                        )
                if i % 7 == 0 and added:
                    left_user, left_group, left_course = added.pop(0)
                    cur.execute(
                        "UPDATE group_members SET active = false"
                        " WHERE user_id = %s AND group_id = %s",
                        (left_user, left_group),
                    )
                    cur.execute(
                        "UPDATE course_enrollments SET active = false"
                        " WHERE student_id = %s AND course_id = %s",
                        (left_user, left_course),
                    )
                    self.deactivated.append((left_user, left_course))
                cur.execute("SELECT clock_timestamp()")
                stamp = cur.fetchone()[0]
                conn.commit()
                self.commits.append(stamp)
                added.append((user_id, group_id, course_id))
            except psycopg2.Error as exc:
                conn.rollback()
                self.errors.append(str(exc).splitlines()[0])
            time.sleep(self.pause)
        conn.close()

    def stop(self) -> Application:
        self.stop_event.set()
        self.thread.join()
        return self

    def commits_between(self, start, end) -> int:
        return sum(1 for stamp in self.commits if start < stamp < end)


FIXTURES = ROOT / "tests" / "fixtures"


def at_release_1_0_0(server: PostgresForTests, url: URL, engine: Engine, revision: str) -> None:
    """Bring a database at 0001 to ``revision`` exactly as release 1.0.0 did: its own
    offline script, run with psql (tests/fixtures/release_1_0_0)."""
    script = (FIXTURES / "release_1_0_0" / f"upgrade_0001_{revision}.sql").read_text()
    result = psql(server, url, script)
    assert result.returncode == 0, result.stderr
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == revision


RECORDED_SQL = """SELECT x.source, x.action, x.course_id, x.student_id FROM (
    SELECT r.source, u.action, e.course_id, e.student_id
    FROM enrollment_backfill_batches AS b
    JOIN enrollment_backfill_runs AS r ON r.id = b.run_id
    CROSS JOIN LATERAL (
        SELECT i.id, 'created' AS action FROM unnest(b.created) AS i(id)
        UNION ALL
        SELECT i.id, 'reactivated' FROM unnest(b.reactivated) AS i(id)
    ) AS u
    LEFT JOIN course_enrollments AS e ON e.id = u.id
    UNION ALL
    SELECT c.revision, c.action, c.course_id, c.student_id FROM enrollment_backfill_changes AS c
) AS x"""


def recorded(engine: Engine, source: str | None = None) -> list[tuple]:
    """What the backfills recorded, 1.3's record and 1.2's: (action, course_id, student_id)
    sorted, of ``source`` (a revision, or 'enrollments backfill') or of all."""
    where = "" if source is None else " WHERE x.source = :source"
    with engine.connect() as conn:
        rows = conn.execute(
            text(f"{RECORDED_SQL}{where} ORDER BY 2, 3, 4"), {"source": source}
        ).all()
    return [(r.action, r.course_id, r.student_id) for r in rows]


def record_size(engine: Engine) -> int:
    """How many enrollments the backfill record holds (both records)."""
    with engine.connect() as conn:
        return conn.execute(text(f"SELECT count(*) FROM ({RECORDED_SQL}) AS r")).scalar_one()
