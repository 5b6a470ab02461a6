"""The counting statement on several data shapes: the audit, the dry run and the gate
beside the floors A3 and A4, at several sizes of each shape.

    python -m bench.shapes [--shapes default,dense,fresh] [--sizes 1500000,4500000,7500000]
                           [--runs 3] [--keep-data] [--results DIR]

A shape is a name from ``bench.generate.SHAPES`` or ``name:knob=value,...`` (for instance
``mine:courses_per_student=12,enrolled_active_pct=40``: the proportions of your own data);
sizes are memberships. With ``--keep-data`` the generated databases (``bench_s_*``) are
kept and used again by a later run with the same shape and size. Results go to
``docs/benchmarks/shapes/`` and docs/benchmarks.md, with the EXPLAIN (ANALYZE, BUFFERS) of
the counting statement at the largest size of each shape.

Timed: A3 and A4 through psql (the floor is the faster); the audit and the dry run as
whole commands (Python's start included); the gate as its DO block alone (the block of
``-x coverage_gate=warn``: the same counts, then the first uncovered pairs below 100%).
The fixed cost is the audit of a database of one student.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import psycopg2
from sqlalchemy import create_engine, text

from bench import floors, report
from bench.generate import SHAPES, Shape
from bench.run import machine
from bench.server import (
    Server,
    build_template,
    checked,
    enrollments_cmd,
    env_for,
    measure,
    median_of,
    psql_cmd,
)

DEFAULT_SHAPES = ",".join(SHAPES)
DEFAULT_SIZES = "1500000,4500000,7500000"
RESULTS = report.RESULTS / "shapes"


def template_for(server: Server, shape: Shape, memberships: int, keep: bool) -> tuple[str, dict]:
    """A database at 0001 with ``shape``'s data at about ``memberships``; one kept by an
    earlier ``--keep-data`` run is used again when its comment says the same shape and
    size."""
    name = f"bench_s_{shape.name}_{memberships}"[:63]
    wanted = json.dumps({"shape": shape.as_json(), "memberships": memberships}, sort_keys=True)
    engine = create_engine(server.admin)
    with engine.connect() as conn:
        found = conn.execute(
            text(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database"
                " WHERE datname = :name"
            ),
            {"name": name},
        ).scalar()
    engine.dispose()
    if keep and found == wanted:
        db = create_engine(server.url(name))
        with db.connect() as conn:
            counts = {
                t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
                for t in ("users", "group_members", "course_enrollments")
            }
        db.dispose()
        return name, {"counts": counts, "generate_seconds": None}
    counts, seconds = build_template(server, name, shape.students_for(memberships), shape=shape)
    server.sql(f"COMMENT ON DATABASE {name} IS '{wanted}'")
    return name, {"counts": counts, "generate_seconds": seconds}


def time_gate(server: Server, db: str, runs: int) -> float:
    """The gate's DO block alone (warn mode), median of ``runs``, in a REPEATABLE READ
    READ ONLY transaction as the revisions run it."""
    from enrollments_phase1.migrations.shared.v4.gate import gate_sql
    from enrollments_phase1.names import Tables

    block = gate_sql(Tables("public"), "bench", "warn")
    conn = psycopg2.connect(server.libpq(db))
    times = []
    try:
        for _ in range(runs):
            with conn.cursor() as cur:
                cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                started = time.monotonic()
                cur.execute(block)
                times.append(time.monotonic() - started)
                cur.execute("ROLLBACK")
    finally:
        conn.close()
    return sorted(times)[len(times) // 2]


def explain_counts(server: Server, db: str) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of the audit's counting statement, with the settings the
    audit pins for it."""
    from enrollments_phase1 import coverage

    engine = create_engine(server.url(db))
    with engine.connect() as conn:
        lo, hi = conn.execute(text(coverage.bounds_sql())).one()
        with coverage.pinned_plan(conn):
            plan = conn.exec_driver_sql(
                "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) "
                + coverage.counts_sql(lo=lo, width=coverage.bucket_width(lo, hi))
            ).all()
        conn.rollback()
    engine.dispose()
    return "\n".join(r[0] for r in plan)


def fixed_cost(server: Server, runs: int) -> dict[str, float]:
    """The audit and A3 on a database of one student: what the audit costs whatever the
    size."""
    shape = Shape(name="empty")
    name, _ = template_for(server, shape, 0, keep=False)
    audit = checked(
        median_of(runs, enrollments_cmd("audit", "--json"), env_for(server, name)),
        "audit (empty)",
        ok=(0, 1, 2),
    )
    a3 = checked(median_of(runs, psql_cmd(server, name, floors.A3)), "A3 (empty)")
    server.drop(name)
    return {"audit": audit.seconds, "floor_audit": a3.seconds}


