"""Where the bench runs: a PostgreSQL server, databases copied from a template, and
commands timed with their own peak memory.

Runs on an embedded PostgreSQL unless DATABASE_URL names a server (its databases
bench_* are created and dropped there).
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.engine import URL

from bench.generate import Shape, generate
from enrollments_phase1.db import parse_url
from enrollments_phase1.embedded import EmbeddedPostgres, client_bin_dir

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@dataclass
class Measured:
    seconds: float
    peak_mb: float
    returncode: int
    stdout: str
    stderr: str


def measure(command: list[str], env: dict[str, str] | None = None) -> Measured:
    """Run a command: its wall time and its own peak RSS (see bench/peak.py)."""
    with (
        tempfile.TemporaryFile("w+") as out,
        tempfile.TemporaryFile("w+") as err,
        tempfile.NamedTemporaryFile("r") as peak,
    ):
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "bench.peak", peak.name, *command],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=err,
        )
        seconds = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        peak_kb = int(peak.read() or 0)
        return Measured(seconds, peak_kb / 1024, proc.returncode, out.read(), err.read())


def median_of(runs: int, command: list[str], env: dict[str, str] | None = None) -> Measured:
    """The run with the median time of ``runs`` (for read-only commands)."""
    measured = sorted((measure(command, env) for _ in range(runs)), key=lambda m: m.seconds)
    return measured[len(measured) // 2]


class Server:
    """Where the bench databases live: the embedded server or DATABASE_URL's server."""

    def __init__(self) -> None:
        self.embedded = None
        if os.environ.get("DATABASE_URL"):
            self.admin = parse_url(os.environ["DATABASE_URL"])
        else:
            self.embedded = EmbeddedPostgres()
            self.admin = self.embedded.url()
        self.psql = str(client_bin_dir() / "psql")

    def url(self, database: str) -> URL:
        return self.admin.set(database=database)

    def libpq(self, database: str) -> str:
        return self.url(database).set(drivername="postgresql").render_as_string(False)

    def sql(self, statement: str, database: str | None = None) -> None:
        engine = create_engine(
            self.url(database) if database else self.admin, isolation_level="AUTOCOMMIT"
        )
        with engine.connect() as conn:
            conn.exec_driver_sql(statement, execution_options={"no_parameters": True})
        engine.dispose()

    def copy(self, template: str, name: str) -> str:
        """A copy of ``template`` by files, then a checkpoint: the copy leaves no WAL and
        no dirty pages behind, so the step timed next does not pay for it.

        (The default strategy since PostgreSQL 15, WAL_LOG, writes the whole copy to WAL:
        a few GB at the biggest size, whose checkpoints then fall in the step timed next.)
        """
        self.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        strategy = " STRATEGY FILE_COPY" if self.version_num >= 150000 else ""
        self.sql(f"CREATE DATABASE {name} TEMPLATE {template}{strategy}")
        self.sql("CHECKPOINT")
        return name

    @functools.cached_property
    def version_num(self) -> int:
        """``server_version_num``, asked once."""
        engine = create_engine(self.admin)
        with engine.connect() as conn:
            version = conn.exec_driver_sql("SHOW server_version_num").scalar_one()
        engine.dispose()
        return int(version)

    def drop(self, name: str) -> None:
        self.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def close(self) -> None:
        if self.embedded:
            self.embedded.stop()


def upgrade_database(server: Server, db: str, revision: str) -> None:
    """``alembic upgrade revision`` on ``db``, in this process (untimed)."""
    from alembic import command
    from alembic.config import Config

    engine = create_engine(server.url(db))
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["connection"] = engine
    config.attributes["configure_logger"] = False
    try:
        command.upgrade(config, revision)
    finally:
        engine.dispose()


def build_template(
    server: Server, name: str, students: int, revision: str = "0001", shape: Shape | None = None
) -> tuple[dict[str, int], float]:
    """A database ``name`` with generated legacy data, brought to ``revision``; its row
    counts and the seconds the generation took."""
    server.drop(name)
    server.sql(f"CREATE DATABASE {name}")
    upgrade_database(server, name, "0001")
    engine = create_engine(server.url(name))
    started = time.monotonic()
    with engine.begin() as conn:
        counts = generate(conn, students, shape)
    seconds = time.monotonic() - started
    engine.dispose()
    server.sql("VACUUM ANALYZE", name)
    if revision != "0001":
        upgrade_database(server, name, revision)
    return counts, seconds


def env_for(server: Server, database: str) -> dict[str, str]:
    env = dict(os.environ)
    env["DATABASE_URL"] = server.url(database).render_as_string(hide_password=False)
    return env


def enrollments_cmd(*args: str) -> list[str]:
    return [str(BIN / "enrollments"), *args]


def psql_cmd(server: Server, database: str, sql: str) -> list[str]:
    return [
        server.psql,
        "-X",
        "-q",
        "-At",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        server.libpq(database),
        "-c",
        sql,
    ]


def checked(m: Measured, what: str, ok=(0,)) -> Measured:
    if m.returncode not in ok:
        raise SystemExit(f"bench: {what} exited {m.returncode}: {m.stderr.strip()[-500:]}")
    return m
