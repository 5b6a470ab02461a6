"""Backfill ``course_enrollments`` from active ``group_members``: set-based and idempotent.

Two statements per run (or per batch): reactivate the inactive enrollments of eligible
pairs, then create the missing ones. Both are safe while the application writes: the
``INSERT`` relies on ``uq_course_enrollment_once`` (``ON CONFLICT DO NOTHING``), so a pair
the application enrolls at the same moment is neither duplicated nor an error. Nothing here
deactivates, enrolls an anomaly, or touches an enrollment with no membership behind it.

The statements are plain SQL text, the same for the command, for the backfill revision
online, and for the script ``alembic upgrade --sql`` writes.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Connection

from app import lock
from app.coverage import CoverageReport, coverage_counts, eligible_pairs_sql, indent

log = logging.getLogger(__name__)

CHANGES_TABLE = "enrollment_backfill_changes"


def _recorded(statement: str, revision: str | None, action: str, returning: str) -> str:
    """Wrap a writing statement so that it also records what it changed for ``revision``."""
    if revision is None:
        return statement
    return f"""WITH changed AS (
{indent(statement)}
    RETURNING {returning}
)
INSERT INTO {CHANGES_TABLE} (revision, enrollment_id, course_id, student_id, action)
SELECT '{revision}', id, course_id, student_id, '{action}' FROM changed
ON CONFLICT (revision, enrollment_id) DO NOTHING"""


def reactivate_sql(
    after_id: int | None = None, up_to_id: int | None = None, revision: str | None = None
) -> str:
    """UPDATE that reactivates the inactive enrollments of eligible pairs."""
    statement = f"""UPDATE course_enrollments AS ce
SET active = true
FROM (
{indent(eligible_pairs_sql(after_id, up_to_id))}
) AS p
WHERE ce.course_id = p.course_id
  AND ce.student_id = p.student_id
  AND NOT ce.active"""
    body = _recorded(statement, revision, "reactivated", "ce.id, ce.course_id, ce.student_id")
    return (
        "-- Backfill 1 of 2: reactivate the inactive course_enrollments of eligible pairs\n"
        "-- (a student's active membership in a group of a course of the student's school).\n"
        + body
    )


def create_sql(
    after_id: int | None = None, up_to_id: int | None = None, revision: str | None = None
) -> str:
    """INSERT of an active enrollment for each eligible pair that has none.

    The anti-join skips existing pairs without spending sequence values on them; ``ON
    CONFLICT`` covers a pair the application inserts meanwhile. Rows go in (student,
    course) order so that ids are the same however the script is run.
    """
    statement = f"""INSERT INTO course_enrollments (course_id, student_id, active)
SELECT p.course_id, p.student_id, true
FROM (
{indent(eligible_pairs_sql(after_id, up_to_id))}
) AS p
WHERE NOT EXISTS (
    SELECT 1 FROM course_enrollments AS ce
    WHERE ce.course_id = p.course_id AND ce.student_id = p.student_id
)
ORDER BY p.student_id, p.course_id
ON CONFLICT (course_id, student_id) DO NOTHING"""
    body = _recorded(statement, revision, "created", "id, course_id, student_id")
    return (
        "-- Backfill 2 of 2: create an active course_enrollment for each eligible pair\n"
        "-- that has none; ON CONFLICT skips a pair the application enrolled meanwhile.\n" + body
    )


def backfill_statements(
    after_id: int | None = None, up_to_id: int | None = None, revision: str | None = None
) -> tuple[str, str]:
    """(reactivate, create): the two statements of one backfill run or batch."""
    return (
        reactivate_sql(after_id, up_to_id, revision),
        create_sql(after_id, up_to_id, revision),
    )


def execute_sql(connection: Connection, sql: str) -> int:
    """Run literal SQL exactly as written (no parameter parsing); return its rowcount."""
    result = connection.exec_driver_sql(sql, execution_options={"no_parameters": True})
    return max(result.rowcount, 0)


def next_batch_end(connection: Connection, after_id: int, batch_size: int) -> tuple[int, int]:
    """The keyset step: (last id, row count) of the next ``batch_size`` memberships."""
    row = connection.execute(
        text(
            "SELECT max(id), count(*) FROM ("
            " SELECT id FROM group_members WHERE id > :after ORDER BY id LIMIT :n) AS batch"
        ),
        {"after": after_id, "n": batch_size},
    ).one()
    return (int(row[0]) if row[0] is not None else after_id), int(row[1])


@dataclass
class BackfillResult:
    """What a backfill did (or, in a dry run, would do) and the coverage after it."""

    committed: bool
    created: int
    reactivated: int
    batches: int
    seconds: float
    after: CoverageReport

    def as_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "committed": self.committed,
            "created": self.created,
            "reactivated": self.reactivated,
            "batches": self.batches,
            "seconds": round(self.seconds, 3),
        }
        data.update(self.after.counts_json())
        return data


class Progress:
    """Progress of a batched run: a bar on a terminal, a log line otherwise."""

    def __init__(self, total: int, stream=None, interval: float = 5.0) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = interval
        self.started = time.monotonic()
        self.last_log = 0.0

    def __call__(self, done: int, created: int, reactivated: int) -> None:
        now = time.monotonic()
        elapsed = max(now - self.started, 1e-9)
        rate = done / elapsed
        if self.tty:
            width = 30
            filled = int(width * done / self.total) if self.total else width
            self.stream.write(
                f"\r[{'#' * filled}{'.' * (width - filled)}] {done:,}/{self.total:,} "
                f"memberships, {rate:,.0f}/s, {created:,} created, {reactivated:,} reactivated"
            )
            if done >= self.total:
                self.stream.write("\n")
            self.stream.flush()
        elif now - self.last_log >= self.interval or done >= self.total:
            self.last_log = now
            log.info(
                "backfill progress: %d/%d memberships (%.0f/s), %d created, %d reactivated",
                done,
                self.total,
                rate,
                created,
                reactivated,
            )


def run_single(connection: Connection, revision: str | None = None) -> tuple[int, int]:
    """Both statements in the caller's transaction; returns (created, reactivated)."""
    reactivate, create = backfill_statements(revision=revision)
    reactivated = execute_sql(connection, reactivate)
    created = execute_sql(connection, create)
    return created, reactivated


