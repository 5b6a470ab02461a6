"""The undo of the backfill, below revision 0004: exact, and losing nothing of anyone's.

It walks 1.3's record (``enrollment_backfill_batches``) newest first, whole record rows up
to about ``size`` enrollments a batch, then 1.2's (``enrollment_backfill_changes``) by
enrollment id. Each batch is one call of ``course_enrollments_undo_batch(source, lo,
size)``, a function this module installs for the undo and drops with it, so that the
online run and the script run the same SQL:

1. it locks the batch's enrollments ``FOR UPDATE``, in (course, student) order (the order
   the sync trigger locks them in): a session that references, claims or changes one of
   them meanwhile is waited for, and none can afterwards;
2. with a snapshot taken after those locks, it asks every foreign key that references
   ``course_enrollments`` (found in the catalog: the legacy application's tables, or
   later ones) which of the batch's rows another table references;
3. it deletes what a backfill created and deactivates what it reactivated, where the row
   is still the version the backfill wrote, unless another table references it or the
   application made the pair its own since (the sync trigger's claim in
   ``enrollment_backfill_claims``, or 1.2's ``claimed_at``: a membership it wrote after
   the backfill; or, where no claim could be marked, an active membership of the pair
   whose ``xmin`` is newer than the record's); it forgets the batch's records and claims either way. Still the version
   the backfill wrote: the row's ``xmin`` is the one the record keeps (1.0.0's rows, which
   keep none: same pair, still active).

Before any batch, the undo stops, keeping the record, when the database was moved since the
backfill (a dump and restore: every ``xmin`` is new, see :func:`moved_sql`); ``-x
undo_after_move=values`` judges the moved rows by their values instead.

So it never deletes or changes a row of another table (no ``ON DELETE`` action can fire),
and a referenced or claimed enrollment stays as it is, active: the application relies on
it. One warning line counts what it kept, by referencing table. ``-x
undo_referenced=refuse`` stops before any change instead, naming the tables.
"""

from __future__ import annotations

import json
import logging

from sqlalchemy.engine import Connection

from enrollments_phase1.batching import Progress, StepResult, run_batches, transaction
from enrollments_phase1.migration_env import MigrationSettings
from enrollments_phase1.migrations.shared.v4.backfill import (
    STEER_DECLARE,
    ScriptBatches,
    retry_sql,
    steer_sql,
    throttle_sql,
    transaction_start_sql,
)
from enrollments_phase1.migrations.shared.v4.definition import (
    Tables,
    counted,
    indent,
    quote_literal,
)
from enrollments_phase1.migrations.shared.v4.headers import header
from enrollments_phase1.migrations.shared.v4.run import execute_block, in_transaction, run_block

log = logging.getLogger("migrations")

FUNCTION = "course_enrollments_undo_batch"


def foreign_keys_sql(t: Tables) -> str:
    """Every foreign key referencing ``course_enrollments`` (on a partitioned table, its
    parent's): the referencing table, and both column lists ready for a row comparison."""
    return f"""SELECT c.conrelid::pg_catalog.regclass::text AS referencing,
    (SELECT pg_catalog.string_agg('r.' || pg_catalog.quote_ident(a.attname), ', ' ORDER BY k.n)
     FROM pg_catalog.unnest(c.conkey) WITH ORDINALITY AS k(attnum, n)
     JOIN pg_catalog.pg_attribute AS a ON a.attrelid = c.conrelid AND a.attnum = k.attnum)
        AS referencing_columns,
    (SELECT pg_catalog.string_agg('e.' || pg_catalog.quote_ident(a.attname), ', ' ORDER BY k.n)
     FROM pg_catalog.unnest(c.confkey) WITH ORDINALITY AS k(attnum, n)
     JOIN pg_catalog.pg_attribute AS a ON a.attrelid = c.confrelid AND a.attnum = k.attnum)
        AS referenced_columns
FROM pg_catalog.pg_constraint AS c
WHERE c.contype = 'f' AND c.confrelid = {t.regclass("course_enrollments")} AND c.conparentid = 0
ORDER BY 1"""


BEFORE_ANY_ID = -2147483649  # below every int4 id

# Where each record is walked from: the batches newest first, then 1.2's record by id.
SOURCES = {"batches": 2**62, "changes": BEFORE_ANY_ID}


