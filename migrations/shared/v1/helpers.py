"""Version 1 (1.0.0, frozen): the backfill, its undo, the coverage gate, indexes.

Each works online and offline. Offline (``alembic upgrade --sql``) it writes the same
statements, as literal SQL a DBA can read and run with ``psql -v ON_ERROR_STOP=1``;
nothing here reads rows in Python offline.
"""

from __future__ import annotations

import logging

from alembic import context, op
from alembic.util import CommandError
from sqlalchemy.engine import Connection

from app.migration_env import MigrationSettings
from migrations.shared.v1.backfill import (
    CHANGES_TABLE,
    backfill_statements,
    execute_sql,
    run_batched,
)
from migrations.shared.v1.definition import PAIR_KEY_SHIFT, audit, coverage_sql, indent

log = logging.getLogger("migrations")

GATE_SAMPLE = 10
FIX_COMMAND = "enrollments backfill --commit, then alembic upgrade head again"


def is_offline() -> bool:
    return context.is_offline_mode()


def run_sql(sql: str) -> int | None:
    """Execute literal SQL: written to the script offline, run (rowcount back) online."""
    if is_offline():
        op.execute(sql)
        return None
    return execute_sql(op.get_bind(), sql)


def can_autocommit() -> bool:
    """False when the caller runs the migration inside a transaction of its own.

    (A test that wraps the upgrade in a transaction, for instance.) Then nothing can
    run outside a transaction, and the helpers below fall back to their transactional
    form, saying so.
    """
    return is_offline() or not getattr(op.get_context(), "_in_external_transaction", False)


# --- indexes --------------------------------------------------------------------------
def drop_invalid_index_sql(name: str) -> str:
    """A DO block that drops index ``name`` if an interrupted concurrent build left it INVALID."""
    return f"""-- Drop {name} if an interrupted CREATE INDEX CONCURRENTLY left it INVALID,
-- so that the build below starts again instead of skipping it.
DO $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM pg_index
        WHERE indexrelid = to_regclass('{name}') AND NOT indisvalid
    ) THEN
        DROP INDEX {name};
    END IF;
END
$$"""


