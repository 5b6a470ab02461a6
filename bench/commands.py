"""Our commands beside the floors, at one size: every writing step on a fresh copy of the
same generated database, the read-only ones as the median of several runs on one copy.

For each step: wall seconds (the whole process, Python's start included), peak RSS of the
process, and for the writing steps the WAL it wrote (``pg_current_wal_lsn()`` before and
after; the bench is alone on the server). The default ``alembic upgrade head`` runs twice:
alone, to compare with the floors, and with the application writer beside it, for the
writer's latencies.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

from sqlalchemy import create_engine, text

from bench import floors
from bench.generate import Shape
from bench.server import (
    BIN,
    Measured,
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


@dataclass
class Step:
    seconds: float
    peak_mb: float
    wal_mb: float | None = None
    inner_seconds: float | None = None  # the command's own figure (the write phase)


@dataclass
class SizeResult:
    students: int
    counts: dict[str, int]
    generate_seconds: float
    eligible_pairs: int = 0
    steps: dict[str, Step] = field(default_factory=dict)
    writer: dict[str, dict[str, float]] = field(default_factory=dict)
    explain: str | None = None

    @property
    def memberships(self) -> int:
        return self.counts["group_members"]

    def as_json(self) -> dict:
        return asdict(self)


def _wal_position(server: Server) -> int:
    engine = create_engine(server.admin)
    with engine.connect() as conn:
        lsn = conn.execute(text("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")).scalar_one()
    engine.dispose()
    return int(lsn)


def _upgrade(server: Server, db: str, revision: str) -> None:
    """``alembic upgrade revision`` on ``db`` (untimed), then a checkpoint."""
    upgrade_database(server, db, revision)
    server.sql("CHECKPOINT")


def _writing(
    server: Server, template: str, name: str, command: list[str], ok=(0,), at: str | None = None
) -> Step:
    """``command`` on a fresh copy (brought to revision ``at`` first, untimed): its time,
    memory and WAL."""
    db = server.copy(template, f"bench_{name}")
    if at is not None:
        _upgrade(server, db, at)
    if command and command[0] == "PSQL":
        command = psql_cmd(server, db, command[1])
    before = _wal_position(server)
    m = checked(measure(command, env_for(server, db)), name, ok)
    wal = (_wal_position(server) - before) / 2**20
    server.drop(db)
    return Step(m.seconds, m.peak_mb, wal, _inner_seconds(m))


def _inner_seconds(m: Measured) -> float | None:
    try:
        return float(json.loads(m.stdout)["seconds"])
    except (ValueError, KeyError, TypeError):
        return None


def _step(m: Measured) -> Step:
    return Step(m.seconds, m.peak_mb)


def explain_batch(server: Server, template: str) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of one backfill batch of the revision, 10,000 candidates
    from the middle of its pass, on a copy at 0003 (rolled back)."""
    from enrollments_phase1.migrations.shared.v4.backfill import (
        batch_sql,
        candidates_sql,
        next_pass_sql,
    )
    from enrollments_phase1.names import Tables

    db = server.copy(template, "bench_explain")
    _upgrade(server, db, "0003")
    engine = create_engine(server.url(db))
    t = Tables()
    with engine.connect() as conn:
        run = conn.execute(
            text(
                "INSERT INTO enrollment_backfill_runs (source, sync_trigger, pass)"
                " VALUES ('bench', true, 0) RETURNING id"
            )
        ).scalar()
        for statement in candidates_sql(t):
            conn.exec_driver_sql(statement)
        found = conn.exec_driver_sql(next_pass_sql(t, str(run))).one()
        conn.commit()
        plan = conn.exec_driver_sql(
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) "
            + batch_sql(t, str(int(found.candidates) // 2), "10000", str(run)),
            execution_options={"no_parameters": True},
        ).all()
        conn.rollback()
    engine.dispose()
    server.drop(db)
    return "\n".join(r[0] for r in plan)


def run_size(
    server: Server,
    students: int,
    runs: int,
    writer_rate: float,
    explain: bool,
    shape: Shape | None = None,
) -> SizeResult:
    template = f"bench_t{students}"
    counts, generated = build_template(server, template, students, shape=shape)
    result = SizeResult(students, counts, generated)
    print(f"size {students:,} students: {counts} in {generated:.0f}s", flush=True)

    # Read-only: the audit and its floor, on one copy, warm cache, median of `runs`.
    db = server.copy(template, "bench_read")
    env = env_for(server, db)
    a3 = psql_cmd(server, db, floors.A3)
    measure(a3)
    floor = checked(median_of(runs, a3), "floor A3")
    result.steps["floor_audit"] = _step(floor)
    audit = checked(median_of(runs, enrollments_cmd("audit", "--json"), env), "audit", ok=(2,))
    floors.check(floors.a3_counts(floor.stdout), json.loads(audit.stdout))
    result.eligible_pairs = json.loads(audit.stdout)["eligible_pairs"]
    result.steps["audit"] = _step(audit)
    by_course = median_of(runs, enrollments_cmd("audit", "--json", "--by", "course"), env)
    result.steps["audit_by_course"] = _step(checked(by_course, "audit --by course", ok=(2,)))
    result.steps["dry_run"] = _step(
        checked(median_of(runs, enrollments_cmd("backfill"), env), "dry run")
    )
    server.drop(db)
    print(f"  audit {audit.seconds:.2f}s, floor {floor.seconds:.2f}s", flush=True)

    # Writing steps, each on a fresh copy.
    result.steps["floor_backfill"] = _writing(server, template, "b2", ["PSQL", floors.B2])
    result.steps["floor_index"] = _writing(server, template, "index", ["PSQL", floors.INDEX])
    # The command's backfills record what they change: they run at 0003 (the record's
    # table) or later, as the runbook deploys them.
    result.steps["one_statement"] = _writing(
        server,
        template,
        "one",
        enrollments_cmd("backfill", "--commit", "--one-statement", "--json"),
        at="0003",
    )
    result.steps["batched"] = _writing(
        server, template, "batched", enrollments_cmd("backfill", "--commit", "--json"), at="0003"
    )
    result.steps["upgrade"] = _writing(
        server, template, "upgrade", [str(BIN / "alembic"), "upgrade", "head"]
    )
    for name in ("floor_backfill", "one_statement", "batched", "upgrade"):
        print(f"  {name} {result.steps[name].seconds:.2f}s", flush=True)

    # The default upgrade with the application writing beside it.
    db = server.copy(template, "bench_upgrade_writer")
    writer = Writer(server.libpq(db), rate=writer_rate)
    writer.start()
    writer.ready.wait(120)
    time.sleep(2)  # the writer's own latency before the deploy, in the same run
    m = checked(
        measure([str(BIN / "alembic"), "upgrade", "head"], env_for(server, db)), "upgrade+writer"
    )
    result.writer["upgrade"] = writer.stop()
    result.steps["upgrade_with_writer"] = _step(m)
    server.drop(db)

    if explain:
        result.explain = explain_batch(server, template)
    server.drop(template)
    return result