def function_sql(t: Tables, by_values: bool = False) -> list[str]:
    """The batch function (run by the role that migrates: SECURITY INVOKER), and its
    privileges: nobody else may call it. ``by_values`` (``-x undo_after_move=values``): a
    record row written before the database was moved (its own ``xmin`` is no longer the
    one it recorded) is judged by its values alone: still active, same pair."""
    fk_check = (
        "pg_catalog.format('SELECT coalesce(pg_catalog.array_agg(e.id), ''{}'') FROM "
        f"{t.course_enrollments.replace(chr(39), chr(39) * 2)} AS e WHERE e.id = ANY ($1) "
        "AND EXISTS (SELECT 1 FROM %s AS r WHERE (%s) = (%s))', fk.referencing, "
        "fk.referencing_columns, fk.referenced_columns)"
    )
    return [
        f"""-- One batch of the undo (see migrations/shared/v4/undo.py): installed for the undo and
-- dropped with it.
CREATE OR REPLACE FUNCTION {getattr(t, FUNCTION)}(source text, lo bigint, size integer)
RETURNS TABLE (last_id bigint, records bigint, deleted_rows bigint, deactivated_rows bigint,
               referenced_rows bigint, claimed_rows bigint, changed_rows bigint, by_table jsonb)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $undo$
#variable_conflict use_column
DECLARE
    picked bigint[];  -- the record rows of this batch (batches: ids; changes: enrollment ids)
    last_key bigint;
    e_ids integer[];
    e_actions text[];
    e_xmins bigint[];
    e_courses integer[];
    e_students integer[];
    e_claimed boolean[];
    ids integer[];
    kept integer[] := '{{}}';
    found integer[];
    fk record;
    tally jsonb := '{{}}';
    by_values constant boolean := {"true" if by_values else "false"};
BEGIN
    IF source = 'batches' THEN
        -- 1.3's record, newest first: whole rows, up to about size enrollments.
        WITH rows_in_order AS (
            SELECT b.id, b.created, b.reactivated,
                CASE WHEN by_values AND b.xmin::text::bigint <> b.row_xmin THEN NULL
                     ELSE b.row_xmin END AS row_xmin,
                pg_catalog.sum(pg_catalog.cardinality(b.created) + pg_catalog.cardinality(b.reactivated))
                    OVER (ORDER BY b.id DESC) AS running,
                pg_catalog.cardinality(b.created) + pg_catalog.cardinality(b.reactivated) AS own
            FROM {t.enrollment_backfill_batches} AS b
            WHERE b.id < lo ORDER BY b.id DESC LIMIT size
        ),
        chosen AS (
            SELECT * FROM rows_in_order AS r WHERE r.running - r.own < size OR r.running = r.own
        ),
        entries AS (
            SELECT x.id AS enrollment_id, 'created' AS action, c.row_xmin
            FROM chosen AS c CROSS JOIN LATERAL pg_catalog.unnest(c.created) AS x(id)
            UNION ALL
            SELECT x.id, 'reactivated', c.row_xmin
            FROM chosen AS c CROSS JOIN LATERAL pg_catalog.unnest(c.reactivated) AS x(id)
        )
        SELECT (SELECT pg_catalog.array_agg(c.id) FROM chosen AS c),
            (SELECT pg_catalog.min(c.id) FROM chosen AS c),
            pg_catalog.array_agg(x.enrollment_id), pg_catalog.array_agg(x.action),
            pg_catalog.array_agg(x.row_xmin), pg_catalog.array_agg(NULL::integer),
            pg_catalog.array_agg(NULL::integer), pg_catalog.array_agg(false)
        INTO picked, last_key, e_ids, e_actions, e_xmins, e_courses, e_students, e_claimed
        FROM entries AS x;
    ELSE
        -- 1.0 to 1.2's record, by enrollment id.
        SELECT pg_catalog.array_agg(x.enrollment_id::bigint), pg_catalog.max(x.enrollment_id),
            pg_catalog.array_agg(x.enrollment_id), pg_catalog.array_agg(x.action::text),
            pg_catalog.array_agg(x.row_xmin), pg_catalog.array_agg(x.course_id),
            pg_catalog.array_agg(x.student_id), pg_catalog.array_agg(x.claimed_at IS NOT NULL)
        INTO picked, last_key, e_ids, e_actions, e_xmins, e_courses, e_students, e_claimed
        FROM (
            SELECT r.enrollment_id, r.action, r.course_id, r.student_id, r.claimed_at,
                CASE WHEN by_values AND r.claimed_at IS NULL
                          AND r.xmin::text::bigint <> r.row_xmin THEN NULL
                     ELSE r.row_xmin END AS row_xmin
            FROM {t.enrollment_backfill_changes} AS r
            WHERE r.enrollment_id > lo ORDER BY r.enrollment_id LIMIT size
        ) AS x;
    END IF;
    IF picked IS NULL THEN
        RETURN QUERY SELECT NULL::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint,
            0::bigint, '{{}}'::jsonb;
        RETURN;
    END IF;
    SELECT pg_catalog.array_agg(DISTINCT i.id) INTO ids FROM pg_catalog.unnest(e_ids) AS i(id);
    ids := coalesce(ids, '{{}}');
    -- 1. The batch's rows, locked in (course, student) order as the sync trigger locks them.
    PERFORM 1 FROM {t.course_enrollments} AS e
    WHERE e.id = ANY (ids) ORDER BY e.course_id, e.student_id FOR UPDATE;
    -- 2. Which of them another table references (a snapshot taken after the locks).
    FOR fk IN
{indent(foreign_keys_sql(t), "        ")}
    LOOP
        EXECUTE {fk_check} INTO found USING ids;
        IF pg_catalog.cardinality(found) > 0 THEN
            tally := tally || pg_catalog.jsonb_build_object(fk.referencing,
                coalesce((tally ->> fk.referencing)::bigint, 0) + pg_catalog.cardinality(found));
            kept := kept || found;
        END IF;
    END LOOP;
    -- 3. Undo what is still as the backfill left it (its version: the row's xmin is the
    --    batch's), unreferenced and unclaimed; forget the batch's records and claims.
    RETURN QUERY
    WITH batch AS MATERIALIZED (
        SELECT b.enrollment_id, b.action, b.row_xmin, b.course_id, b.student_id, b.claimed
        FROM ROWS FROM (pg_catalog.unnest(e_ids), pg_catalog.unnest(e_actions),
            pg_catalog.unnest(e_xmins), pg_catalog.unnest(e_courses),
            pg_catalog.unnest(e_students), pg_catalog.unnest(e_claimed))
            AS b(enrollment_id, action, row_xmin, course_id, student_id, claimed)
    ),
    claims AS MATERIALIZED (
        SELECT k.enrollment_id FROM {t.enrollment_backfill_claims} AS k
        WHERE k.enrollment_id = ANY (ids)
    ),
    now_rows AS MATERIALIZED (
        SELECT e.id, e.course_id, e.student_id, e.active, e.xmin::text::bigint AS row_xmin
        FROM {t.course_enrollments} AS e WHERE e.id = ANY (ids)
    ),
    written_since AS MATERIALIZED (
        -- pairs with an active membership written after the record (by xmin): the
        -- application's too, where no claim marked it (1.1.0 had none; a backfill run
        -- ahead of time at 0003 has no sync trigger until 0004)
        SELECT n.id FROM batch AS b JOIN now_rows AS n ON n.id = b.enrollment_id
        WHERE b.row_xmin IS NOT NULL AND EXISTS (
            SELECT 1 FROM {t.group_members} AS gm JOIN {t.groups} AS g ON g.id = gm.group_id
            WHERE gm.user_id = n.student_id AND g.course_id = n.course_id AND gm.active
              AND pg_catalog.age(gm.xmin) < pg_catalog.age(b.row_xmin::text::xid))
    ),
    classified AS MATERIALIZED (
        SELECT b.enrollment_id, b.action,
            CASE
                WHEN b.enrollment_id = ANY (kept) THEN 'referenced'
                WHEN b.claimed OR b.enrollment_id IN (SELECT k.enrollment_id FROM claims AS k)
                     OR b.enrollment_id IN (SELECT w.id FROM written_since AS w)
                    THEN 'claimed'
                WHEN n.id IS NOT NULL AND n.active
                     AND (b.course_id IS NULL
                          OR (n.course_id = b.course_id AND n.student_id = b.student_id))
                     AND (b.row_xmin IS NULL OR n.row_xmin = b.row_xmin) THEN 'as left'
                ELSE 'changed'
            END AS state
        FROM batch AS b LEFT JOIN now_rows AS n ON n.id = b.enrollment_id
    ),
    deleted AS (
        DELETE FROM {t.course_enrollments} AS e
        WHERE e.id IN (SELECT c.enrollment_id FROM classified AS c
                       WHERE c.state = 'as left' AND c.action = 'created')
        RETURNING e.id
    ),
    deactivated AS (
        UPDATE {t.course_enrollments} AS e SET active = false
        WHERE e.id IN (SELECT c.enrollment_id FROM classified AS c
                       WHERE c.state = 'as left' AND c.action = 'reactivated')
        RETURNING e.id
    ),
    forgotten_batches AS (
        DELETE FROM {t.enrollment_backfill_batches} AS r
        WHERE source = 'batches' AND r.id = ANY (picked)
    ),
    forgotten_changes AS (
        DELETE FROM {t.enrollment_backfill_changes} AS r
        WHERE source = 'changes' AND r.enrollment_id = ANY (ids)
    ),
    forgotten_claims AS (
        DELETE FROM {t.enrollment_backfill_claims} AS k WHERE k.enrollment_id = ANY (ids)
    )
    SELECT last_key, pg_catalog.cardinality(e_ids)::bigint,
        (SELECT pg_catalog.count(*) FROM deleted), (SELECT pg_catalog.count(*) FROM deactivated),
        (SELECT pg_catalog.count(*) FROM classified AS c WHERE c.state = 'referenced'),
        (SELECT pg_catalog.count(*) FROM classified AS c WHERE c.state = 'claimed'),
        (SELECT pg_catalog.count(*) FROM classified AS c WHERE c.state = 'changed'),
        tally;
END
$undo$""",
        f"REVOKE ALL ON FUNCTION {getattr(t, FUNCTION)}(text, bigint, integer) FROM PUBLIC",
    ]


