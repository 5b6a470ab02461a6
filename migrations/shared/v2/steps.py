"""What each 1.1 revision runs, online and offline, from the pieces of this version."""

from __future__ import annotations

import logging

from alembic import op
from alembic.util import CommandError

from app.migration_env import MigrationSettings
from migrations.shared.v2 import backfill, bookkeeping, sync
from migrations.shared.v2.gate import check_coverage
from migrations.shared.v2.run import is_offline, outside_transaction, run_sql, write_raw

log = logging.getLogger("migrations")


def create_bookkeeping() -> None:
    """Revision 0003: the record of changes and the runs table."""
    for statement in bookkeeping.create_sql():
        run_sql(statement)


def _ensure_bookkeeping(connection) -> None:
    """The bookkeeping a 1.0.0 migration left out (outside the revision's transaction)."""
    if connection is None:
        run_sql(bookkeeping.ensure_sql())
    else:  # in the caller's transaction (a test) without BEGIN/COMMIT of its own
        in_transaction = connection.in_transaction()
        connection.exec_driver_sql(bookkeeping.ensure_sql(in_transaction))


def _backfill(connection, source: str, settings: MigrationSettings) -> None:
    if connection is None:
        run_sql(
            backfill.offline_backfill_sql(source, settings.batch, settings.backfill_one_statement)
        )
        return
    outcome = backfill.backfill_online(connection, source, settings)
    log.info(
        "backfill %s: %d enrollments created, %d reactivated (%d batches over %d memberships)",
        source,
        outcome.created,
        outcome.reactivated,
        outcome.batches,
        outcome.memberships,
    )


def _undo(connection, what: str, settings: MigrationSettings) -> None:
    if connection is None:
        run_sql(backfill.offline_undo_sql(what, settings.batch))
    else:
        backfill.undo_online(connection, what, settings)


def backfill_revision(revision: str) -> None:
    """Revision 0004: install the sync trigger, then backfill (recorded as ``revision``).

    The trigger first: every membership committed after it gets its enrollment in its own
    transaction; the backfill, which starts after it, covers every one committed before.
    """
    settings = MigrationSettings.current()
    with outside_transaction() as connection:
        _ensure_bookkeeping(connection)
        sync.install(connection)
        _backfill(connection, revision, settings)


def undo_backfill_revision(revision: str) -> None:
    """Revision 0004's downgrade: drop the sync trigger, then undo every recorded change
    (the revision's, the command's and any catch-up's) where the row is still as left."""
    settings = MigrationSettings.current()
    with outside_transaction() as connection:
        _ensure_bookkeeping(connection)
        sync.drop(connection)
        _undo(connection, f"backfill undo (downgrade of {revision})", settings)


def drop_bookkeeping(revision: str) -> None:
    """Revision 0003's downgrade: never drop a record that holds rows, undo them first.

    Rows remain after a backfill run by ``enrollments backfill --commit`` at 0003, or a
    revision 0004 cut short (which also left the sync trigger: dropped here too).
    """
    settings = MigrationSettings.current()
    with outside_transaction() as connection:
        _ensure_bookkeeping(connection)
        sync.drop(connection)
        _undo(connection, f"backfill undo (downgrade of {revision})", settings)
    if is_offline():
        run_sql(
            f"""-- Stop unless the undo above emptied the record.
DO $empty$
BEGIN
    IF EXISTS (SELECT 1 FROM {bookkeeping.CHANGES}) THEN
        RAISE EXCEPTION '{bookkeeping.CHANGES} still holds records: refusing to drop it';
    END IF;
END
$empty$"""
        )
    else:
        left = op.get_bind().exec_driver_sql(f"SELECT count(*) FROM {bookkeeping.CHANGES}").scalar()
        if left:
            raise CommandError(
                f"{bookkeeping.CHANGES} still holds {left} records: refusing to drop it; "
                "run the downgrade again"
            )
    for statement in bookkeeping.drop_sql():
        run_sql(statement)


def keep_coverage(revision: str, gate: str) -> None:
    """Revisions 0005 and 0006: make sure coverage is kept, then gate.

    Where the sync trigger is missing (1.0.0 migrated this database, or a downgrade was
    cut short), install it and catch up with a backfill recorded as ``revision``. ``gate``
    is ``always``, or ``after_repair`` (only when it had to install the trigger).
    """
    settings = MigrationSettings.current()
    with outside_transaction() as connection:
        _ensure_bookkeeping(connection)
        if connection is None:  # offline: psql decides with \gset and \if
            condition = sync.installed_sql().removeprefix("SELECT ").removesuffix(" AS installed")
            write_raw(
                "-- Is the sync trigger missing (1.0.0 migrated this database)? Then install it\n"
                "-- and catch up with a backfill: psql's \\gset and \\if decide.\n"
                f"SELECT NOT ({condition}) AS enrollments_sync_missing\n\\gset"
            )
            write_raw("\\if :enrollments_sync_missing")
            sync.install(None)
            _backfill(None, revision, settings)
            if gate != "always":
                check_coverage(None, revision, settings.coverage_gate)
            write_raw("\\endif")
            if gate == "always":
                check_coverage(None, revision, settings.coverage_gate)
            return
        installed = connection.exec_driver_sql(sync.installed_sql()).scalar_one()
        if not installed:
            log.warning(
                "revision %s: the sync trigger is missing (1.0.0 migrated this database): "
                "installing it and catching up with a backfill",
                revision,
            )
            sync.install(connection)
            _backfill(connection, revision, settings)
        if gate == "always" or not installed:
            check_coverage(connection, revision, settings.coverage_gate)
        else:
            log.info("revision %s: the sync trigger is installed; coverage is kept", revision)
