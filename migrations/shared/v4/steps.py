"""What each revision on helpers v4 runs, online and offline, from the pieces of this
version."""

from __future__ import annotations

import logging

from alembic import op

from enrollments_phase1.migration_env import MigrationSettings, current_run
from enrollments_phase1.migrations.shared.v4 import backfill, bookkeeping, sync, undo
from enrollments_phase1.migrations.shared.v4.definition import Tables
from enrollments_phase1.migrations.shared.v4.gate import gate_in_revision
from enrollments_phase1.migrations.shared.v4.headers import header
from enrollments_phase1.migrations.shared.v4.run import (
    execute_block,
    in_transaction,
    is_offline,
    outside_transaction,
    run_sql,
    tables,
    write_raw,
)

log = logging.getLogger("migrations")


def verify_sql(step: str, what: str, condition: str, why: str, command: str = "upgrade") -> str:
    """A DO block for the transaction that records ``step`` (``revision 0004``, ``the
    downgrade of 0004``): it stops that transaction unless ``condition`` (SQL) holds, so
    that the step is never recorded without it, even by a script run without
    ``ON_ERROR_STOP`` (a step before it may have failed)."""
    return f"""-- Stop before recording {step} unless {what}.
DO $verify$
BEGIN
    IF NOT ({condition}) THEN
        RAISE EXCEPTION '{step} is not recorded: {why}'
            USING HINT = 'fix what failed above, then run the {command} again: it goes on from where it stopped';
    END IF;
END
$verify$"""


def _verify_in_revision(
    step: str, what: str, condition: str, why: str, command: str = "upgrade"
) -> None:
    execute_block(_connection_in_revision(), verify_sql(step, what, condition, why, command))


def _verify_undone(revision: str, t: Tables) -> None:
    """The undo's postcondition: it forgets each record it has dealt with."""
    _verify_in_revision(
        f"the downgrade of {revision}",
        "the undo above went through the whole record",
        f"SELECT NOT EXISTS (SELECT 1 FROM {t.enrollment_backfill_changes})"
        f" AND NOT EXISTS (SELECT 1 FROM {t.enrollment_backfill_batches})",
        "the backfill record still holds records the undo did not reach",
        "downgrade",
    )
    # A claim can only be of a recorded enrollment: with the record empty, none is left
    # that means anything.
    run_sql(f"DELETE FROM {t.enrollment_backfill_claims}")


def _verify_kept(revision: str, t: Tables) -> None:
    """The revision's postconditions where it installs the sync trigger and backfills."""
    _verify_in_revision(
        f"revision {revision}",
        "the sync trigger keeps coverage",
        sync.keeping_sql(t),
        "the sync trigger is not installed",
    )
    _verify_in_revision(
        f"revision {revision}",
        "no backfill run is left unfinished",
        f"SELECT NOT EXISTS (SELECT 1 FROM {t.enrollment_backfill_runs} WHERE finished_at IS NULL)",
        "a backfill run did not finish",
    )


def _made_earlier_in_this_script(what: str) -> bool:
    """Offline: whether the script made ``what`` as this version makes it, unconditionally,
    before this point (see ``OfflineScript.installed``). Online: never (the database says)."""
    script = current_run().script
    return script is not None and what in script.installed


def _made_in_this_script(what: str) -> None:
    script = current_run().script
    if script is not None:
        script.installed.add(what)


def create_bookkeeping() -> None:
    """Revision 0003: the record of changes and the runs table."""
    header("bookkeeping")
    for statement in bookkeeping.create_sql(tables()):
        run_sql(statement)
    _made_in_this_script("bookkeeping")


def _ensure_bookkeeping(connection, t: Tables) -> None:
    """The bookkeeping a 1.0.0 migration left out, in a transaction of its own (not in a
    script that made it already)."""
    if connection is None and _made_earlier_in_this_script("bookkeeping"):
        return
    _made_in_this_script("bookkeeping")
    with in_transaction(connection):
        for statement in bookkeeping.ensure_sql(t):
            execute_block(connection, statement)