def drop_function_sql(t: Tables) -> list[str]:
    """The function, and 1.2's (its arguments were (bigint, integer)) where a cut undo
    left it."""
    return [
        f"DROP FUNCTION IF EXISTS {getattr(t, FUNCTION)}(text, bigint, integer)",
        f"DROP FUNCTION IF EXISTS {getattr(t, FUNCTION)}(bigint, integer)",
    ]


def moved_sql(t: Tables, what: str) -> str:
    """A DO block that stops, before any change and keeping the record, when the database
    was moved since the backfill: a record row's own ``xmin`` is no longer the ``xmin`` it
    recorded for the rows it wrote in the same statement (a dump and restore, logical
    replication to a new cluster or a tool's table rewrite writes every row again; ``VACUUM
    FULL`` and ``CLUSTER`` keep it). Then no ``xmin`` tells what the application changed
    since, and an undo by ``xmin`` would keep everything and forget the record. 1.2's
    claimed rows (their ``claimed_at`` was written later) and 1.0.0's (no ``row_xmin``)
    say nothing either way."""
    return f"""-- Was the database moved since the backfill (dump and restore, logical replication)?
-- Then stop, keeping the record: nothing tells any more what the application changed.
DO $moved$
DECLARE
    moved bigint;
BEGIN
    SELECT (SELECT coalesce(pg_catalog.sum(pg_catalog.cardinality(b.created)
                                                      + pg_catalog.cardinality(b.reactivated)), 0)
            FROM {t.enrollment_backfill_batches} AS b
            WHERE b.xmin::text::bigint <> b.row_xmin)
        + (SELECT pg_catalog.count(*) FROM {t.enrollment_backfill_changes} AS r
           WHERE r.claimed_at IS NULL AND r.xmin::text::bigint <> r.row_xmin)
    INTO moved;
    IF moved > 0 THEN
        RAISE EXCEPTION '{what}: the database was moved since the backfill (a dump and restore, logical replication or a table rewrite gave the record of % enrollments new transaction ids), so it cannot tell what the application changed since; nothing was changed and the record is kept (-x undo_after_move=values undoes what is still active for its pair, unreferenced and unclaimed)',
            {counted("moved")}
            USING HINT = 'docs/commands.md, "Rolling back after a move", says what -x undo_after_move=values cannot see';
    END IF;
END
$moved$"""


