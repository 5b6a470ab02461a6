"""The psql script ``alembic upgrade --sql`` writes: its prologue, and the guards in it.

A DBA runs it with ``psql``, maybe without ``ON_ERROR_STOP``, maybe on the wrong database.
So the script checks where the database stands before it changes anything
(:func:`start_check_sql`), starts every transaction with the run's settings, the
enrollments lock and a check on ``alembic_version`` (:func:`version_guard_sql`), runs what
must run outside a transaction only inside psql's ``\\if`` on the same check
(:meth:`OfflineScript.autocommit_guard`), and checks after each revision that the version
moved (:func:`moved_check_sql`). Before each step it asks psql whether a statement failed so
far, and if one did, stops psql (:data:`STOP_IF_FAILED`): run without ``ON_ERROR_STOP``,
nothing after a failed step runs.

:class:`OfflineScript` is one script being written: where it starts and where it stands at
each point, given explicitly by the environment (``migrations/env.py``) that makes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from enrollments_phase1 import lock
from enrollments_phase1.names import Tables
from enrollments_phase1.names import quote_literal as _literal


def _is_downgrade(script, start: str | None, destination: str | None) -> bool:
    if start is None:
        return False
    if destination is None:
        return True
    return destination in {rev.revision for rev in script.walk_revisions("base", start)}


def _command(script, start: str | None, destination: str | None) -> str:
    verb = "downgrade" if _is_downgrade(script, start, destination) else "upgrade"
    return f"alembic {verb} {{found}}:{destination or 'base'} --sql"


def _q(schema: str) -> str:
    return '"' + schema.replace('"', '""') + '"'


def start_check_sql(script, start: str | None, destination: str | None, schema: str) -> str:
    """A DO block that stops the script unless the database stands where it starts.

    From ``start`` it needs ``alembic_version`` (in ``schema``) to hold exactly ``start``;
    from base it needs no ``alembic_version`` and no legacy tables (those are stamped, not
    created). Either way, legacy tables found in another schema than ``schema`` stop it,
    naming the ``-x legacy_schema`` to write the script with.
    """
    again = _command(script, start, destination)
    version = f"{_q(schema)}.alembic_version"
    elsewhere = f"""    SELECT pg_catalog.string_agg(DISTINCT n.nspname, ', ') INTO elsewhere
    FROM pg_catalog.pg_class AS c
    JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
    WHERE c.relname = 'group_members' AND c.relkind IN ('r', 'p') AND n.nspname <> {_literal(schema)};
    IF pg_catalog.to_regclass({_literal(_q(schema) + ".group_members")}) IS NULL AND elsewhere IS NOT NULL THEN
        RAISE EXCEPTION 'the legacy tables are in schema %, but this script was written for schema {schema.replace("'", "''").replace("%", "%%")}; nothing was changed', elsewhere
            USING HINT = 'write the script for that schema: alembic -x legacy_schema=' || elsewhere || ' ' || replace('{again}', '{{found}}', {"'base'" if start is None else _literal(start)});
    END IF;"""
    if start is None:
        body = f"""{elsewhere}
    IF pg_catalog.to_regclass({_literal(version)}) IS NOT NULL THEN
        SELECT coalesce(pg_catalog.string_agg(version_num, ', '), 'no revision') INTO found
        FROM {version};
        RAISE EXCEPTION 'this script starts from an empty database, but this one is under Alembic already (at %); nothing was changed', found
            USING HINT = 'write the script from its revision: ' || replace('{again}', '{{found}}', found)
                || ', or run alembic upgrade {destination or "head"} online';
    END IF;
    IF pg_catalog.to_regclass({_literal(_q(schema) + ".schools")}) IS NOT NULL THEN
        RAISE EXCEPTION 'this database has the legacy tables but no alembic_version: it was never stamped; nothing was changed'
            USING HINT = 'run alembic stamp 0001 once (it records that the legacy schema is there), then write the script with '
                || replace('{again}', '{{found}}', '0001');
    END IF;"""
    else:
        body = f"""{elsewhere}
    IF pg_catalog.to_regclass({_literal(version)}) IS NOT NULL THEN
        SELECT pg_catalog.string_agg(version_num, ', ') INTO found FROM {version};
    END IF;
    IF found IS DISTINCT FROM '{start}' THEN
        RAISE EXCEPTION 'this script starts at revision {start}, but the database is at %; nothing was changed',
            coalesce(found, 'no revision (no alembic_version)')
            USING HINT = CASE
                WHEN found IS NULL
                THEN 'an empty database takes alembic upgrade head --sql; a legacy database is stamped first: alembic stamp 0001'
                WHEN found = '{destination or ""}'
                THEN 'the database is at {destination or "base"} already: there is nothing to run'
                ELSE 'write the script from where the database is: ' || replace('{again}', '{{found}}', found)
            END;
    END IF;"""
    return f"""-- Stop unless the database stands at {start or "base (an empty database)"}, where this script starts;
