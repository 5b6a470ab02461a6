"""The backfill beside its floors on every shape (issue 27): time, WAL and full-page images
of each writing step, on a fresh copy after a CHECKPOINT.

    python -m bench.backfill [--shapes default,dense,fresh] [--memberships 3000000] [--runs 3]

Per shape, at one size (about ``--memberships`` memberships):

- the floors, through psql: B2 (the backfill in one unsafe statement), the index build,
  A3 (the audit's counts; the median of ``--runs``);
- ``enrollments backfill --commit`` at 0003 (batched, recorded), beside B2;
- ``alembic upgrade head`` from 0001, beside index + B2 + A3, while the legacy application
  writes ``group_members`` (new students joining groups, ``--rate`` a second: p99 and max
  of its commits);
- the deploy after a backfill run ahead of time (the runbook's way): at 0003,
  ``enrollments backfill --commit`` untimed, then ``alembic upgrade head`` timed, beside
  index + A3; then ``enrollments backfill --commit`` once more on the database now at 100%;
- ``enrollments audit`` (samples included), beside A3; the fixed cost is the audit of a
  database of one student.

A3 is measured twice: on the data as generated (beside the audit, which reads the same),
and after B2 (the floor of the upgrade and of the deploy after a backfill ahead of time,
whose gate counts a backfilled database: on a shape with nothing enrolled, A3 before the
backfill joins an empty table).

WAL is ``pg_current_wal_lsn()`` before and after, full-page images ``pg_stat_wal.wal_fpi``
(the bench is alone on the server). The results go to docs/benchmarks/separate/ and the
page.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import time

import psycopg2
from sqlalchemy import create_engine, text

from bench import floors, report
from bench.generate import SHAPES, Shape
from bench.run import machine
from bench.server import (
    BIN,
    Server,
    build_template,
    checked,
    enrollments_cmd,
    env_for,
    measure,
    median_of,
    psql_cmd,
    upgrade_database,
)
from bench.writer import Writer

# Students who join a group during the deploy (the legacy application's writes): each
# one a new user of a group's school, in that group.
WRITER_USERS = """INSERT INTO users (school_id, email, name)
SELECT g.school_id, 'deploy-writer-' || i || '-' || g.id || '@bench.example', 'Writer ' || i
FROM generate_series(1, {n}) AS i
JOIN (SELECT row_number() OVER (ORDER BY id) - 1 AS k, id, school_id FROM groups) AS g
  ON g.k = i % (SELECT count(*) FROM groups)"""
WRITER_ROWS = """SELECT u.id, u.school_id, split_part(split_part(u.email, '@', 1), '-', 4)::int
FROM users AS u WHERE u.email LIKE 'deploy-writer-%' ORDER BY u.id"""
INSERT_MEMBERSHIP = """INSERT INTO group_members (school_id, group_id, user_id)
VALUES (%(school)s, %(group)s, %(user)s)"""

PASS = re.compile(
    r"pass (\d+): ([\d,]+) pairs to create or reactivate \(candidates in ([\d.]+) s\)"
)
COUNTERS = """SELECT pg_current_wal_lsn() - '0/0'::pg_lsn AS wal,
    (SELECT wal_fpi FROM pg_stat_wal) AS fpi"""
OTHERS = """SELECT count(*) FROM pg_stat_activity
WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
  AND application_name <> 'bench writer'"""


def counters(server: Server) -> tuple[int, int]:
    """(WAL position, full-page images so far), once every other session has gone (a
    backend adds its WAL statistics as it exits)."""
    conn = psycopg2.connect(server.libpq("postgres"))
    conn.autocommit = True
    cur = conn.cursor()
    deadline = time.monotonic() + 30
    while True:
        cur.execute(OTHERS)
        if cur.fetchone()[0] == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    cur.execute("SELECT pg_stat_clear_snapshot()")
    cur.execute(COUNTERS)
    wal, fpi = cur.fetchone()
    conn.close()
    return int(wal), int(fpi)


def timed(server: Server, db: str, command: list[str], what: str, ok=(0,)) -> dict:
    """``command`` on ``db`` after a CHECKPOINT: seconds, peak MB, WAL MB, full-page
    images, and the command's JSON when it printed one."""
    server.sql("CHECKPOINT")
    wal, fpi = counters(server)
    m = checked(measure(command, env_for(server, db)), what, ok)
    wal_after, fpi_after = counters(server)
    step = {
        "seconds": m.seconds,
        "peak_mb": m.peak_mb,
        "wal_mb": (wal_after - wal) / 2**20,
        "fpi": fpi_after - fpi,
    }
    with contextlib.suppress(ValueError):
        step["json"] = json.loads(m.stdout)
    step["passes"] = [
        {"pass": int(p), "pairs": int(n.replace(",", "")), "candidates_seconds": float(s)}
        for p, n, s in PASS.findall(m.stdout + m.stderr)
    ]
    return step