def _backfill(connection, t: Tables, source: str, settings: MigrationSettings) -> None:
    if connection is None:
        header("backfill")
        run_sql(backfill.offline_backfill_sql(t, source, settings))
        return
    outcome = backfill.backfill_online(connection, t, source, settings)
    log.info(
        "backfill %s: %s enrollments created, %s reactivated (%s over %s pairs, %s)",
        source,
        f"{outcome.created:,}",
        f"{outcome.reactivated:,}",
        f"{outcome.batches:,} batch" + ("" if outcome.batches == 1 else "es"),
        f"{outcome.pairs:,}",
        f"{outcome.passes} pass" + ("" if outcome.passes == 1 else "es"),
    )


def backfill_revision(revision: str) -> None:
    """Revision 0004: install the sync trigger, then backfill (recorded as ``revision``).

    The trigger first: every membership committed after it gets its enrollment in its own
    transaction; the backfill, which starts after it, covers every one committed before.
    """
    settings, t = MigrationSettings.current(), tables()
    with outside_transaction() as connection:
        _ensure_bookkeeping(connection, t)
        sync.install(connection, t, settings)
        _made_in_this_script("sync trigger")
        if connection is not None:
            log.info(
                "revision %s: the sync trigger is installed: from now on every membership the "
                "application commits is enrolled in its own transaction",
                revision,
            )
        _backfill(connection, t, revision, settings)
    _verify_kept(revision, t)


def _connection_in_revision():
    """The revision's own transaction: online its connection, offline None."""
    return None if is_offline() else op.get_bind()


def undo_backfill_revision(revision: str) -> None:
    """Revision 0004's downgrade: undo every recorded change (the revision's, the
    command's and any catch-up's) where the row is still as the backfill left it, keeping
    what other tables reference and what the application made its own; then, in the
    transaction that records 0003, drop every object of the sync trigger: until then what
    the application writes is still enrolled, and a downgrade cut short at any point
    leaves 0004 with all of them (running it again finishes the undo)."""
    settings, t = MigrationSettings.current(), tables()
    what = f"backfill undo (downgrade of {revision})"
    with outside_transaction() as connection:
        _ensure_bookkeeping(connection, t)
        undo.undo(connection, t, what, settings)
    _verify_undone(revision, t)
    sync.drop(_connection_in_revision(), t, settings)
    for statement in undo.drop_function_sql(t):
        run_sql(statement)


def drop_bookkeeping(revision: str) -> None:
    """Revision 0003's downgrade: never drop a record that holds rows, undo them first.

    Rows remain after a backfill run by ``enrollments backfill --commit`` at 0003, or a
    revision 0004 cut short (which also left the sync trigger: dropped here too, in the
    transaction that drops the tables and records 0002).
    """
    settings, t = MigrationSettings.current(), tables()
    what = f"backfill undo (downgrade of {revision})"
    with outside_transaction() as connection:
        _ensure_bookkeeping(connection, t)
        undo.undo(connection, t, what, settings)
    _verify_undone(revision, t)
    sync.drop(_connection_in_revision(), t, settings)
    for statement in undo.drop_function_sql(t):
        run_sql(statement)
    for statement in bookkeeping.drop_sql(t):
        run_sql(statement)


