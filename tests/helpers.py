"""Helpers the tests share: the server, the real commands, psql, table contents."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine

from app import sample_data

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


@dataclass
class PostgresForTests:
    """A PostgreSQL server the tests may create databases on, with its client tools."""

    admin_url: URL
    bin_dir: Path

    def tool(self, name: str) -> str:
        return str(self.bin_dir / name)

    def create_database(self) -> URL:
        name = f"t_{uuid.uuid4().hex[:16]}"
        engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
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
    """Run a console script of this project (``alembic``, ``enrollments``) as users do."""
    environ = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    if database_url is not None:
        environ["DATABASE_URL"] = (
            database_url if isinstance(database_url, str) else url_string(database_url)
        )
    environ.update(env)
    exe = str(VENV_BIN / args[0])
    proc = subprocess.run(
        [exe, *args[1:]], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=600
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def alembic(database_url: URL | str | None, *args: str, **env: str) -> Run:
    return run_command(["alembic", *args], database_url, **env)


def enrollments(database_url: URL | str | None, *args: str, **env: str) -> Run:
    return run_command(["enrollments", *args], database_url, **env)


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


def upgrade(engine: Engine, revision: str) -> None:
    """``alembic upgrade`` in-process on ``engine`` (faster than the console script)."""
    from alembic import command
    from alembic.config import Config

    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["connection"] = engine
    config.attributes["configure_logger"] = False
    command.upgrade(config, revision)


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
    from app.cli import main

    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def at_0004_with_a_gap(database_url: URL, engine: Engine) -> list[tuple]:
    """The story backfilled by 0004, then a membership that an application without the
    dual write added alone (Nina in Physics). Returns course_enrollments at that point."""
    upgrade(engine, "0001")
    load_story(engine)
    upgrade(engine, "0004")
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO group_members (school_id, group_id, user_id) VALUES (1, 3, 7)")
        )
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
        self.proc = subprocess.Popen(
            [str(VENV_BIN / args[0]), *args[1:]],
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


WAITING_ON_LOCK = (
    "SELECT pid FROM pg_stat_activity WHERE application_name = :app"
    " AND wait_event_type = 'Lock' AND datname = current_database() LIMIT 1"
)
