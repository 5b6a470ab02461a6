-- Pinned offline SQL of revision 0003; digest 807a0e280916.
-- Written by `python -m migrations.pins --write`. tests/test_pins.py fails when the
-- revision writes anything else. A released revision changes only to fix a defect: rewrite
-- this file in the same commit and give the reason in migrations/pinned/CHANGES.md.

-- ==== upgrade 0002 -> 0003 ====

-- Running upgrade 0002 -> 0003

-- What a backfill created or reactivated, so that a downgrade undoes exactly that.
CREATE TABLE enrollment_backfill_changes (
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

CREATE UNIQUE INDEX uq_enrollment_backfill_changes_enrollment ON enrollment_backfill_changes (enrollment_id);

-- Each backfill run and its checkpoint, so that a cut run goes on where it stopped.
CREATE TABLE enrollment_backfill_runs (
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

-- ==== downgrade 0003 -> 0002 ====

-- Running downgrade 0003 -> 0002

COMMIT;

-- The backfill's bookkeeping as 1.1 keeps it: a database 1.0.0 migrated lacks the row
-- version column, the index and the runs table (otherwise nothing happens).
BEGIN;
SET LOCAL client_min_messages = warning;
ALTER TABLE enrollment_backfill_changes ADD COLUMN IF NOT EXISTS row_xmin bigint;
-- Only backfills write this table, and they wait for the enrollments lock this run holds.
-- squawk-ignore require-concurrent-index-creation
CREATE UNIQUE INDEX IF NOT EXISTS uq_enrollment_backfill_changes_enrollment ON enrollment_backfill_changes (enrollment_id);
CREATE TABLE IF NOT EXISTS enrollment_backfill_runs (
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
COMMIT;

-- Drop the sync triggers on group_members: a moment of ACCESS EXCLUSIVE, retried on a lock timeout.
DO $drop$
DECLARE
    attempt integer := 0;
BEGIN
    LOOP
        BEGIN
            DROP TRIGGER IF EXISTS course_enrollments_sync_on_insert ON group_members;
            DROP TRIGGER IF EXISTS course_enrollments_sync_on_update ON group_members;
            EXIT;
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            attempt := attempt + 1;
            IF attempt > 5 THEN
                RAISE;
            END IF;
            RAISE WARNING 'dropping the sync triggers on group_members: lock not granted, retrying (attempt % of 5)', attempt;
            PERFORM pg_sleep(random() * 0.2 * 2 ^ attempt);
        END;
    END LOOP;
END
$drop$;

-- Drop the sync triggers on users: a moment of ACCESS EXCLUSIVE, retried on a lock timeout.
DO $drop$
DECLARE
    attempt integer := 0;
BEGIN
    LOOP
        BEGIN
            DROP TRIGGER IF EXISTS course_enrollments_sync_on_user ON users;
            EXIT;
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            attempt := attempt + 1;
            IF attempt > 5 THEN
                RAISE;
            END IF;
            RAISE WARNING 'dropping the sync triggers on users: lock not granted, retrying (attempt % of 5)', attempt;
            PERFORM pg_sleep(random() * 0.2 * 2 ^ attempt);
        END;
    END LOOP;
END
$drop$;

-- Drop the sync triggers on groups: a moment of ACCESS EXCLUSIVE, retried on a lock timeout.
DO $drop$
DECLARE
    attempt integer := 0;
BEGIN
    LOOP
        BEGIN
            DROP TRIGGER IF EXISTS course_enrollments_sync_on_group ON groups;
            EXIT;
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            attempt := attempt + 1;
            IF attempt > 5 THEN
                RAISE;
            END IF;
            RAISE WARNING 'dropping the sync triggers on groups: lock not granted, retrying (attempt % of 5)', attempt;
            PERFORM pg_sleep(random() * 0.2 * 2 ^ attempt);
        END;
    END LOOP;
END
$drop$;

-- Drop the sync triggers on courses: a moment of ACCESS EXCLUSIVE, retried on a lock timeout.
DO $drop$
DECLARE
    attempt integer := 0;
BEGIN
    LOOP
        BEGIN
            DROP TRIGGER IF EXISTS course_enrollments_sync_on_course ON courses;
            EXIT;
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            attempt := attempt + 1;
            IF attempt > 5 THEN
                RAISE;
            END IF;
            RAISE WARNING 'dropping the sync triggers on courses: lock not granted, retrying (attempt % of 5)', attempt;
            PERFORM pg_sleep(random() * 0.2 * 2 ^ attempt);
        END;
    END LOOP;
END
$drop$;

DROP FUNCTION IF EXISTS course_enrollments_sync_members();
DROP FUNCTION IF EXISTS course_enrollments_sync_user();
DROP FUNCTION IF EXISTS course_enrollments_sync_group();
DROP FUNCTION IF EXISTS course_enrollments_sync_course();

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
        LOOP
            BEGIN
                WITH batch AS MATERIALIZED (
                    SELECT r.enrollment_id, r.course_id, r.student_id, r.action, r.row_xmin
                    FROM enrollment_backfill_changes AS r
                    WHERE r.enrollment_id > lo
                    ORDER BY r.enrollment_id
                    LIMIT size
                ),
                locked AS MATERIALIZED (
                    -- the recorded rows as they are now, locked so that nobody changes them meanwhile
                    SELECT e.id, e.course_id, e.student_id, e.active, e.xmin::text::bigint AS row_xmin
                    FROM course_enrollments AS e
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
                    DELETE FROM course_enrollments AS e
                    WHERE e.id = ANY (ARRAY(SELECT a.id FROM as_left AS a WHERE a.action = 'created'))
                    RETURNING e.id
                ),
                deactivated AS (
                    UPDATE course_enrollments AS e
                    SET active = false
                    WHERE e.id = ANY (ARRAY(SELECT a.id FROM as_left AS a WHERE a.action = 'reactivated'))
                    RETURNING e.id
                ),
                forgotten AS (
                    DELETE FROM enrollment_backfill_changes AS r
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
                IF attempt > 5 THEN
                    RAISE;
                END IF;
                RAISE WARNING 'backfill undo (downgrade of 0003): a batch failed (%), rolled back; retrying (attempt % of 5)', SQLERRM, attempt;
                PERFORM pg_sleep(random() * 0.1 * 2 ^ attempt);
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

-- Stop unless the undo above emptied the record.
DO $empty$
BEGIN
    IF EXISTS (SELECT 1 FROM enrollment_backfill_changes) THEN
        RAISE EXCEPTION 'enrollment_backfill_changes still holds records: refusing to drop it';
    END IF;
END
$empty$;

DROP TABLE enrollment_backfill_runs;

DROP TABLE enrollment_backfill_changes;
