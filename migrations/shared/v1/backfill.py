"""Version 1 (1.0.0, frozen): the backfill statements of revision 0004 and their batches.

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
from collections.abc import Callable, Iterator

from sqlalchemy import text
from sqlalchemy.engine import Connection

from migrations.shared.v1.definition import eligible_pairs_sql, indent

log = logging.getLogger("migrations")

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
