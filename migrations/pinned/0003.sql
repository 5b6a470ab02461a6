-- Pinned offline SQL of revision 0003; digest 251d4ef49c9f.
-- Written by `python -m migrations.pins --write`. tests/test_pins.py fails when the
-- revision writes anything else. A released revision changes only to fix a defect: rewrite
-- this file in the same commit and give the reason in migrations/pinned/CHANGES.md.

-- ==== upgrade 0002 -> 0003 ====

-- Running upgrade 0002 -> 0003

-- What a backfill created or reactivated, so that a downgrade undoes exactly that.
CREATE TABLE "public".enrollment_backfill_changes (
    revision varchar(32) NOT NULL,
    enrollment_id integer NOT NULL,
    course_id integer NOT NULL,
    student_id integer NOT NULL,
    action varchar(20) NOT NULL,
    changed_at timestamp with time zone DEFAULT now() NOT NULL,
    row_xmin bigint,
    CONSTRAINT enrollment_backfill_changes_pkey PRIMARY KEY (revision, enrollment_id),
    CONSTRAINT ck_enrollment_backfill_changes_action CHECK (action IN ('created', 'reactivated'))
);

CREATE UNIQUE INDEX uq_enrollment_backfill_changes_enrollment ON "public".enrollment_backfill_changes (enrollment_id);

-- Each backfill run and its checkpoint, so that a cut run goes on where it stopped.
CREATE TABLE "public".enrollment_backfill_runs (
    id serial NOT NULL,
    source varchar(32) NOT NULL,
    started_at timestamp with time zone DEFAULT now() NOT NULL,
    finished_at timestamp with time zone,
    checkpoint bigint,
    sync_trigger boolean NOT NULL,
    batches integer DEFAULT 0 NOT NULL,
    created bigint DEFAULT 0 NOT NULL,
    reactivated bigint DEFAULT 0 NOT NULL,
    CONSTRAINT enrollment_backfill_runs_pkey PRIMARY KEY (id)
);

-- Only their owner (and whom the DBA grants) may read or write them.
REVOKE ALL ON "public".enrollment_backfill_changes, "public".enrollment_backfill_runs FROM PUBLIC;
REVOKE ALL ON SEQUENCE "public".enrollment_backfill_runs_id_seq FROM PUBLIC;

-- ==== downgrade 0003 -> 0002 ====

-- Running downgrade 0003 -> 0002

COMMIT;

BEGIN;

SET LOCAL search_path = pg_catalog, pg_temp;

SET LOCAL lock_timeout = '500ms';

SET LOCAL statement_timeout = '0';

DO $lock$
BEGIN
    IF NOT pg_catalog.pg_try_advisory_xact_lock(28550410422479921) THEN
        RAISE EXCEPTION 'the enrollments lock is held by %; nothing more of alembic 0003:0002 --sql was changed',
            (SELECT pg_catalog.string_agg(pg_catalog.format('pid %s (%s, connected since %s)',
            a.pid, a.application_name, a.backend_start), ', ')
         FROM pg_catalog.pg_locks AS l JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
             AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d
                               WHERE d.datname = pg_catalog.current_database())
             AND l.classid = (28550410422479921 >> 32)::oid
             AND l.objid = (28550410422479921 & 4294967295)::oid)
            USING HINT = 'run this script again when that session has finished';
    END IF;
END
$lock$;