-- warn when it runs as a superuser.
DO $start$
DECLARE
    found text;
    elsewhere text;
BEGIN
{body}
    IF (SELECT r.rolsuper FROM pg_catalog.pg_roles AS r WHERE r.rolname = current_user) THEN
        RAISE WARNING 'this script runs as superuser %: the sync trigger''s functions it installs run as their owner, with every privilege; run it as a role without SUPERUSER that owns the legacy tables', current_user;
    END IF;
END
$start$"""


def moved_check_sql(heads: set[str], schema: str) -> str:
    """A DO block that stops the script unless ``alembic_version`` now holds ``heads``."""
    want = ", ".join(sorted(heads))
    return f"""-- Stop unless the revision above moved alembic_version to {want or "base"}.
DO $moved$
BEGIN
    IF (SELECT coalesce(pg_catalog.string_agg(version_num, ', ' ORDER BY version_num), '') FROM {_q(schema)}.alembic_version)
       IS DISTINCT FROM '{want}' THEN
        RAISE EXCEPTION 'alembic_version did not move to {want or "base"}: the database is not where this script expects';
    END IF;
END
$moved$"""


def version_guard_sql(expected: str | None, schema: str, again: str) -> str:
    """A DO block that stops its transaction unless ``alembic_version`` holds ``expected``
    (None: base, no revision), where the script stands if every step before it committed.

    Every transaction of the script starts with it. Run without ``ON_ERROR_STOP``, psql
    goes on after a failed statement: a check that failed rolled back the transaction
    that would have moved ``alembic_version``, so every later transaction stops here, and
    nothing of a revision past a failed check is applied."""
    version = f"{_q(schema)}.alembic_version"
    want = expected or ""
    return f"""DO $where$
DECLARE
    found text := '';
BEGIN
    IF pg_catalog.to_regclass({_literal(version)}) IS NOT NULL THEN
        SELECT coalesce(pg_catalog.string_agg(version_num, ', ' ORDER BY version_num), '') INTO found FROM {version};
    END IF;
    IF found IS DISTINCT FROM '{want}' THEN
        RAISE EXCEPTION 'this step expects the database at {expected or "base"}, but it is at %: a step before it failed; nothing more of this script is applied', coalesce(nullif(found, ''), 'base')
            USING HINT = 'fix what failed first, then write the script again from where the database stands: ' || replace('{again}', '{{found}}', coalesce(nullif(found, ''), 'base'));
    END IF;
