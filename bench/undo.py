"""The undo below 0004 with tables that reference the enrollments, beside the same undo
without them, on copies of one generated database at head.

    python -m bench.undo [--students 600000]

About 600,000 students make about 1,000,000 recorded enrollments. The referencing tables
are what a school platform keeps beside its enrollments: grades (by enrollment id, ``ON
DELETE CASCADE``), attendance (by id, ``ON DELETE SET NULL``) and notes (by the pair, ``NO
ACTION``), each with an index on its foreign key, together pointing at a fifth of the
recorded enrollments. Goals (issue 19): every write transaction at most 1 s; the undo with
them at most 1.5x the undo without them.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from dataclasses import asdict, dataclass

from sqlalchemy import create_engine

from bench.server import Server, build_template
from enrollments_phase1.migration_env import MigrationSettings
from enrollments_phase1.migrations.shared.v4 import undo
from enrollments_phase1.names import Tables

REFERENCING = [
    """CREATE TABLE grades (id bigserial PRIMARY KEY,
        enrollment_id integer REFERENCES course_enrollments ON DELETE CASCADE, grade text)""",
    """INSERT INTO grades (enrollment_id, grade)
        SELECT enrollment_id, 'B' FROM enrollment_backfill_changes WHERE enrollment_id % 10 = 0""",
    "CREATE INDEX ON grades (enrollment_id)",
    """CREATE TABLE attendance (id bigserial PRIMARY KEY,
        enrollment_id integer REFERENCES course_enrollments ON DELETE SET NULL, day date)""",
    """INSERT INTO attendance (enrollment_id, day)
        SELECT enrollment_id, now() FROM enrollment_backfill_changes
        WHERE enrollment_id % 20 = 1""",
    "CREATE INDEX ON attendance (enrollment_id)",
    """CREATE TABLE notes (id bigserial PRIMARY KEY, course_id integer, student_id integer,
        body text, FOREIGN KEY (course_id, student_id)
        REFERENCES course_enrollments (course_id, student_id))""",
    """INSERT INTO notes (course_id, student_id, body)
        SELECT course_id, student_id, 'note' FROM enrollment_backfill_changes
        WHERE enrollment_id % 20 = 2""",
    "CREATE INDEX ON notes (course_id, student_id)",
    "VACUUM ANALYZE",
]

BATCH = re.compile(r"batch \d+: (\d+) rows up to -?\d+ in ([0-9.]+) s")


@dataclass
class UndoCost:
    students: int
    records: int
    seconds: dict[str, float]
    max_batch_seconds: dict[str, float]
    batches: dict[str, int]
    kept: dict[str, int]

    @property
    def ratio(self) -> float:
        return self.seconds["with"] / self.seconds["without"]

    def as_json(self) -> dict:
        return asdict(self)


class Batches(logging.Handler):
    """The duration of every batch, from run_batches' debug line."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seconds: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = BATCH.search(record.getMessage())
        if match:
            self.seconds.append(float(match.group(2)))


def run_undo(server: Server, db: str) -> tuple[float, list[float], int]:
    engine = create_engine(server.url(db))
    batches = Batches()
    logger = logging.getLogger("enrollments_phase1.batching")
    logger.addHandler(batches)
    logger.setLevel(logging.DEBUG)
    try:
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            records = conn.exec_driver_sql(
                "SELECT count(*) FROM enrollment_backfill_changes"
            ).scalar()
            started = time.monotonic()
            undo.undo_online(
                conn,
                Tables(),
                "bench undo",
                MigrationSettings.from_x_arguments({"max_replica_lag": "0"}),
            )
            seconds = time.monotonic() - started
    finally:
        logger.removeHandler(batches)
        engine.dispose()
    return seconds, batches.seconds, int(records)


def referenced(server: Server, db: str) -> int:
    """The recorded enrollments the referencing tables point at (kept by the undo)."""
    engine = create_engine(server.url(db))
    try:
        with engine.connect() as conn:
            return int(
                conn.exec_driver_sql(
                    "SELECT count(*) FROM enrollment_backfill_changes"
                    " WHERE enrollment_id %% 10 = 0 OR enrollment_id %% 20 IN (1, 2)"
                ).scalar()
            )
    finally:
        engine.dispose()


def measure(server: Server, template: str, students: int) -> UndoCost:
    seconds, longest, counts, kept = {}, {}, {}, {}
    records = 0
    for mode in ("without", "with"):
        db = server.copy(template, f"bench_undo_{mode}")
        if mode == "with":
            for statement in REFERENCING:
                server.sql(statement, db)
            server.sql("CHECKPOINT")
        kept[mode] = referenced(server, db) if mode == "with" else 0
        seconds[mode], batch_seconds, records = run_undo(server, db)
        longest[mode] = max(batch_seconds)
        counts[mode] = len(batch_seconds)
        print(
            f"  undo {mode}: {seconds[mode]:.1f} s, {counts[mode]} batches, "
            f"longest {longest[mode]:.3f} s",
            flush=True,
        )
        server.drop(db)
    return UndoCost(students, records, seconds, longest, counts, kept)


def run(server: Server, students: int) -> UndoCost:
    build_template(server, "bench_undo", students, revision="head")
    server.sql("VACUUM ANALYZE", "bench_undo")
    try:
        return measure(server, "bench_undo", students)
    finally:
        server.drop("bench_undo")


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
    print(f"wrote {report.save_separate('undo', label, machine_line, cost.as_json())}")
    print(f"wrote {report.write(NOTES)}")
    print(
        f"undo of {cost.records:,} recorded enrollments: {cost.seconds['without']:.1f} s without"
        f" referencing tables, {cost.seconds['with']:.1f} s with ({cost.ratio:.2f}x); longest"
        f" batch {max(cost.max_batch_seconds.values()):.3f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