-- The backfill's bookkeeping as it is kept since 1.1: a database 1.0.0 migrated lacks
-- the row version column, the index and the runs table (otherwise nothing happens).
DO $ensure$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                   WHERE attrelid = pg_catalog.to_regclass('"public".enrollment_backfill_changes') AND attname = 'row_xmin'
                     AND NOT attisdropped) THEN
        ALTER TABLE "public".enrollment_backfill_changes ADD COLUMN row_xmin bigint;
    END IF;
    IF pg_catalog.to_regclass('"public".uq_enrollment_backfill_changes_enrollment') IS NULL THEN
        -- Only backfills write this table, and they wait for the enrollments lock this run holds.
        CREATE UNIQUE INDEX uq_enrollment_backfill_changes_enrollment ON "public".enrollment_backfill_changes (enrollment_id);
    END IF;
    IF pg_catalog.to_regclass('"public".enrollment_backfill_runs') IS NULL THEN
        CREATE TABLE "public".enrollment_backfill_runs (
    id serial NOT NULL,
            source varchar(32) NOT NULL,
            started_at timestamp with time zone DEFAULT now() NOT NULL,
            finished_at timestamp with time zone,
            checkpoint bigint,
            sync_trigger boolean NOT NULL,
            batches integer DEFAULT 0 NOT NULL,
            created bigint DEFAULT 0 NOT NULL,
            reactivated bigint DEFAULT 0 NOT NULL,
            CONSTRAINT enrollment_backfill_runs_pkey PRIMARY KEY (id)
        );
    END IF;
    -- Nothing for PUBLIC (a default privilege may have given it some; 1.1 did not revoke).
    REVOKE ALL ON "public".enrollment_backfill_changes, "public".enrollment_backfill_runs FROM PUBLIC;
    REVOKE ALL ON SEQUENCE "public".enrollment_backfill_runs_id_seq FROM PUBLIC;
END
$ensure$;

COMMIT;

-- backfill undo (downgrade of 0003): restore what the backfill changed, where it is still as the backfill left it.
DO $undo$
DECLARE
    result record;
    lo bigint := -2147483649;
    size integer := 1000;
    attempt integer;
    started timestamptz;
    done_records bigint := 0;
    done_deleted bigint := 0;
    done_deactivated bigint := 0;
BEGIN
    LOOP
        attempt := 0;
        started := clock_timestamp();
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        PERFORM pg_catalog.set_config('lock_timeout', '500ms', true);
        PERFORM pg_catalog.set_config('statement_timeout', '0', true);
        IF NOT pg_catalog.pg_try_advisory_xact_lock(28550410422479921) THEN
            RAISE EXCEPTION 'backfill undo (downgrade of 0003): another session took the enrollments lock between two batches; nothing of this batch was written'
                USING HINT = 'run this script again when that session has finished: it goes on from its checkpoint';
        END IF;
        LOOP
            BEGIN
                WITH batch AS MATERIALIZED (
                    SELECT r.enrollment_id, r.course_id, r.student_id, r.action, r.row_xmin
                    FROM "public".enrollment_backfill_changes AS r
                    WHERE r.enrollment_id > lo
                    ORDER BY r.enrollment_id
                    LIMIT size
                ),
                locked AS MATERIALIZED (
                    -- the recorded rows as they are now, locked so that nobody changes them meanwhile
                    SELECT e.id, e.course_id, e.student_id, e.active, e.xmin::text::bigint AS row_xmin
                    FROM "public".course_enrollments AS e
                    WHERE e.id = ANY (ARRAY(SELECT b.enrollment_id FROM batch AS b))
                    ORDER BY e.id
                    FOR UPDATE
                ),
                as_left AS (
                    -- still exactly as the backfill left them
                    SELECT l.id, b.action
                    FROM locked AS l
                    JOIN batch AS b ON b.enrollment_id = l.id
                    WHERE l.course_id = b.course_id AND l.student_id = b.student_id AND l.active
                      AND (b.row_xmin IS NULL OR l.row_xmin = b.row_xmin)
                ),
                deleted AS (
                    DELETE FROM "public".course_enrollments AS e
                    WHERE e.id = ANY (ARRAY(SELECT a.id FROM as_left AS a WHERE a.action = 'created'))
                    RETURNING e.id
                ),
                deactivated AS (
                    UPDATE "public".course_enrollments AS e
                    SET active = false
                    WHERE e.id = ANY (ARRAY(SELECT a.id FROM as_left AS a WHERE a.action = 'reactivated'))
                    RETURNING e.id
                ),
                forgotten AS (
                    DELETE FROM "public".enrollment_backfill_changes AS r
                    WHERE r.enrollment_id = ANY (ARRAY(SELECT b.enrollment_id FROM batch AS b))
                )
                SELECT (SELECT max(enrollment_id) FROM batch) AS last_id,
                    (SELECT count(*) FROM batch) AS records,
                    (SELECT count(*) FROM deleted) AS deleted,
                    (SELECT count(*) FROM deactivated) AS deactivated
                INTO result;
                EXIT;
            EXCEPTION WHEN deadlock_detected OR serialization_failure OR lock_not_available THEN
                attempt := attempt + 1;
                IF clock_timestamp() - started > interval '600 s' THEN
                    RAISE;
                END IF;
                RAISE WARNING 'backfill undo (downgrade of 0003): a batch failed (%), rolled back; retrying (attempt %)', SQLERRM, attempt;
                PERFORM pg_sleep(least(5.0, random() * 0.1 * 2 ^ least(attempt, 6)));
            END;
        END LOOP;
        EXIT WHEN result.records = 0;
        done_records := done_records + result.records;
        done_deleted := done_deleted + result.deleted;
        done_deactivated := done_deactivated + result.deactivated;
        lo := result.last_id;
        COMMIT;
        -- toward 0.1 s a batch: x0.5 to x1.5 a step, within [100, 200000]
        IF result.records = size THEN
            size := least(200000, greatest(100, (size * least(1.5, greatest(0.5,
                0.1 / greatest(extract(epoch FROM clock_timestamp() - started), 0.000001))))::integer));
        END IF;
    END LOOP;
    RAISE NOTICE 'backfill undo (downgrade of 0003): % enrollments deleted, % deactivated', done_deleted, done_deactivated;
    IF done_records > done_deleted + done_deactivated THEN
        RAISE WARNING 'backfill undo (downgrade of 0003): % recorded enrollments were changed since the backfill and are left as they are', done_records - done_deleted - done_deactivated;
    END IF;