def refuse_sql(t: Tables, what: str) -> str:
    """``-x undo_referenced=refuse``: a DO block that stops, before any change, when any
    recorded enrollment is referenced by another table, naming the tables."""
    count = (
        "pg_catalog.format('SELECT pg_catalog.count(*) FROM "
        f"(SELECT r.enrollment_id FROM {t.enrollment_backfill_changes.replace(chr(39), chr(39) * 2)} AS r "
        f"UNION SELECT u.id FROM {t.enrollment_backfill_batches.replace(chr(39), chr(39) * 2)} AS b, "
        "pg_catalog.unnest(b.created OPERATOR(pg_catalog.||) b.reactivated) AS u(id)) AS c JOIN "
        f"{t.course_enrollments.replace(chr(39), chr(39) * 2)} AS e ON e.id = c.enrollment_id "
        "WHERE EXISTS (SELECT 1 FROM %s AS r WHERE (%s) = (%s))', fk.referencing, "
        "fk.referencing_columns, fk.referenced_columns)"
    )
    return f"""-- -x undo_referenced=refuse: stop before any change if another table references a
-- recorded enrollment.
DO $refuse$
DECLARE
    fk record;
    n bigint;
    found text := '';
BEGIN
    FOR fk IN
{indent(foreign_keys_sql(t), "        ")}
    LOOP
        EXECUTE {count} INTO n;
        IF n > 0 THEN
            found := found || CASE WHEN found = '' THEN '' ELSE ', ' END
                || pg_catalog.format('%s (%s)', fk.referencing, n);
        END IF;
    END LOOP;
    IF found <> '' THEN
        RAISE EXCEPTION '{what}: recorded enrollments are referenced by other tables: %; nothing was changed (-x undo_referenced=refuse)', found
            USING HINT = 'without -x undo_referenced=refuse the undo keeps the referenced enrollments as they are and undoes the rest';
    END IF;
END
$refuse$"""


