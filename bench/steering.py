"""What the orders and the health checks cost the batched backfill, per batch.

On a generated database at 0003, the batched backfill runs online (the command's
``run_backfill``) with every check on (the orders of ``enrollment_backfill_control``,
the standbys' lag, VACUUM, the xmin horizon, the archive); the reading of the figures at
the end of each batch's transaction and the decision before the next are timed, and so is
the whole run. The cost is the checks' share of the run.

    python -m bench.steering [--students 600000]

Goal (issue 29): under 2% of the batched backfill's time.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from dataclasses import asdict, dataclass

from sqlalchemy import create_engine

from bench.server import Server, build_template
from enrollments_phase1 import batching, steering
from enrollments_phase1.batching import BatchSettings
from enrollments_phase1.names import Tables

GOAL = 0.02


@dataclass
class ChecksCost:
    students: int
    batches: int
    seconds: float  # the whole backfill
    checks_seconds: float  # the checks before its batches, summed
    per_batch_ms: float

    @property
    def share(self) -> float:
        return self.checks_seconds / self.seconds

    def as_json(self) -> dict:
        return {**asdict(self), "share": self.share}


class Timed:
    """Wraps a function (or a method: it binds as one) and sums the seconds spent in it."""

    def __init__(self, function) -> None:
        self.function = function
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return self.function(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started
            self.calls += 1

    def __get__(self, instance, owner=None):
        return self if instance is None else functools.partial(self, instance)


def run(server: Server, students: int) -> ChecksCost:
    from enrollments_phase1.migrations.shared.v4.backfill import run_backfill

    build_template(server, "bench_steering", students, revision="0003")
    engine = create_engine(server.url("bench_steering"))
    timed = {
        "look": Timed(steering.Steering.look),
        "before_batch": Timed(steering.Steering.before_batch),
        "wait_while_unhealthy": Timed(steering.Steering.wait_while_unhealthy),
        "wait_for_replicas": Timed(batching.wait_for_replicas),
    }
    saved = (
        steering.Steering.look,
        steering.Steering.before_batch,
        steering.Steering.wait_while_unhealthy,
        batching.wait_for_replicas,
    )
    steering.Steering.look = timed["look"]  # type: ignore[method-assign]
    steering.Steering.before_batch = timed["before_batch"]  # type: ignore[method-assign]
    steering.Steering.wait_while_unhealthy = timed["wait_while_unhealthy"]  # type: ignore[method-assign]
    batching.wait_for_replicas = timed["wait_for_replicas"]
    try:
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            started = time.monotonic()
            outcome = run_backfill(
                conn, Tables(), "bench steering", BatchSettings(max_replica_lag=10.0), "bench"
            )
            seconds = time.monotonic() - started
    finally:
        (
            steering.Steering.look,
            steering.Steering.before_batch,
            steering.Steering.wait_while_unhealthy,
            batching.wait_for_replicas,
        ) = saved
        engine.dispose()
        server.drop("bench_steering")
    checks = sum(t.seconds for t in timed.values())
    calls = max(timed["before_batch"].calls, 1)
    return ChecksCost(students, outcome.batches, seconds, checks, 1000 * checks / calls)


def main() -> int:
    from bench import report
    from bench.notes import NOTES
    from bench.run import machine

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=600_000)
    args = parser.parse_args()
    server = Server()
    try:
        label, machine_line = machine(server)
        cost = run(server, args.students)
    finally:
        server.close()
    print(f"wrote {report.save_separate('steering', label, machine_line, cost.as_json())}")
    print(f"wrote {report.write(NOTES)}")
    print(
        f"checks before {cost.batches:,} batches: {cost.checks_seconds:.2f} s of "
        f"{cost.seconds:.1f} s ({100 * cost.share:.2f}%), {cost.per_batch_ms:.2f} ms a batch"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