END
$undo$;

BEGIN;

SET LOCAL search_path = pg_catalog, pg_temp;

SET LOCAL lock_timeout = '500ms';

SET LOCAL statement_timeout = '0';

DO $lock$
BEGIN
    IF NOT pg_catalog.pg_try_advisory_xact_lock(28550410422479921) THEN
        RAISE EXCEPTION 'the enrollments lock is held by %; nothing more of alembic 0003:0002 --sql was changed',
            (SELECT pg_catalog.string_agg(pg_catalog.format('pid %s (%s, connected since %s)',
            a.pid, a.application_name, a.backend_start), ', ')
         FROM pg_catalog.pg_locks AS l JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
             AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d
                               WHERE d.datname = pg_catalog.current_database())
             AND l.classid = (28550410422479921 >> 32)::oid
             AND l.objid = (28550410422479921 & 4294967295)::oid)
            USING HINT = 'run this script again when that session has finished';
    END IF;
END
$lock$;

-- dropping the sync triggers: each attempt waits at most lock_timeout (500ms) for the tables, so the
-- application's writes never queue behind it for longer; retried until 10min.
DO $ddl$
DECLARE
    started timestamptz := pg_catalog.clock_timestamp();
    attempt integer := 0;
    holders text;
BEGIN
    LOOP
        BEGIN
            DROP TRIGGER IF EXISTS course_enrollments_sync_on_insert ON "public".group_members;
            DROP TRIGGER IF EXISTS course_enrollments_sync_on_update ON "public".group_members;
            DROP TRIGGER IF EXISTS course_enrollments_sync_on_user ON "public".users;
            DROP TRIGGER IF EXISTS course_enrollments_sync_on_group ON "public".groups;
            DROP TRIGGER IF EXISTS course_enrollments_sync_on_course ON "public".courses;
            EXIT;
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            attempt := attempt + 1;
            SELECT pg_catalog.string_agg(DISTINCT pg_catalog.format('pid %s (%s, %s, transaction open for %s)',
                       a.pid, coalesce(nullif(a.application_name, ''), 'no application_name'),
                       coalesce(a.state, 'state hidden: grant pg_monitor to see it'),
                       coalesce(pg_catalog.date_trunc('second', pg_catalog.clock_timestamp() - a.xact_start)::text, 'a time hidden')), '; ')
            INTO holders
            FROM pg_catalog.pg_locks AS l
            JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
            WHERE l.granted AND l.relation IN (pg_catalog.to_regclass('"public".group_members'), pg_catalog.to_regclass('"public".users'), pg_catalog.to_regclass('"public".groups'), pg_catalog.to_regclass('"public".courses'))
              AND l.mode IN ('AccessShareLock', 'RowShareLock', 'RowExclusiveLock', 'ShareUpdateExclusiveLock', 'ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock') AND l.pid <> pg_catalog.pg_backend_pid();
            holders := coalesce(holders, 'a session that has just let go');
            IF pg_catalog.clock_timestamp() - started > interval '600 s' THEN
                RAISE EXCEPTION USING ERRCODE = 'lock_not_available',
                    MESSAGE = pg_catalog.format('dropping the sync triggers: gave up after %s attempts over %s (lock_patience 10min); the tables are held by %s',
                        attempt, pg_catalog.date_trunc('second', pg_catalog.clock_timestamp() - started), holders);
            END IF;
            RAISE WARNING 'dropping the sync triggers: a lock was not granted within 500ms (attempt %); held by %; retrying', attempt, holders;
            PERFORM pg_catalog.pg_sleep(least(5.0, pg_catalog.random() * 0.2 * 2 ^ least(attempt, 6)));
        END;
    END LOOP;