def kept_line(what: str, referenced: int, claimed: int, changed: int, by_table: dict) -> str:
    """The one warning line: what the undo kept as it is, and why."""
    parts = []
    if referenced:
        tables = ", ".join(f"{name} {count:,}" for name, count in sorted(by_table.items()))
        parts.append(f"{referenced:,} that other tables reference ({tables})")
    if claimed:
        parts.append(
            f"{claimed:,} the application made its own since the backfill (it wrote a "
            "membership of the pair)"
        )
    if changed:
        parts.append(f"{changed:,} changed since the backfill")
    total = referenced + claimed + changed
    return f"{what}: kept {total:,} recorded enrollments as they are: {'; '.join(parts)}"


def undo_online(connection: Connection, t: Tables, what: str, settings: MigrationSettings) -> None:
    """The undo on ``connection`` (outside a transaction), batched: 1.3's record newest
    first, then 1.2's; one warning line."""
    if settings.undo_after_move == "refuse":
        run_block(connection, moved_sql(t, what))
    if settings.undo_referenced == "refuse":
        run_block(connection, refuse_sql(t, what))
    with in_transaction(connection):
        for statement in function_sql(t, settings.undo_after_move == "values"):
            execute_block(connection, statement)
    by_table: dict[str, int] = {}
    counts: dict[str, int] = {}
    for source, start in SOURCES.items():

        def step(conn: Connection, after: int, size: int, source: str = source) -> StepResult:
            row = conn.exec_driver_sql(
                f"SELECT * FROM {getattr(t, FUNCTION)}('{source}', {int(after)}, {int(size)})"
            ).one()
            tally = row.by_table if isinstance(row.by_table, dict) else json.loads(row.by_table)
            for name, count in tally.items():
                by_table[name] = by_table.get(name, 0) + int(count)
            return StepResult(
                last_key=row.last_id,
                rows=int(row.records),
                counts={
                    "deleted": int(row.deleted_rows),
                    "deactivated": int(row.deactivated_rows),
                    "referenced": int(row.referenced_rows),
                    "claimed": int(row.claimed_rows),
                    "changed": int(row.changed_rows),
                },
            )

        with transaction(connection):
            total = connection.exec_driver_sql(RECORDS[source](t)).scalar_one()
        if not total:
            continue
        progress = Progress("undo", total, unit="records")
        totals = run_batches(
            connection,
            step,
            start,
            settings.batch,
            progress,
            steered=t,
            activity={"kind": "undo", "what": what, "total": total},
        )
        for name, value in totals.counts.items():
            counts[name] = counts.get(name, 0) + value
        progress.close(
            f"{totals.counts.get('deleted', 0):,} deleted, "
            f"{totals.counts.get('deactivated', 0):,} deactivated"
        )
    count = counts.get
    log.info(
        "%s: %s enrollments deleted, %s deactivated",
        what,
        f"{count('deleted', 0):,}",
        f"{count('deactivated', 0):,}",
    )
    referenced, claimed, changed = count("referenced", 0), count("claimed", 0), count("changed", 0)
    if referenced + claimed + changed:
        log.warning("%s", kept_line(what, referenced, claimed, changed, by_table))