@contextlib.contextmanager
def batch_transaction(connection: Connection) -> Iterator[None]:
    """One transaction per batch.

    On a connection in AUTOCOMMIT (Alembic's ``autocommit_block``, which keeps its own
    SQLAlchemy transaction object open) the transaction is driven with plain
    BEGIN/COMMIT; otherwise with ``connection.begin()``.
    """
    if connection.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        connection.exec_driver_sql("BEGIN")
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):
                connection.exec_driver_sql("ROLLBACK")
            raise
        connection.exec_driver_sql("COMMIT")
        return
    with connection.begin():
        yield


def run_batched(
    connection: Connection,
    batch_size: int,
    revision: str | None = None,
    progress: Callable[[int, int, int], None] | None = None,
) -> tuple[int, int, int, int]:
    """Walk ``group_members`` by primary key, committing each batch.

    ``connection`` must not be in a transaction: each batch is its own, so no lock is held
    for long, and an interrupted run is finished by running it again (what was committed
    stays; the statements skip it). Returns (created, reactivated, batches, rows).
    """
    created = reactivated = batches = rows = 0
    after_id = 0
    while True:
        with batch_transaction(connection):
            up_to_id, count = next_batch_end(connection, after_id, batch_size)
            if count == 0:
                break
            reactivate, create = backfill_statements(after_id, up_to_id, revision)
            reactivated += execute_sql(connection, reactivate)
            created += execute_sql(connection, create)
        batches += 1
        rows += count
        after_id = up_to_id
        log.debug("batch %d: memberships up to id %d", batches, up_to_id)
        if progress is not None:
            progress(rows, created, reactivated)
    return created, reactivated, batches, rows


def count_memberships(connection: Connection) -> int:
    return int(connection.execute(text("SELECT count(*) FROM group_members")).scalar_one())


def backfill(
    connection: Connection,
    batch_size: int | None = None,
    progress_stream=None,
) -> BackfillResult:
    """``enrollments backfill --commit``; ``connection`` is outside any transaction.

    (The dry run is the audit: what it counts missing is created, inactive reactivated.)
    """
    started = time.monotonic()
    # One writer at a time (this, another backfill, an alembic upgrade): wait, then go on.
    lock.take(connection, "enrollments backfill")
    try:
        created, reactivated, batches = _write(connection, batch_size, progress_stream)
    finally:
        lock.release(connection)
    log.info("backfill committed: %d created, %d reactivated", created, reactivated)
    with connection.begin():
        after = coverage_counts(connection)
    return BackfillResult(
        committed=True,
        created=created,
        reactivated=reactivated,
        batches=batches,
        seconds=time.monotonic() - started,
        after=after,
    )


def _write(connection: Connection, batch_size: int | None, progress_stream) -> tuple[int, int, int]:
    """(created, reactivated, batches), batched or in one transaction."""
    if batch_size:
        with connection.begin():
            total = count_memberships(connection)
        progress = Progress(total, stream=progress_stream)
        created, reactivated, batches, _ = run_batched(connection, batch_size, progress=progress)
    else:
        with connection.begin():
            created, reactivated = run_single(connection)
        batches = 1
    return created, reactivated, batches