END
$ddl$;

COMMIT;

BEGIN;

SET LOCAL search_path = pg_catalog, pg_temp;

SET LOCAL lock_timeout = '500ms';

SET LOCAL statement_timeout = '0';

DO $lock$
BEGIN
    IF NOT pg_catalog.pg_try_advisory_xact_lock(28550410422479921) THEN
        RAISE EXCEPTION 'the enrollments lock is held by %; nothing more of alembic 0003:0002 --sql was changed',
            (SELECT pg_catalog.string_agg(pg_catalog.format('pid %s (%s, connected since %s)',
            a.pid, a.application_name, a.backend_start), ', ')
         FROM pg_catalog.pg_locks AS l JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
             AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d
                               WHERE d.datname = pg_catalog.current_database())
             AND l.classid = (28550410422479921 >> 32)::oid
             AND l.objid = (28550410422479921 & 4294967295)::oid)
            USING HINT = 'run this script again when that session has finished';
    END IF;
END
$lock$;

DROP TABLE IF EXISTS "public".course_enrollments_sync_pending;

DROP FUNCTION IF EXISTS "public".course_enrollments_sync_members();

DROP FUNCTION IF EXISTS "public".course_enrollments_sync_user();

DROP FUNCTION IF EXISTS "public".course_enrollments_sync_group();

DROP FUNCTION IF EXISTS "public".course_enrollments_sync_course();

DROP FUNCTION IF EXISTS "public".course_enrollments_sync_apply();

COMMIT;

BEGIN;

SET LOCAL search_path = pg_catalog, pg_temp;

SET LOCAL lock_timeout = '500ms';

SET LOCAL statement_timeout = '0';

DO $lock$
BEGIN
    IF NOT pg_catalog.pg_try_advisory_xact_lock(28550410422479921) THEN
        RAISE EXCEPTION 'the enrollments lock is held by %; nothing more of alembic 0003:0002 --sql was changed',
            (SELECT pg_catalog.string_agg(pg_catalog.format('pid %s (%s, connected since %s)',
            a.pid, a.application_name, a.backend_start), ', ')
         FROM pg_catalog.pg_locks AS l JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
             AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d
                               WHERE d.datname = pg_catalog.current_database())
             AND l.classid = (28550410422479921 >> 32)::oid
             AND l.objid = (28550410422479921 & 4294967295)::oid)
            USING HINT = 'run this script again when that session has finished';
    END IF;
END
$lock$;

-- Stop unless the undo above emptied the record.
DO $empty$
BEGIN
    IF EXISTS (SELECT 1 FROM "public".enrollment_backfill_changes) THEN
        RAISE EXCEPTION 'enrollment_backfill_changes still holds records: refusing to drop it';
    END IF;
END
$empty$;

DROP TABLE "public".enrollment_backfill_runs;

DROP TABLE "public".enrollment_backfill_changes;