def run_shape(
    server: Server, shape: Shape, sizes: list[int], runs: int, keep: bool
) -> dict[str, object]:
    results = []
    for memberships in sizes:
        db, made = template_for(server, shape, memberships, keep)
        env = env_for(server, db)
        a3 = psql_cmd(server, db, floors.A3)
        measure(a3)  # a warm cache for every step
        floor = checked(median_of(runs, a3), "floor A3")
        engine = create_engine(server.url(db))
        with engine.connect() as conn:
            middle = conn.execute(text(floors.middle_sql())).scalar_one()
        engine.dispose()
        a4 = checked(median_of(runs, psql_cmd(server, db, floors.a4(middle))), "floor A4")
        if floors.a3_counts(a4.stdout) != floors.a3_counts(floor.stdout):
            raise SystemExit("bench: floors A3 and A4 disagree")
        audit = median_of(runs, enrollments_cmd("audit", "--json"), env)
        checked(audit, "audit", ok=(0, 1, 2))
        floors.check(floors.a3_counts(floor.stdout), json.loads(audit.stdout))
        dry = median_of(runs, enrollments_cmd("backfill", "--json"), env)
        checked(dry, "dry run", ok=(0, 1, 2))
        size = {
            **made,
            "memberships": made["counts"]["group_members"],
            "eligible_pairs": json.loads(audit.stdout)["eligible_pairs"],
            "coverage_percent": json.loads(audit.stdout)["coverage_percent"],
            "steps": {
                "floor_audit": {"seconds": floor.seconds, "peak_mb": floor.peak_mb},
                "floor_audit_a4": {"seconds": a4.seconds, "peak_mb": a4.peak_mb},
                "audit": {"seconds": audit.seconds, "peak_mb": audit.peak_mb},
                "dry_run": {"seconds": dry.seconds, "peak_mb": dry.peak_mb},
                "gate": {"seconds": time_gate(server, db, runs)},
            },
        }
        if memberships == sizes[-1]:
            size["explain"] = explain_counts(server, db)
        print(
            f"{shape.name} {size['memberships']:,}: A3 {floor.seconds:.2f}s, A4 "
            f"{a4.seconds:.2f}s, audit {audit.seconds:.2f}s, dry run {dry.seconds:.2f}s, gate "
            f"{size['steps']['gate']['seconds']:.2f}s",
            flush=True,
        )
        results.append(size)
        if not keep:
            server.drop(db)
    return {"shape": shape.as_json(), "describe": shape.describe(), "sizes": results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default=DEFAULT_SHAPES, help="shapes, comma-separated")
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="memberships, comma-separated")
    parser.add_argument("--runs", type=int, default=3, help="runs of each step (the median)")
    parser.add_argument("--keep-data", action="store_true", help="keep and reuse the data")
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help="write the results and the page there (default: docs/benchmarks/shapes/ and "
        "docs/benchmarks.md)",
    )
    args = parser.parse_args()
    # A shape spec holds commas of its own (knob=value,...): split on the names.
    specs, shapes = args.shapes.split(","), []
    for spec in specs:
        if "=" in spec.split(":")[0] and shapes:
            shapes[-1] += "," + spec
        else:
            shapes.append(spec)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    started = time.monotonic()
    server = Server()
    try:
        label, machine_line = machine(server)
        fixed = fixed_cost(server, args.runs)
        results = [
            run_shape(server, Shape.parse(spec), sizes, args.runs, args.keep_data)
            for spec in shapes
        ]
    finally:
        server.close()
    seconds = time.monotonic() - started
    where = args.results or RESULTS
    where.mkdir(parents=True, exist_ok=True)
    slug = report.slug(label)
    result = {
        "server": label,
        "machine": f"{machine_line} Run on {datetime.date.today().isoformat()} in "
        f"{seconds / 60:.0f} minutes.",
        "fixed": fixed,
        "shapes": results,
    }
    (where / f"{slug}.json").write_text(json.dumps(result, indent=1) + "\n")
    from bench.notes import NOTES

    if args.results is None:
        page = report.write(NOTES)
    else:
        page = args.results / "benchmarks.md"
        page.write_text(report.render([], "", report.load_shapes(args.results)))
    print(f"wrote {page} ({seconds / 60:.0f} minutes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