def create_index_concurrently(name: str, table: str, columns: list[str]) -> None:
    """Build an index without blocking writes; re-runnable, and recovers an INVALID one."""
    if not can_autocommit():
        log.warning("inside the caller's transaction: building %s without CONCURRENTLY", name)
        run_sql(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({', '.join(columns)})")
        return
    with op.get_context().autocommit_block():
        run_sql(drop_invalid_index_sql(name))
        run_sql(
            f"-- Build {name} without blocking writes to {table}.\n"
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {table} ({', '.join(columns)})"
        )


def drop_index_concurrently(name: str) -> None:
    """Drop an index without blocking writes; re-runnable."""
    if not can_autocommit():
        log.warning("inside the caller's transaction: dropping %s without CONCURRENTLY", name)
        run_sql(f"DROP INDEX IF EXISTS {name}")
        return
    with op.get_context().autocommit_block():
        run_sql(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")


# --- the backfill ---------------------------------------------------------------------
def backfill_enrollments(revision: str) -> None:
    """Reactivate and create enrollments for every eligible pair, recording the changes.

    The record in ``enrollment_backfill_changes`` lets :func:`undo_backfill` give back
    exactly the ``course_enrollments`` this revision found. With ``-x
    backfill_batch_size=N`` (online only) it commits batch by batch in an autocommit block;
    an interrupted run leaves ``alembic_version`` at the previous revision and running the
    upgrade again finishes the job.
    """
    settings = MigrationSettings.current()
    if is_offline() or not settings.backfill_batch_size or not can_autocommit():
        if settings.backfill_batch_size:
            log.warning(
                "backfill_batch_size ignored: %s",
                "offline, the script is one statement per step"
                if is_offline()
                else "inside the caller's transaction, batches cannot commit",
            )
        reactivate, create = backfill_statements(revision=revision)
        reactivated = run_sql(reactivate)
        created = run_sql(create)
        if created is not None:
            log.info(
                "backfill %s: %d enrollments created, %d reactivated",
                revision,
                created,
                reactivated,
            )
        return
    with op.get_context().autocommit_block():
        created, reactivated, batches, rows = run_batched(
            op.get_bind(), settings.backfill_batch_size, revision=revision
        )
    log.info(
        "backfill %s: %d enrollments created, %d reactivated (%d batches over %d memberships)",
        revision,
        created,
        reactivated,
        batches,
        rows,
    )


def _as_left(action: str) -> str:
    return f"""r.revision = '{{revision}}' AND r.action = '{action}'
      AND ce.id = r.enrollment_id AND ce.course_id = r.course_id
      AND ce.student_id = r.student_id AND ce.active"""


def changed_since_sql(revision: str) -> str:
    """SELECT of the recorded rows that are no longer as the upgrade left them."""
    return f"""SELECT r.enrollment_id, r.course_id, r.student_id, r.action
FROM {CHANGES_TABLE} AS r
LEFT JOIN course_enrollments AS ce ON ce.id = r.enrollment_id
WHERE r.revision = '{revision}'
  AND (ce.id IS NULL OR NOT ce.active
       OR ce.course_id <> r.course_id OR ce.student_id <> r.student_id)
ORDER BY r.enrollment_id"""


def undo_backfill_statements(revision: str) -> list[str]:
    """The downgrade's statements: delete what was created, deactivate what was reactivated."""
    return [
        f"""-- Undo backfill {revision}, 1 of 3: delete the enrollments it created,
-- where they are still as it left them (same pair, active).
DELETE FROM course_enrollments AS ce
USING {CHANGES_TABLE} AS r
WHERE {_as_left("created").format(revision=revision)}""",
        f"""-- Undo backfill {revision}, 2 of 3: deactivate the enrollments it reactivated,
-- where they are still active.
UPDATE course_enrollments AS ce
SET active = false
FROM {CHANGES_TABLE} AS r
WHERE {_as_left("reactivated").format(revision=revision)}""",
        f"""-- Undo backfill {revision}, 3 of 3: forget its record.
DELETE FROM {CHANGES_TABLE} WHERE revision = '{revision}'""",
    ]


def changed_since_notice_sql(revision: str) -> str:
    """Offline: a DO block that warns when recorded rows changed since the upgrade."""
    return f"""-- Warn about enrollments changed since backfill {revision}: they are left alone.
DO $$
DECLARE
    changed bigint;
BEGIN
    SELECT count(*) INTO changed FROM (
{indent(changed_since_sql(revision), "        ")}
    ) AS c;
    IF changed > 0 THEN
        RAISE WARNING 'backfill {revision} downgrade: % recorded enrollments changed since the upgrade; left as they are', changed;
    END IF;
END
$$"""


def undo_backfill(revision: str) -> None:
    """Give back the ``course_enrollments`` that backfill ``revision`` found."""
    if is_offline():
        op.execute(changed_since_notice_sql(revision))
    else:
        changed = (
            op.get_bind()
            .exec_driver_sql(changed_since_sql(revision), execution_options={"no_parameters": True})
            .all()
        )
        if changed:
            log.warning(
                "backfill %s downgrade: %d recorded enrollments changed since the upgrade "
                "and are left as they are (first ids: %s)",
                revision,
                len(changed),
                ", ".join(str(r[0]) for r in changed[:10]),
            )
    deleted, deactivated, _ = (run_sql(sql) for sql in undo_backfill_statements(revision))
    if deleted is not None:
        log.info(
            "backfill %s undone: %d enrollments deleted, %d deactivated",
            revision,
            deleted,
            deactivated,
        )


# --- the coverage gate ----------------------------------------------------------------
class CoverageGateError(CommandError):
    """Coverage is below 100%: the upgrade stops before the revision that needs it."""


def gate_message(report, revision: str) -> str:
    lines = [
        f"coverage gate before revision {revision}: {report.summary_line()}.",
        f"Uncovered pairs (first {GATE_SAMPLE}):",
    ]
    for pair in (report.missing_pairs + report.inactive_pairs)[:GATE_SAMPLE]:
        state = "missing" if pair in report.missing_pairs else "inactive"
        lines.append(
            f"  {state}: student {pair.student_id} ({pair.student_name} <{pair.email}>) "
            f"in course {pair.course_id} ({pair.course_name}), {pair.groups} group(s)"
        )
    lines.append(
        f"Nothing of revision {revision} was applied; `alembic current` shows where the "
        f"database stands. To fix: {FIX_COMMAND}."
    )
    return "\n".join(lines)


def gate_sql(revision: str, mode: str) -> str:
    """The gate as a PL/pgSQL DO block for the offline script: same counts, same verdict."""
    level = "EXCEPTION" if mode == "abort" else "WARNING"
    first = " || ', ' || ".join(
        f"""array_to_string(ARRAY(
            SELECT '(student ' || (k / {PAIR_KEY_SHIFT}) || ', course '
                   || mod(k, {PAIR_KEY_SHIFT}) || ', {status})'
            FROM unnest(counts.first_{status}) AS k), ', ')"""
        for status in ("missing", "inactive")
    )
    return f"""-- Coverage gate before revision {revision}: every eligible (student, course) pair
-- must have an active course_enrollment. If one lacks it, this block raises an
-- exception and psql -v ON_ERROR_STOP=1 stops here: nothing after it is applied.
DO $gate$
DECLARE
    counts record;
BEGIN
    SELECT * INTO counts FROM (
{indent(coverage_sql(GATE_SAMPLE), "        ")}
    ) AS audit;
    IF counts.covered < counts.eligible_pairs THEN
        RAISE {level} 'coverage gate before revision {revision}: % of % eligible pairs lack an active enrollment (% missing, % inactive)',
            counts.eligible_pairs - counts.covered, counts.eligible_pairs,
            counts.missing, counts.inactive
            USING DETAIL = 'first uncovered pairs: ' || trim(both ', ' from {first}),
                  HINT = 'run {FIX_COMMAND}';
    END IF;
    IF counts.non_student + counts.cross_school > 0 THEN
        RAISE WARNING 'coverage gate: % non_student and % cross_school memberships are not enrolled; review them with enrollments audit',
            counts.non_student, counts.cross_school;
    END IF;
END
$gate$"""


def require_full_coverage(revision: str) -> None:
    """The coverage gate: call first in ``upgrade()`` of a revision that needs 100%.

    Online it runs the audit before the revision locks or writes anything and raises
    :class:`CoverageGateError` below 100% (the revision's transaction rolls back and
    ``alembic_version`` stays at the previous revision). Offline it writes a DO block that
    does the same check in the script. ``-x coverage_gate=warn`` lets it pass with a loud
    warning, for emergencies.
    """
    mode = MigrationSettings.current().coverage_gate
    if mode == "warn":
        log.warning(
            "COVERAGE GATE OVERRIDDEN (-x coverage_gate=warn) before revision %s: "
            "the upgrade continues even if coverage is below 100%%",
            revision,
        )
    if is_offline():
        op.execute(gate_sql(revision, mode))
        return
    check_coverage(op.get_bind(), revision, mode)


def check_coverage(connection: Connection, revision: str, mode: str = "abort") -> None:
    """The online gate on ``connection``; raises :class:`CoverageGateError` when it fails."""
    report = audit(connection, limit=GATE_SAMPLE)
    if report.anomaly_count:
        log.warning(
            "coverage gate: %d non_student and %d cross_school memberships are not enrolled; "
            "review them with `enrollments audit`",
            report.anomalies["non_student"],
            report.anomalies["cross_school"],
        )
    if report.status != "fail":
        log.info("coverage gate before revision %s passed: %s", revision, report.summary_line())
        return
    message = gate_message(report, revision)
    if mode == "warn":
        log.warning("COVERAGE GATE FAILED BUT OVERRIDDEN:\n%s", message)
        return
    raise CoverageGateError(message)


__all__ = [
    "CoverageGateError",
    "backfill_enrollments",
    "check_coverage",
    "create_index_concurrently",
    "drop_index_concurrently",
    "require_full_coverage",
    "undo_backfill",
]
