"""``enrollments demo``: the Phase 1 story on an embedded PostgreSQL, in under a minute.

Every step runs the real command a user would run (``alembic``, ``enrollments``) against
a throwaway embedded server, and checks that it behaved as expected. The demo exits 0
only when every step did.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import URL, create_engine, make_url, text

from enrollments_phase1 import sample_data
from enrollments_phase1.alembic_ini import ALEMBIC_INI
from enrollments_phase1.embedded import EmbeddedPostgres

BIN = Path(sys.executable).parent
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [A-Z]+ ")  # alembic.ini's format


class DemoStepError(Exception):
    """A step did not behave as the story says it should."""


def heading(number: int, title: str) -> None:
    print(f"\n=== {number}. {title} ===", flush=True)


def run(
    command: list[str],
    env: dict[str, str],
    expect: int,
    render: Callable[[str], str] | None = None,
) -> str:
    """Run a command, print what it printed, in the order it printed it (or ``render`` of
    it), then its exit code. It runs where the user is; ``ALEMBIC_CONFIG`` in ``env`` names
    the package's own Alembic configuration, so no checkout is needed."""
    print(f"$ {' '.join(command)}", flush=True)
    proc = subprocess.run(
        [str(BIN / command[0]), *command[1:]],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    shown = render(proc.stdout) if render else proc.stdout.rstrip()
    if shown:
        print(shown, flush=True)
    if not shown.endswith(f"(exit {proc.returncode})"):  # the audit says it itself
        print(f"(exit {proc.returncode})", flush=True)
    if proc.returncode != expect:
        raise DemoStepError(f"`{' '.join(command)}` exited {proc.returncode}, expected {expect}")
    return "\n".join(line for line in proc.stdout.splitlines() if not LOG_LINE.match(line))


def sql_excerpt(script: str) -> str:
    """The heart of the offline script, as a DBA would read it, in whole lines: the
    backfill's candidates, how a batch re-checks them, and the gate's verdict below 100%."""
    lines = script.splitlines()
    fill = next(i for i, line in enumerate(lines) if "INSERT INTO" in line and "candidates" in line)
    filled = next(i for i in range(fill, len(lines)) if lines[i].strip() == ") AS p;")
    start = next(i for i, line in enumerate(lines) if "WITH pairs AS MATERIALIZED" in line)
    end = next(i for i in range(start, len(lines)) if "current AS MATERIALIZED" in lines[i]) - 1
    verdict = next(
        i
        for i, line in enumerate(lines)
        if "RAISE EXCEPTION 'coverage gate" in line and "%" in line
    )
    until = next(i for i in range(verdict, len(lines)) if lines[i].rstrip().endswith(";"))
    return "\n".join(
        [
            "-- 0004: the sync trigger first, then the backfill's candidates, once:",
            textwrap.dedent("\n".join(lines[fill : filled + 1])),
            "",
            "-- then one batch per transaction, in (student, course) order; each re-checks its",
            "-- pairs on the current rows, then reactivates, creates and records them:",
            textwrap.dedent("\n".join(lines[start : end + 1])) + "\n...",
            "",
            "-- 0005: the coverage gate (counts as in enrollments audit), below 100%:",
            textwrap.dedent("\n".join(lines[verdict : until + 1])),
        ]
    )


def current_head() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(Config(str(ALEMBIC_INI))).get_current_head()


OWNER = "school_owner"


def owner_database(pg: EmbeddedPostgres) -> str:
    """A database ``school`` owned by the role ``school_owner`` (no superuser), as the
    deploy runs on a managed PostgreSQL; its URL."""
    admin = create_engine(pg.url_string(), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if not conn.execute(text(f"SELECT 1 FROM pg_roles WHERE rolname = '{OWNER}'")).first():
                conn.execute(text(f"CREATE ROLE {OWNER} LOGIN"))
            if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = 'school'")).first():
                conn.execute(text(f"CREATE DATABASE school OWNER {OWNER}"))
    finally:
        admin.dispose()
    server = pg.url("school")
    return URL.create(
        server.drivername, username=OWNER, database="school", query=server.query
    ).render_as_string(hide_password=False)


def run_demo(data_dir: str | None = None) -> int:
    started = time.monotonic()
    with EmbeddedPostgres(Path(data_dir) if data_dir else None, keep=bool(data_dir)) as pg:
        url = owner_database(pg)
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        env["DATABASE_URL"] = url
        env["ALEMBIC_CONFIG"] = str(ALEMBIC_INI)
        try:
            heading(1, "An embedded PostgreSQL with the legacy schema (revision 0001)")
            print(
                "As on a managed PostgreSQL: the database and its tables belong to the role\n"
                f"{OWNER}, which is no superuser; it runs every command below."
            )
            print(f"server: {make_url(url).render_as_string(hide_password=True)}")
            run(["alembic", "upgrade", "0001"], env, expect=0)

            heading(2, "Legacy data with gaps")
            engine = create_engine(url)
            with engine.begin() as conn:
                sample_data.load(conn)
            engine.dispose()
            print(
                "Loaded 8 users (students, a teacher, an admin, a student of another school, an\n"
                "archived student), 4 courses, 5 groups, 13 memberships (one with active NULL),\n"
                "6 enrollments: some pairs missing, some inactive, one student in two groups\n"
                "of the same course."
            )

            heading(3, "Audit before: coverage below 100% (exit 2)")
            run(["enrollments", "audit"], env, expect=2)

            heading(4, "What the DBA reads: alembic upgrade 0001:head --sql (excerpt)")
            run(["alembic", "upgrade", "0001:head", "--sql"], env, expect=0, render=sql_excerpt)

            heading(5, "The deploy, up to the sync trigger and the backfill: alembic upgrade 0004")
            run(["alembic", "upgrade", "0004"], env, expect=0)

            heading(6, "The gate stops the upgrade below 100%")
            engine = create_engine(url)
            with engine.begin() as conn:  # a gap the trigger cannot close
                conn.execute(
                    text("DELETE FROM course_enrollments WHERE course_id = 2 AND student_id = 1")
                )
            engine.dispose()
            print(
                "The application deleted Ada's Physics enrollment while her membership stays\n"
                "active: a gap no trigger closes. The gate finds it, and nothing is recorded:"
            )
            run(["alembic", "upgrade", "head"], env, expect=255)  # Alembic's code for FAILED
            if run(["alembic", "current"], env, expect=0).strip() != "0004":
                raise DemoStepError("the failed gate moved alembic_version past 0004")

            heading(7, "Fixed as the gate says: backfill, then the upgrade again")
            run(["enrollments", "backfill", "--commit"], env, expect=0)
            run(["alembic", "upgrade", "head"], env, expect=0)
            head = f"{current_head()} (head)"
            current = run(["alembic", "current"], env, expect=0).strip()
            if current != head:
                raise DemoStepError(f"alembic current says {current!r}, expected {head}")

            heading(8, "Audit after: 100% covered; the anomalies stay listed for review (exit 1)")
            run(["enrollments", "audit"], env, expect=1)

            heading(9, "The legacy application writes only group_members; the trigger enrolls")
            engine = create_engine(url)
            with engine.begin() as conn:
                conn.execute(
                    text(
                        "INSERT INTO group_members (school_id, group_id, user_id) VALUES (1, 3, 7)"
                    )
                )
                conn.execute(text("UPDATE users SET role = 'student' WHERE id = 4"))
            engine.dispose()
            print(
                "Nina joined Physics A (a new membership) and Grace, a teacher in Math A,\n"
                "became a student: the sync trigger enrolled both in the same transactions."
            )
            run(["enrollments", "audit", "--limit", "0"], env, expect=1)
        except DemoStepError as exc:
            print(f"\nDEMO FAILED: {exc}", file=sys.stderr)
            return 1
    print(f"\nDemo finished in {time.monotonic() - started:.1f}s: every step behaved as expected.")
    return 0