# How many records each holds (enrollments, for the progress).
RECORDS = {
    "batches": lambda t: (
        "SELECT coalesce(sum(cardinality(created) + cardinality(reactivated)), 0) "
        f"FROM {t.enrollment_backfill_batches}"
    ),
    "changes": lambda t: f"SELECT count(*) FROM {t.enrollment_backfill_changes}",
}


def offline_undo_sql(t: Tables, what: str, settings: MigrationSettings) -> str:
    """The undo as a DO block for psql (the function installed before it): a ``COMMIT``
    per batch, the settings and the lock again after each, 1.3's record newest first, then
    1.2's; one warning line at the end."""
    batch = ScriptBatches.of(settings)
    function = getattr(t, FUNCTION)
    starts = ", ".join(f"({quote_literal(k)}, {v})" for k, v in SOURCES.items())
    return f"""-- {what}: restore what the backfill changed, where it is still as the backfill left it,
-- keeping what other tables reference and what the application made its own.
DO $undo$
DECLARE
    result record;
    source record;
    lo bigint;
    size integer := {batch.first_size};
    attempt integer;
    started timestamptz;
    done_deleted bigint := 0;
    done_deactivated bigint := 0;
    done_referenced bigint := 0;
    done_claimed bigint := 0;
    done_changed bigint := 0;
    tally jsonb := '{{}}';
    parts text[] := '{{}}';
{STEER_DECLARE}
BEGIN
    FOR source IN SELECT s.name, s.start FROM (VALUES {starts}) AS s(name, start) LOOP
        lo := source.start;
        LOOP
            attempt := 0;
{transaction_start_sql(settings, what, "            ", t)}{indent(steer_sql(t, settings, what), "    ")}
            started := clock_timestamp();
            LOOP
                BEGIN
                    SELECT * INTO result FROM {function}(source.name, lo, size);
                    EXIT;
{indent(retry_sql(settings, what), "    ")}
            END LOOP;
            EXIT WHEN result.records = 0;
            done_deleted := done_deleted + result.deleted_rows;
            done_deactivated := done_deactivated + result.deactivated_rows;
            done_referenced := done_referenced + result.referenced_rows;
            done_claimed := done_claimed + result.claimed_rows;
            done_changed := done_changed + result.changed_rows;
            tally := tally || coalesce((
                SELECT jsonb_object_agg(j.key, coalesce((tally ->> j.key)::bigint, 0) + j.value::bigint)
                FROM jsonb_each_text(result.by_table) AS j), '{{}}');
            lo := result.last_id;
            COMMIT;{indent(throttle_sql("result.records"), "    ")}
        END LOOP;
        COMMIT;
    END LOOP;
    RAISE NOTICE '{what}: % enrollments deleted, % deactivated', done_deleted, done_deactivated;
    IF done_referenced > 0 THEN
        parts := parts || format('%s that other tables reference (%s)', done_referenced,
            (SELECT string_agg(format('%s %s', j.key, j.value), ', ' ORDER BY j.key)
             FROM jsonb_each_text(tally) AS j));
    END IF;
    IF done_claimed > 0 THEN
        parts := parts || format('%s the application made its own since the backfill (it wrote a membership of the pair)', done_claimed);
    END IF;
    IF done_changed > 0 THEN
        parts := parts || format('%s changed since the backfill', done_changed);
    END IF;
    IF cardinality(parts) > 0 THEN
        RAISE WARNING '{what}: kept % recorded enrollments as they are: %',
            done_referenced + done_claimed + done_changed, array_to_string(parts, '; ');
    END IF;
    COMMIT;
END
$undo$"""


def undo(connection: Connection | None, t: Tables, what: str, settings: MigrationSettings) -> None:
    """Online or, with ``connection`` None, written to the script (in Alembic's autocommit
    block): the refuse check, the batch function, the batches."""
    if connection is not None:
        undo_online(connection, t, what, settings)
        return
    header("undo")
    if settings.undo_after_move == "refuse":
        run_block(None, moved_sql(t, what))
    if settings.undo_referenced == "refuse":
        run_block(None, refuse_sql(t, what))
    with in_transaction(None):
        for statement in function_sql(t, settings.undo_after_move == "values"):
            execute_block(None, statement)
    execute_block(None, offline_undo_sql(t, what, settings))