def keep_coverage(revision: str, gate: str) -> None:
    """Revisions 0005 and 0006: make sure coverage is kept, then gate.

    Where the sync trigger is missing (1.0.0 migrated this database, or a downgrade was
    cut short), install it and catch up with a backfill recorded as ``revision``. ``gate``
    is ``always``, or ``after_repair`` (only when it had to install the trigger). The gate
    and the checks that the trigger is there and no backfill was left unfinished run in
    the transaction that records the revision.
    """
    settings, t = MigrationSettings.current(), tables()
    if _made_earlier_in_this_script("sync trigger"):  # this script's 0004 installed it
        _verify_kept(revision, t)
        if gate == "always":
            gate_in_revision(revision, settings.coverage_gate, t)
        return
    repaired = False
    with outside_transaction() as connection:
        _ensure_bookkeeping(connection, t)
        if connection is None:  # offline: psql decides with \gset and \if
            condition = sync.keeping_sql(t).removeprefix("SELECT ").removesuffix(" AS keeping")
            write_raw("\\unset enrollments_sync_missing")
            with in_transaction(None):
                write_raw(
                    "-- Is the sync trigger missing (1.0.0 migrated this database)? Then install it\n"
                    "-- and catch up with a backfill: psql's \\gset and \\if decide.\n"
                    f"SELECT NOT ({condition}) AS enrollments_sync_missing\n\\gset"
                )
            write_raw("\\if :enrollments_sync_missing")
            sync.install(None, t, settings)
            _backfill(None, t, revision, settings)
            write_raw("\\endif")
        else:
            with in_transaction(connection):
                installed = connection.exec_driver_sql(sync.keeping_sql(t)).scalar_one()
            if not installed:
                log.warning(
                    "revision %s: the sync trigger is missing (1.0.0 migrated this database): "
                    "installing it and catching up with a backfill",
                    revision,
                )
                sync.install(connection, t, settings)
                _backfill(connection, t, revision, settings)
                repaired = True
    _verify_kept(revision, t)
    if gate == "always":
        gate_in_revision(revision, settings.coverage_gate, t)
    elif is_offline():
        write_raw("\\if :enrollments_sync_missing")
        gate_in_revision(revision, settings.coverage_gate, t)
        write_raw("\\endif")
    elif repaired:
        gate_in_revision(revision, settings.coverage_gate, t)
    else:
        log.info(
            "revision %s: the sync trigger is installed; coverage is kept (nothing to do: "
            "this revision repairs databases 1.0.0 left without it)",
            revision,
        )


def reinstall_sync_trigger(revision: str, done: str) -> None:
    """The sync trigger and the bookkeeping as this version installs them, on every
    database (revisions 0007 and 0008, for databases an older release migrated): the queue
    and guard tables (a short lock on the queue alone), the functions replaced, EXECUTE
    revoked from PUBLIC, the trigger on the queue and any trigger that calls something else
    re-created (a short lock, retried), stray old functions dropped, the bookkeeping tables
    granting nothing to PUBLIC. Where they are installed already, nothing changes; the
    legacy tables are locked only where a trigger on them must be re-created."""
    settings, t = MigrationSettings.current(), tables()
    already = False
    if not _made_earlier_in_this_script("sync trigger"):  # else this script's 0004 did
        with outside_transaction() as connection:
            if connection is not None:
                with in_transaction(connection):
                    already = connection.exec_driver_sql(sync.installed_sql(t)).scalar_one()
            _ensure_bookkeeping(connection, t)
            sync.install(connection, t, settings)
    _verify_in_revision(
        f"revision {revision}",
        "every sync trigger of this version is installed",
        sync.installed_sql(t),
        "the sync triggers are not all installed",
    )
    if already:
        log.info(
            "revision %s: the sync trigger is this version's already: nothing changed (this "
            "revision brings it to databases an older release migrated)",
            revision,
        )
    else:
        log.info("revision %s: %s", revision, done)


def harden_sync_trigger(revision: str) -> None:
    """Revision 0007: on databases 1.1.0 left at 0006, safe definer functions that enroll
    at commit (:func:`reinstall_sync_trigger`)."""
    reinstall_sync_trigger(revision, "the sync trigger is hardened")


def sync_under_concurrency(revision: str) -> None:
    """Revision 0008: on databases 1.2.0 left at 0007, 1.2.0's queue gains its columns in
    place, the guard table is created, the functions replaced, the trigger on the queue
    fires once per transaction (:func:`reinstall_sync_trigger`)."""
    reinstall_sync_trigger(revision, "the sync trigger applies each transaction once, in order")