def at(server: Server, template: str, name: str, revision: str) -> str:
    db = server.copy(template, name)
    if revision != "0001":
        upgrade_database(server, db, revision)
    return db


def with_writer(server: Server, db: str, rows: list, rate: float, command: list[str]) -> dict:
    """``command`` timed while the legacy application writes memberships beside it."""
    writer = Writer(server.libpq(db), rate, rows=rows, statement=INSERT_MEMBERSHIP)
    writer.start()
    writer.ready.wait(120)
    time.sleep(2)
    try:
        step = timed(server, db, command, "upgrade with the writer")
    finally:
        step["writer"] = writer.stop()
    return step


def run_shape(server: Server, shape: Shape, memberships: int, runs: int, rate: float) -> dict:
    template = f"bench_b_{shape.name}"
    students = shape.students_for(memberships)
    counts, generated = build_template(server, template, students, shape=shape)
    server.sql(WRITER_USERS.format(n=20_000), template)
    engine = create_engine(server.url(template))
    with engine.connect() as conn:
        rows = [{"user": u, "school": s, "group": g} for u, s, g in conn.execute(text(WRITER_ROWS))]
    engine.dispose()
    server.sql("VACUUM ANALYZE", template)
    print(f"{shape.name}: {counts} in {generated:.0f}s", flush=True)
    steps: dict[str, dict] = {}

    db = at(server, template, "bench_b_read", "0001")
    a3 = psql_cmd(server, db, floors.A3)
    measure(a3)
    floor = checked(median_of(runs, a3), "A3")
    steps["floor_audit"] = {"seconds": floor.seconds}
    audit = checked(
        median_of(runs, enrollments_cmd("audit", "--json"), env_for(server, db)), "audit", (2,)
    )
    floors.check(floors.a3_counts(floor.stdout), json.loads(audit.stdout))
    steps["audit"] = {"seconds": audit.seconds, "peak_mb": audit.peak_mb}
    server.drop(db)

    for name, sql in (("floor_backfill", floors.B2), ("floor_index", floors.INDEX)):
        db = at(server, template, "bench_b_floor", "0001")
        steps[name] = timed(server, db, psql_cmd(server, db, sql), name)
        if name == "floor_backfill":  # A3 where the gate counts: after the backfill
            a3_after = psql_cmd(server, db, floors.A3)
            measure(a3_after)
            steps["floor_audit_after"] = {
                "seconds": checked(median_of(runs, a3_after), "A3").seconds
            }
        server.drop(db)

    db = at(server, template, "bench_b_batched", "0003")
    steps["batched"] = timed(
        server, db, enrollments_cmd("backfill", "--commit", "--json"), "backfill --commit"
    )
    server.drop(db)

    db = at(server, template, "bench_b_upgrade", "0001")
    steps["upgrade"] = with_writer(
        server, db, rows, rate, [str(BIN / "alembic"), "upgrade", "head"]
    )
    server.drop(db)

    db = at(server, template, "bench_b_ahead", "0003")
    checked(measure(enrollments_cmd("backfill", "--commit"), env_for(server, db)), "ahead of time")
    steps["deploy_after_backfill"] = timed(
        server, db, [str(BIN / "alembic"), "upgrade", "head"], "deploy after the backfill"
    )
    steps["backfill_at_100"] = timed(
        server, db, enrollments_cmd("backfill", "--commit", "--json"), "backfill at 100%"
    )
    server.drop(db)
    server.drop(template)
    result = {
        "shape": shape.as_json(),
        "describe": shape.describe(),
        "students": students,
        "counts": counts,
        "eligible_pairs": json.loads(audit.stdout)["eligible_pairs"],
        "steps": steps,
    }
    print(f"  {json.dumps(steps)}", flush=True)
    return result


def fixed_cost(server: Server, runs: int) -> float:
    db = "bench_b_empty"
    build_template(server, db, 1, shape=Shape(name="empty"))
    audit = median_of(runs, enrollments_cmd("audit", "--json"), env_for(server, db))
    checked(audit, "audit (empty)", ok=(0, 1, 2))
    server.drop(db)
    return audit.seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default=",".join(SHAPES), help="shapes, comma-separated")
    parser.add_argument(
        "--memberships", type=int, default=3_000_000, help="about this many memberships a shape"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs of each read-only step")
    parser.add_argument("--rate", type=float, default=50.0, help="the writer's commits a second")
    args = parser.parse_args()
    started = time.monotonic()
    server = Server()
    try:
        label, machine_line = machine(server)
        figures = {
            "fixed_audit_seconds": fixed_cost(server, args.runs),
            "rate": args.rate,
            "shapes": [
                run_shape(server, Shape.parse(s), args.memberships, args.runs, args.rate)
                for s in args.shapes.split(",")
            ],
        }
    finally:
        server.close()
    path = report.save_separate("backfill", label, machine_line, figures)
    from bench.notes import NOTES

    print(f"wrote {path} and {report.write(NOTES)} ({(time.monotonic() - started) / 60:.0f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
