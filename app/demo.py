"""``enrollments demo``: the Phase 1 story on an embedded PostgreSQL, in under a minute.

Every step runs the real command a user would run (``alembic``, ``enrollments``) against
a throwaway embedded server, and checks that it behaved as expected. The demo exits 0
only when every step did.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import create_engine

from app import sample_data
from app.embedded import EmbeddedPostgres
from app.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


class DemoStepError(Exception):
    """A step did not behave as the story says it should."""


def heading(number: int, title: str) -> None:
    print(f"\n=== {number}. {title} ===", flush=True)


def run(command: list[str], env: dict[str, str], expect: int, show: bool = True) -> str:
    print(f"$ {' '.join(command)}", flush=True)
    proc = subprocess.run(
        [str(BIN / command[0]), *command[1:]], cwd=ROOT, env=env, capture_output=True, text=True
    )
    output = proc.stdout + proc.stderr
    if show:
        print(output.rstrip(), flush=True)
    print(f"(exit {proc.returncode})", flush=True)
    if proc.returncode != expect:
        raise DemoStepError(f"`{' '.join(command)}` exited {proc.returncode}, expected {expect}")
    return proc.stdout


def sql_excerpt(script: str) -> str:
    """The backfill and gate sections of the offline script, as a DBA would read them."""
    lines = script.splitlines()
    start = next(i for i, line in enumerate(lines) if "Running upgrade 0003 -> 0004" in line)
    gate = next(i for i, line in enumerate(lines) if line.startswith("-- Coverage gate"))
    backfill = lines[start:gate]
    gate_head = lines[gate : gate + 8]
    raise_at = next(i for i, line in enumerate(lines) if "RAISE EXCEPTION" in line)
    return "\n".join(
        [
            *backfill,
            *gate_head,
            "    ... (the coverage counts, as in enrollments audit) ...",
            *lines[raise_at - 1 : raise_at + 5],
            "    ...",
        ]
    )


def run_demo(data_dir: str | None = None) -> int:
    if not (ROOT / "alembic.ini").exists():
        raise ConfigError("the demo runs from the project checkout (alembic.ini not found)")
    started = time.monotonic()
    with EmbeddedPostgres(Path(data_dir) if data_dir else None, keep=bool(data_dir)) as pg:
        url = pg.url_string()
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        env["DATABASE_URL"] = url
        try:
            heading(1, "An embedded PostgreSQL with the legacy schema (revision 0001)")
            print(f"server: {pg.url().render_as_string(hide_password=True)}")
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
            script = run(["alembic", "upgrade", "0001:head", "--sql"], env, expect=0, show=False)
            print(sql_excerpt(script))

            heading(5, "The deploy: alembic upgrade head (backfill, then the coverage gate)")
            run(["alembic", "upgrade", "head"], env, expect=0)
            current = run(["alembic", "current"], env, expect=0, show=False).strip()
            print(f"alembic current: {current}")
            if current != "0005 (head)":
                raise DemoStepError(f"alembic current says {current!r}, expected 0005 (head)")

            heading(6, "Audit after: 100% covered; the anomalies stay listed for review (exit 1)")
            run(["enrollments", "audit"], env, expect=1)
        except DemoStepError as exc:
            print(f"\nDEMO FAILED: {exc}", file=sys.stderr)
            return 1
    print(f"\nDemo finished in {time.monotonic() - started:.1f}s: every step behaved as expected.")
    return 0