END
$where$"""


STOP_ON_ERROR = """\\set ON_ERROR_STOP on
-- psql stops at the first error, however it was started (the checks below rely on it).
-- Every transaction below starts with the run's settings (SET LOCAL: nothing is left on
-- the connection) and takes the enrollments lock for itself."""

# Before each step (every transaction, every statement outside one): psql run without
# ON_ERROR_STOP goes on after a failed statement, so the script asks psql whether any
# statement of this session failed so far, and then stops psql itself (exit 3) before the
# step changes anything. psql alone answers (no query): the variable named after
# LAST_ERROR_SQLSTATE exists as enrollments_ok_00000 only while no statement has failed.
STOP_IF_FAILED = """-- Stop here if a statement above failed (psql goes on after an error without ON_ERROR_STOP).
\\unset enrollments_ok_00000
\\set enrollments_ok_:LAST_ERROR_SQLSTATE
\\if :{?enrollments_ok_00000}
\\else
\\set ON_ERROR_STOP on
DO $stop$ BEGIN RAISE EXCEPTION 'a statement above failed: this script stops here, and nothing after it runs' USING HINT = 'fix what failed (the first ERROR above), then write the script again from where the database stands (alembic current)'; END $stop$;
\\endif"""


@dataclass
class OfflineScript:
    """One script being written: what it runs first in every transaction (``prelude``: the
    run's settings and the enrollments lock), the schema of ``alembic_version``, the
    command that writes it again (``again``, with ``{found}`` for where the database
    stands), and where the database stands at the point being written (``expected``: the
    start revision, then each revision applied; None is base)."""

    impl: object  # Alembic's DefaultImpl: static_output, emit_begin, emit_commit
    schema: str
    prelude: list[str]
    again: str
    expected: str | None
    in_autocommit: bool = field(default=False)
    # What the script has made as this version makes it, unconditionally, at a point before
    # the one being written ("bookkeeping", "sync trigger"): the steps after it that only
    # repair what an older release left (1.0.0's missing trigger, 1.1.0's and 1.2.0's
    # functions) write nothing, since they cannot find anything to repair.
    installed: set[str] = field(default_factory=set)
    in_transaction: bool = field(default=False)  # inside a BEGIN of its own, in autocommit

    def step_starts(self) -> None:
        """Before a statement that runs outside any transaction: the stop if one before it
        failed (in a transaction, its ``BEGIN`` came with that check)."""
        if self.in_autocommit and not self.in_transaction:
            self.impl.static_output(STOP_IF_FAILED)

    @classmethod
    def start(
        cls,
        impl,
        script_directory,
        start: str | None,
        destination: str | None,
        schema: str,
        settings_sql: list[str],
    ) -> OfflineScript:
        """Write the top of the script (stop on error, then the start check in a transaction
        of its own), and from then on follow each ``BEGIN`` Alembic writes with
        :meth:`transaction_prelude`."""
        where = f"{start or 'base'}:{destination or 'base'}"
        tables = Tables(schema)
        prelude = [*settings_sql, lock.take_in_transaction_sql(f"alembic {where} --sql", tables)]
        script = cls(
            impl=impl,
            schema=schema,
            prelude=prelude,
            again=_command(script_directory, start, destination),
            expected=start,
        )
        impl.static_output(STOP_ON_ERROR)
        impl.static_output("BEGIN;")
        for statement in settings_sql:
            impl.static_output(statement + ";")
        impl.static_output(
            "-- The enrollments lock's table, where it is missing: it belongs to the role that\n"
            "-- runs this script and grants nothing to anyone.\n" + lock.create_sql(tables) + ";"
        )
        for statement in prelude[len(settings_sql) :]:
            impl.static_output(statement + ";")
        impl.static_output(start_check_sql(script_directory, start, destination, schema) + ";")
        impl.static_output("COMMIT;")
        emit_begin = impl.emit_begin

        def begin_with_prelude() -> None:
            impl.static_output(STOP_IF_FAILED)
            emit_begin()
            for statement in script.transaction_prelude():
                impl.static_output(statement + ";")

        impl.emit_begin = begin_with_prelude
        return script

    def transaction_prelude(self) -> list[str]:
        """What the script runs first in each transaction it opens: the settings, the lock,
        and the guard on where the script stands (:func:`version_guard_sql`)."""
        return [*self.prelude, version_guard_sql(self.expected, self.schema, self.again)]

    def autocommit_guard(self) -> tuple[str, str]:
        """What the script writes around the statements it runs outside a transaction (an
        index built concurrently, a batched backfill): psql's ``\\if`` runs them only where
        ``alembic_version`` holds what this point of the script expects (as
        :func:`version_guard_sql` does for a transaction). A query that fails leaves the
        variable unset, which ``\\if`` takes as false."""
        version = f"{_q(self.schema)}.alembic_version"
        want = self.expected or ""
        opening = f"""-- Only where the database stands at {want or "base"}: a step before this one failed otherwise.
\\unset enrollments_on_track
SELECT coalesce(pg_catalog.string_agg(version_num, ', ' ORDER BY version_num), '') OPERATOR(pg_catalog.=) '{want}' AS enrollments_on_track
FROM {version}
\\gset
\\if :enrollments_on_track"""
        closing = """\\else
\\echo 'skipped: the database is not where this step expects (a step before it failed)'
\\endif"""
        return opening, closing

    def again_from_here(self) -> str:
        """The command that writes the script again from where the database stands at this
        point (a failed gate's hint)."""
        return self.again.replace("{found}", self.expected or "base")

    def revision_applied(self, heads: set[str]) -> None:
        """After a revision's version update: check, in its transaction, that the version
        moved; the script stands at ``heads`` from here on."""
        self.impl.static_output(moved_check_sql(heads, self.schema) + ";")
        self.expected = ", ".join(sorted(heads)) or None
