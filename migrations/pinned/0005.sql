-- Pinned offline SQL of revision 0005; digest 5c5a003e2e81.
-- Written by `python -m enrollments_phase1.migrations.pins --write`. tests/test_pins.py
-- fails when the revision writes anything else. A released revision changes only to fix a
-- defect: rewrite this file in the same commit and give the reason in
-- migrations/pinned/CHANGES.md.

-- ==== upgrade 0004 -> 0005 ====

-- Running upgrade 0004 -> 0005

COMMIT;

-- Only where the database stands at 0004: a step before this one failed otherwise.
\unset enrollments_on_track
SELECT coalesce(pg_catalog.string_agg(version_num, ', ' ORDER BY version_num), '') OPERATOR(pg_catalog.=) '0004' AS enrollments_on_track
FROM "public".alembic_version
\gset
\if :enrollments_on_track

-- Stop here if a statement above failed (psql goes on after an error without ON_ERROR_STOP).
\unset enrollments_ok_00000
\set enrollments_ok_:LAST_ERROR_SQLSTATE
\if :{?enrollments_ok_00000}
\else
\set ON_ERROR_STOP on
DO $stop$ BEGIN RAISE EXCEPTION 'a statement above failed: this script stops here, and nothing after it runs' USING HINT = 'fix what failed (the first ERROR above), then write the script again from where the database stands (alembic current)'; END $stop$;
\endif

BEGIN;

SET LOCAL search_path = pg_catalog, pg_temp;

SET LOCAL lock_timeout = '500ms';

SET LOCAL statement_timeout = '0';

DO $lock$
DECLARE
    held boolean;
BEGIN
    BEGIN  -- the table's lock, then the advisory lock unless a role that may deploy holds it
        LOCK TABLE "public".enrollments_lock IN EXCLUSIVE MODE NOWAIT;
        held := NOT pg_catalog.pg_try_advisory_xact_lock(28550410422479921)
            AND EXISTS (SELECT 1
            FROM pg_catalog.pg_locks AS l LEFT JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
            LEFT JOIN pg_catalog.pg_locks AS own_xid ON l.pid IS NULL AND own_xid.pid IS NULL
                AND own_xid.locktype = 'transactionid' AND own_xid.virtualtransaction = l.virtualtransaction
            LEFT JOIN pg_catalog.pg_prepared_xacts AS px ON px.transaction = own_xid.transactionid
            WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()) AND l.classid = (28550410422479921 >> 32)::oid AND l.objid = (28550410422479921 & 4294967295)::oid AND coalesce(pg_catalog.has_table_privilege(coalesce(a.usesysid, (SELECT r.oid FROM pg_catalog.pg_roles AS r WHERE r.rolname = px.owner)), pg_catalog.to_regclass('"public".enrollments_lock'), 'INSERT, UPDATE, DELETE, TRUNCATE'), true));
    EXCEPTION WHEN lock_not_available THEN
        held := true;
    END;
    IF held THEN
        RAISE EXCEPTION 'the enrollments lock is held by %; nothing more of alembic 0004:0005 --sql was changed',
            (SELECT pg_catalog.string_agg(CASE WHEN l.pid IS NULL
                THEN pg_catalog.format('prepared transaction %s (COMMIT PREPARED or ROLLBACK PREPARED ends it)',
                    coalesce(pg_catalog.quote_literal(px.gid), '(gid not readable)'))
                ELSE pg_catalog.format('pid %s (%s, connected since %s)', a.pid, a.application_name, a.backend_start)
                END, ', ')
            FROM pg_catalog.pg_locks AS l LEFT JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
            LEFT JOIN pg_catalog.pg_locks AS own_xid ON l.pid IS NULL AND own_xid.pid IS NULL
                AND own_xid.locktype = 'transactionid' AND own_xid.virtualtransaction = l.virtualtransaction
            LEFT JOIN pg_catalog.pg_prepared_xacts AS px ON px.transaction = own_xid.transactionid
            WHERE l.pid IS DISTINCT FROM pg_catalog.pg_backend_pid()
                  AND ((l.locktype = 'relation' AND l.granted AND l.mode <> 'AccessShareLock'
                        AND l.relation = pg_catalog.to_regclass('"public".enrollments_lock') AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()))
                       OR (l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()) AND l.classid = (28550410422479921 >> 32)::oid AND l.objid = (28550410422479921 & 4294967295)::oid AND coalesce(pg_catalog.has_table_privilege(coalesce(a.usesysid, (SELECT r.oid FROM pg_catalog.pg_roles AS r WHERE r.rolname = px.owner)), pg_catalog.to_regclass('"public".enrollments_lock'), 'INSERT, UPDATE, DELETE, TRUNCATE'), true))))
            USING HINT = 'run this script again when that session has finished';
    ELSIF NOT pg_catalog.pg_try_advisory_xact_lock(28550410422479921) THEN
        RAISE WARNING '% holds the advisory lock of releases before 1.3 but may not run a deploy (no INSERT, UPDATE, DELETE or TRUNCATE on "public".enrollments_lock): not waited for',
            (SELECT pg_catalog.string_agg(i.who, ', ') FROM (
                SELECT pg_catalog.format('pid %s (role %s, %s)', a.pid, a.usename,
                    coalesce(nullif(a.application_name, ''), 'no application_name'))
                FROM pg_catalog.pg_locks AS l JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
                WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()) AND l.classid = (28550410422479921 >> 32)::oid AND l.objid = (28550410422479921 & 4294967295)::oid AND NOT coalesce(pg_catalog.has_table_privilege(a.usesysid, pg_catalog.to_regclass('"public".enrollments_lock'), 'INSERT, UPDATE, DELETE, TRUNCATE'), true)) AS i(who));
    END IF;
END
$lock$;

DO $where$
DECLARE
    found text := '';
BEGIN
    IF pg_catalog.to_regclass('"public".alembic_version') IS NOT NULL THEN
        SELECT coalesce(pg_catalog.string_agg(version_num, ', ' ORDER BY version_num), '') INTO found FROM "public".alembic_version;
    END IF;
    IF found IS DISTINCT FROM '0004' THEN
        RAISE EXCEPTION 'this step expects the database at 0004, but it is at %: a step before it failed; nothing more of this script is applied', coalesce(nullif(found, ''), 'base')
            USING HINT = 'fix what failed first, then write the script again from where the database stands: ' || replace('alembic upgrade {found}:0005 --sql', '{found}', coalesce(nullif(found, ''), 'base'));
    END IF;
END
$where$;

-- The backfill's bookkeeping as this release keeps it: a database 1.0.0 migrated lacks the
-- row version column, the index and the runs table; one 1.1.0 migrated, the claim column
-- (otherwise nothing happens, and no table is locked).
DO $ensure$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                   WHERE attrelid = pg_catalog.to_regclass('"public".enrollment_backfill_changes') AND attname = 'row_xmin'
                     AND NOT attisdropped) THEN
        ALTER TABLE "public".enrollment_backfill_changes ADD COLUMN row_xmin bigint;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                   WHERE attrelid = pg_catalog.to_regclass('"public".enrollment_backfill_changes') AND attname = 'claimed_at'
                     AND NOT attisdropped) THEN
        -- Since 1.2: a pair the application made its own since the backfill.
        ALTER TABLE "public".enrollment_backfill_changes ADD COLUMN claimed_at timestamp with time zone;
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
            pass integer,
            candidates bigint,
            CONSTRAINT enrollment_backfill_runs_pkey PRIMARY KEY (id)
        );
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                   WHERE attrelid = pg_catalog.to_regclass('"public".enrollment_backfill_runs') AND attname = 'pass'
                     AND NOT attisdropped) THEN
        -- Since 1.3: a run goes in passes over its candidates.
        ALTER TABLE "public".enrollment_backfill_runs ADD COLUMN pass integer, ADD COLUMN candidates bigint;
    END IF;
    IF pg_catalog.to_regclass('"public".enrollment_backfill_batches') IS NULL THEN
        -- Since 1.3: the record one row per batch, the claims, the candidates.
        -- What each batch of a backfill created and reactivated, and the row version it wrote.
        CREATE TABLE "public".enrollment_backfill_batches (
            id bigserial NOT NULL,
            run_id integer NOT NULL,
            pass integer NOT NULL,
            last_student_id integer NOT NULL,
            last_course_id integer NOT NULL,
            xid xid8 NOT NULL,
            row_xmin bigint NOT NULL,
            created integer[] NOT NULL,
            reactivated integer[] NOT NULL,
            written_at timestamp with time zone DEFAULT now() NOT NULL,
            CONSTRAINT enrollment_backfill_batches_pkey PRIMARY KEY (id)
        );
        CREATE INDEX ix_enrollment_backfill_batches_row_xmin ON "public".enrollment_backfill_batches (row_xmin);
        -- Enrollments the application made its own while still as a backfill wrote them.
        CREATE TABLE "public".enrollment_backfill_claims (
            enrollment_id integer NOT NULL,
            claimed_at timestamp with time zone DEFAULT now() NOT NULL,
            CONSTRAINT enrollment_backfill_claims_pkey PRIMARY KEY (enrollment_id)
        );
        -- The pass in progress: the pairs to create or reactivate, in (student, course) order.
        CREATE UNLOGGED TABLE "public".enrollment_backfill_candidates (
            n bigint NOT NULL,
            student_id integer NOT NULL,
            course_id integer NOT NULL,
            memberships integer[] NOT NULL,
            CONSTRAINT enrollment_backfill_candidates_pkey PRIMARY KEY (n)
        );
    END IF;
    IF pg_catalog.to_regclass('"public".enrollment_backfill_control') IS NULL THEN
        -- Since 1.3: the pause and the throttle.
        -- The pause and the throttle of the running backfill (enrollments pause, resume, throttle).
        CREATE TABLE "public".enrollment_backfill_control (
            id boolean DEFAULT true NOT NULL,
            paused_at timestamp with time zone,
            paused_until timestamp with time zone,
            batch_time interval,
            sleep interval,
            max_rate integer,
            changed_by text DEFAULT CURRENT_USER NOT NULL,
            changed_at timestamp with time zone DEFAULT now() NOT NULL,
            held_by jsonb,
            activity jsonb,
            CONSTRAINT enrollment_backfill_control_pkey PRIMARY KEY (id),
            CONSTRAINT ck_enrollment_backfill_control_one_row CHECK (id)
        );
    END IF;
    -- Nothing for PUBLIC (a default privilege may have given it some; 1.1 did not revoke).
    REVOKE ALL ON "public".enrollment_backfill_changes, "public".enrollment_backfill_runs,
        "public".enrollment_backfill_batches, "public".enrollment_backfill_claims,
        "public".enrollment_backfill_candidates, "public".enrollment_backfill_control FROM PUBLIC;
    REVOKE ALL ON SEQUENCE "public".enrollment_backfill_runs_id_seq,
        "public".enrollment_backfill_batches_id_seq FROM PUBLIC;
END
$ensure$;

COMMIT;

\unset enrollments_sync_missing

-- Stop here if a statement above failed (psql goes on after an error without ON_ERROR_STOP).
\unset enrollments_ok_00000
\set enrollments_ok_:LAST_ERROR_SQLSTATE
\if :{?enrollments_ok_00000}
\else
\set ON_ERROR_STOP on
DO $stop$ BEGIN RAISE EXCEPTION 'a statement above failed: this script stops here, and nothing after it runs' USING HINT = 'fix what failed (the first ERROR above), then write the script again from where the database stands (alembic current)'; END $stop$;
\endif

BEGIN;

SET LOCAL search_path = pg_catalog, pg_temp;

SET LOCAL lock_timeout = '500ms';

SET LOCAL statement_timeout = '0';

DO $lock$
DECLARE
    held boolean;
BEGIN
    BEGIN  -- the table's lock, then the advisory lock unless a role that may deploy holds it
        LOCK TABLE "public".enrollments_lock IN EXCLUSIVE MODE NOWAIT;
        held := NOT pg_catalog.pg_try_advisory_xact_lock(28550410422479921)
            AND EXISTS (SELECT 1
            FROM pg_catalog.pg_locks AS l LEFT JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
            LEFT JOIN pg_catalog.pg_locks AS own_xid ON l.pid IS NULL AND own_xid.pid IS NULL
                AND own_xid.locktype = 'transactionid' AND own_xid.virtualtransaction = l.virtualtransaction
            LEFT JOIN pg_catalog.pg_prepared_xacts AS px ON px.transaction = own_xid.transactionid
            WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()) AND l.classid = (28550410422479921 >> 32)::oid AND l.objid = (28550410422479921 & 4294967295)::oid AND coalesce(pg_catalog.has_table_privilege(coalesce(a.usesysid, (SELECT r.oid FROM pg_catalog.pg_roles AS r WHERE r.rolname = px.owner)), pg_catalog.to_regclass('"public".enrollments_lock'), 'INSERT, UPDATE, DELETE, TRUNCATE'), true));
    EXCEPTION WHEN lock_not_available THEN
        held := true;
    END;
    IF held THEN
        RAISE EXCEPTION 'the enrollments lock is held by %; nothing more of alembic 0004:0005 --sql was changed',
            (SELECT pg_catalog.string_agg(CASE WHEN l.pid IS NULL
                THEN pg_catalog.format('prepared transaction %s (COMMIT PREPARED or ROLLBACK PREPARED ends it)',
                    coalesce(pg_catalog.quote_literal(px.gid), '(gid not readable)'))
                ELSE pg_catalog.format('pid %s (%s, connected since %s)', a.pid, a.application_name, a.backend_start)
                END, ', ')
            FROM pg_catalog.pg_locks AS l LEFT JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
            LEFT JOIN pg_catalog.pg_locks AS own_xid ON l.pid IS NULL AND own_xid.pid IS NULL
                AND own_xid.locktype = 'transactionid' AND own_xid.virtualtransaction = l.virtualtransaction
            LEFT JOIN pg_catalog.pg_prepared_xacts AS px ON px.transaction = own_xid.transactionid
            WHERE l.pid IS DISTINCT FROM pg_catalog.pg_backend_pid()
                  AND ((l.locktype = 'relation' AND l.granted AND l.mode <> 'AccessShareLock'
                        AND l.relation = pg_catalog.to_regclass('"public".enrollments_lock') AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()))
                       OR (l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()) AND l.classid = (28550410422479921 >> 32)::oid AND l.objid = (28550410422479921 & 4294967295)::oid AND coalesce(pg_catalog.has_table_privilege(coalesce(a.usesysid, (SELECT r.oid FROM pg_catalog.pg_roles AS r WHERE r.rolname = px.owner)), pg_catalog.to_regclass('"public".enrollments_lock'), 'INSERT, UPDATE, DELETE, TRUNCATE'), true))))
            USING HINT = 'run this script again when that session has finished';
    ELSIF NOT pg_catalog.pg_try_advisory_xact_lock(28550410422479921) THEN
        RAISE WARNING '% holds the advisory lock of releases before 1.3 but may not run a deploy (no INSERT, UPDATE, DELETE or TRUNCATE on "public".enrollments_lock): not waited for',
            (SELECT pg_catalog.string_agg(i.who, ', ') FROM (
                SELECT pg_catalog.format('pid %s (role %s, %s)', a.pid, a.usename,
                    coalesce(nullif(a.application_name, ''), 'no application_name'))
                FROM pg_catalog.pg_locks AS l JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
                WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()) AND l.classid = (28550410422479921 >> 32)::oid AND l.objid = (28550410422479921 & 4294967295)::oid AND NOT coalesce(pg_catalog.has_table_privilege(a.usesysid, pg_catalog.to_regclass('"public".enrollments_lock'), 'INSERT, UPDATE, DELETE, TRUNCATE'), true)) AS i(who));
    END IF;
END
$lock$;

DO $where$
DECLARE
    found text := '';
BEGIN
    IF pg_catalog.to_regclass('"public".alembic_version') IS NOT NULL THEN
        SELECT coalesce(pg_catalog.string_agg(version_num, ', ' ORDER BY version_num), '') INTO found FROM "public".alembic_version;
    END IF;
    IF found IS DISTINCT FROM '0004' THEN
        RAISE EXCEPTION 'this step expects the database at 0004, but it is at %: a step before it failed; nothing more of this script is applied', coalesce(nullif(found, ''), 'base')
            USING HINT = 'fix what failed first, then write the script again from where the database stands: ' || replace('alembic upgrade {found}:0005 --sql', '{found}', coalesce(nullif(found, ''), 'base'));
    END IF;
END
$where$;

-- Is the sync trigger missing (1.0.0 migrated this database)? Then install it
-- and catch up with a backfill: psql's \gset and \if decide.
SELECT NOT (EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".group_members') AND t.tgname = 'course_enrollments_sync_on_insert' AND NOT t.tgisinternal)
   AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".group_members') AND t.tgname = 'course_enrollments_sync_on_update' AND NOT t.tgisinternal)
   AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".users') AND t.tgname = 'course_enrollments_sync_on_user' AND NOT t.tgisinternal)
   AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".groups') AND t.tgname = 'course_enrollments_sync_on_group' AND NOT t.tgisinternal)
   AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".courses') AND t.tgname = 'course_enrollments_sync_on_course' AND NOT t.tgisinternal)
   AND (pg_catalog.to_regclass('"public".course_enrollments_sync_pending') IS NULL OR EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".course_enrollments_sync_pending') AND t.tgname = 'course_enrollments_sync_apply' AND NOT t.tgisinternal))) AS enrollments_sync_missing
\gset

COMMIT;

\if :enrollments_sync_missing

-- ======================================================================================
-- Step: prepares the sync trigger's queue and guard tables
-- Locks: the queue table alone, for milliseconds; each attempt waits at most
--   lock_timeout
-- Takes: milliseconds, or retries until lock_patience while a session holds the queue
-- ======================================================================================

-- Stop here if a statement above failed (psql goes on after an error without ON_ERROR_STOP).
\unset enrollments_ok_00000
\set enrollments_ok_:LAST_ERROR_SQLSTATE
\if :{?enrollments_ok_00000}
\else
\set ON_ERROR_STOP on
DO $stop$ BEGIN RAISE EXCEPTION 'a statement above failed: this script stops here, and nothing after it runs' USING HINT = 'fix what failed (the first ERROR above), then write the script again from where the database stands (alembic current)'; END $stop$;
\endif

BEGIN;

SET LOCAL search_path = pg_catalog, pg_temp;

SET LOCAL lock_timeout = '500ms';

SET LOCAL statement_timeout = '0';

DO $lock$
DECLARE
    held boolean;
BEGIN
    BEGIN  -- the table's lock, then the advisory lock unless a role that may deploy holds it
        LOCK TABLE "public".enrollments_lock IN EXCLUSIVE MODE NOWAIT;
        held := NOT pg_catalog.pg_try_advisory_xact_lock(28550410422479921)
            AND EXISTS (SELECT 1
            FROM pg_catalog.pg_locks AS l LEFT JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
            LEFT JOIN pg_catalog.pg_locks AS own_xid ON l.pid IS NULL AND own_xid.pid IS NULL
                AND own_xid.locktype = 'transactionid' AND own_xid.virtualtransaction = l.virtualtransaction
            LEFT JOIN pg_catalog.pg_prepared_xacts AS px ON px.transaction = own_xid.transactionid
            WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()) AND l.classid = (28550410422479921 >> 32)::oid AND l.objid = (28550410422479921 & 4294967295)::oid AND coalesce(pg_catalog.has_table_privilege(coalesce(a.usesysid, (SELECT r.oid FROM pg_catalog.pg_roles AS r WHERE r.rolname = px.owner)), pg_catalog.to_regclass('"public".enrollments_lock'), 'INSERT, UPDATE, DELETE, TRUNCATE'), true));
    EXCEPTION WHEN lock_not_available THEN
        held := true;
    END;
    IF held THEN
        RAISE EXCEPTION 'the enrollments lock is held by %; nothing more of alembic 0004:0005 --sql was changed',
            (SELECT pg_catalog.string_agg(CASE WHEN l.pid IS NULL
                THEN pg_catalog.format('prepared transaction %s (COMMIT PREPARED or ROLLBACK PREPARED ends it)',
                    coalesce(pg_catalog.quote_literal(px.gid), '(gid not readable)'))
                ELSE pg_catalog.format('pid %s (%s, connected since %s)', a.pid, a.application_name, a.backend_start)
                END, ', ')
            FROM pg_catalog.pg_locks AS l LEFT JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
            LEFT JOIN pg_catalog.pg_locks AS own_xid ON l.pid IS NULL AND own_xid.pid IS NULL
                AND own_xid.locktype = 'transactionid' AND own_xid.virtualtransaction = l.virtualtransaction
            LEFT JOIN pg_catalog.pg_prepared_xacts AS px ON px.transaction = own_xid.transactionid
            WHERE l.pid IS DISTINCT FROM pg_catalog.pg_backend_pid()
                  AND ((l.locktype = 'relation' AND l.granted AND l.mode <> 'AccessShareLock'
                        AND l.relation = pg_catalog.to_regclass('"public".enrollments_lock') AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()))
                       OR (l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()) AND l.classid = (28550410422479921 >> 32)::oid AND l.objid = (28550410422479921 & 4294967295)::oid AND coalesce(pg_catalog.has_table_privilege(coalesce(a.usesysid, (SELECT r.oid FROM pg_catalog.pg_roles AS r WHERE r.rolname = px.owner)), pg_catalog.to_regclass('"public".enrollments_lock'), 'INSERT, UPDATE, DELETE, TRUNCATE'), true))))
            USING HINT = 'run this script again when that session has finished';
    ELSIF NOT pg_catalog.pg_try_advisory_xact_lock(28550410422479921) THEN
        RAISE WARNING '% holds the advisory lock of releases before 1.3 but may not run a deploy (no INSERT, UPDATE, DELETE or TRUNCATE on "public".enrollments_lock): not waited for',
            (SELECT pg_catalog.string_agg(i.who, ', ') FROM (
                SELECT pg_catalog.format('pid %s (role %s, %s)', a.pid, a.usename,
                    coalesce(nullif(a.application_name, ''), 'no application_name'))
                FROM pg_catalog.pg_locks AS l JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
                WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()) AND l.classid = (28550410422479921 >> 32)::oid AND l.objid = (28550410422479921 & 4294967295)::oid AND NOT coalesce(pg_catalog.has_table_privilege(a.usesysid, pg_catalog.to_regclass('"public".enrollments_lock'), 'INSERT, UPDATE, DELETE, TRUNCATE'), true)) AS i(who));
    END IF;
END
$lock$;

DO $where$
DECLARE
    found text := '';
BEGIN
    IF pg_catalog.to_regclass('"public".alembic_version') IS NOT NULL THEN
        SELECT coalesce(pg_catalog.string_agg(version_num, ', ' ORDER BY version_num), '') INTO found FROM "public".alembic_version;
    END IF;
    IF found IS DISTINCT FROM '0004' THEN
        RAISE EXCEPTION 'this step expects the database at 0004, but it is at %: a step before it failed; nothing more of this script is applied', coalesce(nullif(found, ''), 'base')
            USING HINT = 'fix what failed first, then write the script again from where the database stands: ' || replace('alembic upgrade {found}:0005 --sql', '{found}', coalesce(nullif(found, ''), 'base'));
    END IF;
END
$where$;

-- preparing the sync queue: each attempt waits at most lock_timeout (500ms) for the tables, so the
-- application's writes never queue behind it for longer; retried until 10min.
DO $ddl$
DECLARE
    started timestamptz := pg_catalog.clock_timestamp();
    attempt integer := 0;
    holders text;
    budget text;
    deadline timestamptz;
    relation regclass;
BEGIN
    LOOP
        BEGIN
            SET LOCAL client_min_messages = warning;
            -- What the sync triggers queue for the end of the transaction that wrote it: rows live
            -- only inside that transaction. Owner only; unlogged (never kept past a crash).
            CREATE UNLOGGED TABLE IF NOT EXISTS "public".course_enrollments_sync_pending (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                kind text NOT NULL,
                ids integer[],
                xact xid8 DEFAULT pg_catalog.pg_current_xact_id() NOT NULL,
                courses integer[],
                students integer[],
                opens boolean DEFAULT true NOT NULL
            );
            IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = pg_catalog.to_regclass('"public".course_enrollments_sync_pending') AND attname = 'xact' AND NOT attisdropped) THEN
                -- 1.2's queue (rows only of transactions in flight, which this lock waited for).
                ALTER TABLE "public".course_enrollments_sync_pending ALTER COLUMN ids DROP NOT NULL,
                    ADD COLUMN xact xid8, ADD COLUMN courses integer[], ADD COLUMN students integer[],
                    ADD COLUMN opens boolean;
                ALTER TABLE "public".course_enrollments_sync_pending ALTER COLUMN xact SET DEFAULT pg_catalog.pg_current_xact_id(),
                    ALTER COLUMN xact SET NOT NULL, ALTER COLUMN opens SET DEFAULT true,
                    ALTER COLUMN opens SET NOT NULL;
            END IF;
            CREATE INDEX IF NOT EXISTS course_enrollments_sync_pending_xact ON "public".course_enrollments_sync_pending (xact);
            REVOKE ALL ON "public".course_enrollments_sync_pending FROM PUBLIC;
            -- Marks of users, groups and courses whose change, or whose pair not eligible, a
            -- transaction acts on: written, so that two such transactions conflict. Owner only.
            CREATE UNLOGGED TABLE IF NOT EXISTS "public".course_enrollments_sync_guard (
                kind text NOT NULL,
                id integer NOT NULL,
                marks bigint DEFAULT 1 NOT NULL,
                CONSTRAINT course_enrollments_sync_guard_pkey PRIMARY KEY (kind, id)
            );
            REVOKE ALL ON "public".course_enrollments_sync_guard FROM PUBLIC;
            EXIT;
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            attempt := attempt + 1;
            -- in this database only (another database's relation may have the same oid); a
            -- prepared transaction (no pid) by its gid, found through its own xid's lock
            SELECT pg_catalog.string_agg(DISTINCT CASE
                       WHEN l.pid IS NULL THEN pg_catalog.format('prepared transaction %s (owner %s, prepared %s ago: COMMIT PREPARED or ROLLBACK PREPARED ends it)',
                           coalesce(pg_catalog.quote_literal(px.gid), '(gid not readable)'), coalesce(px.owner::text, '?'),
                           coalesce(pg_catalog.date_trunc('second', pg_catalog.clock_timestamp() - px.prepared)::text, '?'))
                       ELSE pg_catalog.format('pid %s (%s, %s, transaction open for %s)',
                           a.pid, coalesce(nullif(a.application_name, ''), 'no application_name'),
                           coalesce(a.state, 'state hidden: grant pg_monitor to see it'),
                           coalesce(pg_catalog.date_trunc('second', pg_catalog.clock_timestamp() - a.xact_start)::text, 'a time hidden'))
                   END, '; ')
            INTO holders
            FROM pg_catalog.pg_locks AS l
            LEFT JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
            LEFT JOIN pg_catalog.pg_locks AS own_xid ON l.pid IS NULL AND own_xid.pid IS NULL
                AND own_xid.locktype = 'transactionid' AND own_xid.virtualtransaction = l.virtualtransaction
            LEFT JOIN pg_catalog.pg_prepared_xacts AS px ON px.transaction = own_xid.transactionid
            WHERE l.granted AND l.relation IN (pg_catalog.to_regclass('"public".course_enrollments_sync_pending'))
              AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d
                                WHERE d.datname = pg_catalog.current_database())
              AND l.mode IN ('RowExclusiveLock', 'ShareUpdateExclusiveLock', 'ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock') AND l.pid IS DISTINCT FROM pg_catalog.pg_backend_pid();
            holders := coalesce(holders, 'a session that has just let go');
            IF pg_catalog.clock_timestamp() - started > interval '600 s' THEN
                RAISE EXCEPTION USING ERRCODE = 'lock_not_available',
                    MESSAGE = pg_catalog.format('preparing the sync queue: gave up after %s attempts over %s (lock_patience 10min); the tables are held by %s',
                        attempt, pg_catalog.date_trunc('second', pg_catalog.clock_timestamp() - started), holders);
            END IF;
            RAISE WARNING 'preparing the sync queue: a lock was not granted within 500ms (attempt %); held by %; retrying', attempt, holders;
            PERFORM pg_catalog.pg_sleep(least(5.0, pg_catalog.random() * 0.2 * 2 ^ least(attempt, 6)));
        END;
    END LOOP;
END
$ddl$;

COMMIT;

-- ======================================================================================
-- Step: creates or replaces the sync trigger's functions
-- Locks: nothing the application uses (functions that no trigger calls yet, or that a
--   trigger calls the new version of from its next statement)
-- Takes: milliseconds
-- ======================================================================================

-- Stop here if a statement above failed (psql goes on after an error without ON_ERROR_STOP).
\unset enrollments_ok_00000
\set enrollments_ok_:LAST_ERROR_SQLSTATE
\if :{?enrollments_ok_00000}
\else
\set ON_ERROR_STOP on
DO $stop$ BEGIN RAISE EXCEPTION 'a statement above failed: this script stops here, and nothing after it runs' USING HINT = 'fix what failed (the first ERROR above), then write the script again from where the database stands (alembic current)'; END $stop$;
\endif

BEGIN;

SET LOCAL search_path = pg_catalog, pg_temp;

SET LOCAL lock_timeout = '500ms';

SET LOCAL statement_timeout = '0';

DO $lock$
DECLARE
    held boolean;
BEGIN
    BEGIN  -- the table's lock, then the advisory lock unless a role that may deploy holds it
        LOCK TABLE "public".enrollments_lock IN EXCLUSIVE MODE NOWAIT;
        held := NOT pg_catalog.pg_try_advisory_xact_lock(28550410422479921)
            AND EXISTS (SELECT 1
            FROM pg_catalog.pg_locks AS l LEFT JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
            LEFT JOIN pg_catalog.pg_locks AS own_xid ON l.pid IS NULL AND own_xid.pid IS NULL
                AND own_xid.locktype = 'transactionid' AND own_xid.virtualtransaction = l.virtualtransaction
            LEFT JOIN pg_catalog.pg_prepared_xacts AS px ON px.transaction = own_xid.transactionid
            WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()) AND l.classid = (28550410422479921 >> 32)::oid AND l.objid = (28550410422479921 & 4294967295)::oid AND coalesce(pg_catalog.has_table_privilege(coalesce(a.usesysid, (SELECT r.oid FROM pg_catalog.pg_roles AS r WHERE r.rolname = px.owner)), pg_catalog.to_regclass('"public".enrollments_lock'), 'INSERT, UPDATE, DELETE, TRUNCATE'), true));
    EXCEPTION WHEN lock_not_available THEN
        held := true;
    END;
    IF held THEN
        RAISE EXCEPTION 'the enrollments lock is held by %; nothing more of alembic 0004:0005 --sql was changed',
            (SELECT pg_catalog.string_agg(CASE WHEN l.pid IS NULL
                THEN pg_catalog.format('prepared transaction %s (COMMIT PREPARED or ROLLBACK PREPARED ends it)',
                    coalesce(pg_catalog.quote_literal(px.gid), '(gid not readable)'))
                ELSE pg_catalog.format('pid %s (%s, connected since %s)', a.pid, a.application_name, a.backend_start)
                END, ', ')
            FROM pg_catalog.pg_locks AS l LEFT JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
            LEFT JOIN pg_catalog.pg_locks AS own_xid ON l.pid IS NULL AND own_xid.pid IS NULL
                AND own_xid.locktype = 'transactionid' AND own_xid.virtualtransaction = l.virtualtransaction
            LEFT JOIN pg_catalog.pg_prepared_xacts AS px ON px.transaction = own_xid.transactionid
            WHERE l.pid IS DISTINCT FROM pg_catalog.pg_backend_pid()
                  AND ((l.locktype = 'relation' AND l.granted AND l.mode <> 'AccessShareLock'
                        AND l.relation = pg_catalog.to_regclass('"public".enrollments_lock') AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()))
                       OR (l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()) AND l.classid = (28550410422479921 >> 32)::oid AND l.objid = (28550410422479921 & 4294967295)::oid AND coalesce(pg_catalog.has_table_privilege(coalesce(a.usesysid, (SELECT r.oid FROM pg_catalog.pg_roles AS r WHERE r.rolname = px.owner)), pg_catalog.to_regclass('"public".enrollments_lock'), 'INSERT, UPDATE, DELETE, TRUNCATE'), true))))
            USING HINT = 'run this script again when that session has finished';
    ELSIF NOT pg_catalog.pg_try_advisory_xact_lock(28550410422479921) THEN
        RAISE WARNING '% holds the advisory lock of releases before 1.3 but may not run a deploy (no INSERT, UPDATE, DELETE or TRUNCATE on "public".enrollments_lock): not waited for',
            (SELECT pg_catalog.string_agg(i.who, ', ') FROM (
                SELECT pg_catalog.format('pid %s (role %s, %s)', a.pid, a.usename,
                    coalesce(nullif(a.application_name, ''), 'no application_name'))
                FROM pg_catalog.pg_locks AS l JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
                WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()) AND l.classid = (28550410422479921 >> 32)::oid AND l.objid = (28550410422479921 & 4294967295)::oid AND NOT coalesce(pg_catalog.has_table_privilege(a.usesysid, pg_catalog.to_regclass('"public".enrollments_lock'), 'INSERT, UPDATE, DELETE, TRUNCATE'), true)) AS i(who));
    END IF;
END
$lock$;

DO $where$
DECLARE
    found text := '';
BEGIN
    IF pg_catalog.to_regclass('"public".alembic_version') IS NOT NULL THEN
        SELECT coalesce(pg_catalog.string_agg(version_num, ', ' ORDER BY version_num), '') INTO found FROM "public".alembic_version;
    END IF;
    IF found IS DISTINCT FROM '0004' THEN
        RAISE EXCEPTION 'this step expects the database at 0004, but it is at %: a step before it failed; nothing more of this script is applied', coalesce(nullif(found, ''), 'base')
            USING HINT = 'fix what failed first, then write the script again from where the database stands: ' || replace('alembic upgrade {found}:0005 --sql', '{found}', coalesce(nullif(found, ''), 'base'));
    END IF;
END
$where$;

-- course_enrollments_sync_members: queues the memberships a statement inserted active, activated or moved.
CREATE OR REPLACE FUNCTION "public".course_enrollments_sync_members() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET jit = off
AS $sync$
BEGIN
    IF TG_RELID OPERATOR(pg_catalog.<>) '"public".group_members'::pg_catalog.regclass THEN
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
            MESSAGE = 'course_enrollments_sync_members runs only as a sync trigger of "public".group_members';
    END IF;
    IF TG_OP OPERATOR(pg_catalog.=) 'INSERT' THEN
        INSERT INTO "public".course_enrollments_sync_pending (kind, ids, courses, students, opens)
        SELECT 'membership', k.rechecks, k.courses, k.students,
            NOT EXISTS (SELECT 1 FROM "public".course_enrollments_sync_pending AS q WHERE q.xact OPERATOR(pg_catalog.=) pg_catalog.pg_current_xact_id())
        FROM (
            SELECT pg_catalog.array_agg(x.course_id) FILTER (WHERE x.eligible) AS courses,
                pg_catalog.array_agg(x.student_id) FILTER (WHERE x.eligible) AS students,
                pg_catalog.array_agg(x.membership) FILTER (WHERE NOT x.eligible) AS rechecks,
                pg_catalog.count(*) AS touched
            FROM (
                SELECT gm.id AS membership, gm.user_id AS student_id, gm.group_id, g.course_id,
                    (u.role OPERATOR(pg_catalog.=) 'student' AND u.school_id OPERATOR(pg_catalog.=) c.school_id) AS eligible
                FROM new_members AS gm
                CROSS JOIN LATERAL (SELECT g.course_id FROM "public".groups AS g WHERE g.id OPERATOR(pg_catalog.=) gm.group_id OFFSET 0) AS g
                CROSS JOIN LATERAL (SELECT c.school_id FROM "public".courses AS c WHERE c.id OPERATOR(pg_catalog.=) g.course_id OFFSET 0) AS c
                CROSS JOIN LATERAL (SELECT u.role, u.school_id FROM "public".users AS u WHERE u.id OPERATOR(pg_catalog.=) gm.user_id OFFSET 0) AS u
                WHERE gm.active IS TRUE
            ) AS x
        ) AS k
        WHERE k.touched OPERATOR(pg_catalog.>) 0;
    ELSE
        -- The statement's old and new rows matched by a hash join, whatever their number
        -- (a nested loop over two transition tables is quadratic); the settings are the
        -- function's own, put back when it returns.
        PERFORM pg_catalog.set_config('enable_hashjoin', 'on', true);
        PERFORM pg_catalog.set_config('enable_nestloop', 'off', true);
        INSERT INTO "public".course_enrollments_sync_pending (kind, ids, courses, students, opens)
        SELECT 'membership', k.rechecks, k.courses, k.students,
            NOT EXISTS (SELECT 1 FROM "public".course_enrollments_sync_pending AS q WHERE q.xact OPERATOR(pg_catalog.=) pg_catalog.pg_current_xact_id())
        FROM (
            SELECT pg_catalog.array_agg(x.course_id) FILTER (WHERE x.eligible) AS courses,
                pg_catalog.array_agg(x.student_id) FILTER (WHERE x.eligible) AS students,
                pg_catalog.array_agg(x.membership) FILTER (WHERE NOT x.eligible) AS rechecks,
                pg_catalog.count(*) AS touched
            FROM (
                SELECT gm.id AS membership, gm.user_id AS student_id, gm.group_id, g.course_id,
                    (u.role OPERATOR(pg_catalog.=) 'student' AND u.school_id OPERATOR(pg_catalog.=) c.school_id) AS eligible
                FROM new_members AS gm JOIN old_members AS o ON o.id OPERATOR(pg_catalog.=) gm.id
                CROSS JOIN LATERAL (SELECT g.course_id FROM "public".groups AS g WHERE g.id OPERATOR(pg_catalog.=) gm.group_id OFFSET 0) AS g
                CROSS JOIN LATERAL (SELECT c.school_id FROM "public".courses AS c WHERE c.id OPERATOR(pg_catalog.=) g.course_id OFFSET 0) AS c
                CROSS JOIN LATERAL (SELECT u.role, u.school_id FROM "public".users AS u WHERE u.id OPERATOR(pg_catalog.=) gm.user_id OFFSET 0) AS u
                WHERE gm.active IS TRUE AND (o.active IS NOT TRUE OR o.group_id OPERATOR(pg_catalog.<>) gm.group_id OR o.user_id OPERATOR(pg_catalog.<>) gm.user_id)
            ) AS x
        ) AS k
        WHERE k.touched OPERATOR(pg_catalog.>) 0;
    END IF;
    RETURN NULL;
END
$sync$;

REVOKE ALL ON FUNCTION "public".course_enrollments_sync_members() FROM PUBLIC;

-- course_enrollments_sync_user: queues a user who became a student or moved school.
CREATE OR REPLACE FUNCTION "public".course_enrollments_sync_user() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET jit = off
AS $sync$
BEGIN
    IF TG_RELID OPERATOR(pg_catalog.<>) '"public".users'::pg_catalog.regclass THEN
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
            MESSAGE = 'course_enrollments_sync_user runs only as a sync trigger of "public".users';
    END IF;
    INSERT INTO "public".course_enrollments_sync_pending (kind, ids, courses, students, opens)
    SELECT 'user', ARRAY[NEW.id], k.courses, k.students,
        NOT EXISTS (SELECT 1 FROM "public".course_enrollments_sync_pending AS q WHERE q.xact OPERATOR(pg_catalog.=) pg_catalog.pg_current_xact_id())
    FROM (
        SELECT pg_catalog.array_agg(x.course_id) FILTER (WHERE x.eligible) AS courses,
            pg_catalog.array_agg(x.student_id) FILTER (WHERE x.eligible) AS students,
            pg_catalog.array_agg(x.membership) FILTER (WHERE NOT x.eligible) AS rechecks,
            pg_catalog.count(*) AS touched
        FROM (
            SELECT gm.id AS membership, gm.user_id AS student_id, gm.group_id, g.course_id,
                (u.role OPERATOR(pg_catalog.=) 'student' AND u.school_id OPERATOR(pg_catalog.=) c.school_id) AS eligible
            FROM (
                SELECT x.id, x.user_id, x.group_id, x.active FROM "public".group_members AS x WHERE x.user_id OPERATOR(pg_catalog.=) NEW.id
            ) AS gm
            CROSS JOIN LATERAL (SELECT g.course_id FROM "public".groups AS g WHERE g.id OPERATOR(pg_catalog.=) gm.group_id OFFSET 0) AS g
            CROSS JOIN LATERAL (SELECT c.school_id FROM "public".courses AS c WHERE c.id OPERATOR(pg_catalog.=) g.course_id OFFSET 0) AS c
            CROSS JOIN LATERAL (SELECT u.role, u.school_id FROM "public".users AS u WHERE u.id OPERATOR(pg_catalog.=) gm.user_id OFFSET 0) AS u
            WHERE gm.active IS TRUE
        ) AS x
    ) AS k;
    RETURN NULL;
END
$sync$;

REVOKE ALL ON FUNCTION "public".course_enrollments_sync_user() FROM PUBLIC;

-- course_enrollments_sync_group: queues a group moved to another course.
CREATE OR REPLACE FUNCTION "public".course_enrollments_sync_group() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET jit = off
AS $sync$
BEGIN
    IF TG_RELID OPERATOR(pg_catalog.<>) '"public".groups'::pg_catalog.regclass THEN
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
            MESSAGE = 'course_enrollments_sync_group runs only as a sync trigger of "public".groups';
    END IF;
    INSERT INTO "public".course_enrollments_sync_pending (kind, ids, courses, students, opens)
    SELECT 'group', ARRAY[NEW.id], k.courses, k.students,
        NOT EXISTS (SELECT 1 FROM "public".course_enrollments_sync_pending AS q WHERE q.xact OPERATOR(pg_catalog.=) pg_catalog.pg_current_xact_id())
    FROM (
        SELECT pg_catalog.array_agg(x.course_id) FILTER (WHERE x.eligible) AS courses,
            pg_catalog.array_agg(x.student_id) FILTER (WHERE x.eligible) AS students,
            pg_catalog.array_agg(x.membership) FILTER (WHERE NOT x.eligible) AS rechecks,
            pg_catalog.count(*) AS touched
        FROM (
            SELECT gm.id AS membership, gm.user_id AS student_id, gm.group_id, g.course_id,
                (u.role OPERATOR(pg_catalog.=) 'student' AND u.school_id OPERATOR(pg_catalog.=) c.school_id) AS eligible
            FROM (
                SELECT x.id, x.user_id, x.group_id, x.active FROM "public".group_members AS x WHERE x.group_id OPERATOR(pg_catalog.=) NEW.id
            ) AS gm
            CROSS JOIN LATERAL (SELECT g.course_id FROM "public".groups AS g WHERE g.id OPERATOR(pg_catalog.=) gm.group_id OFFSET 0) AS g
            CROSS JOIN LATERAL (SELECT c.school_id FROM "public".courses AS c WHERE c.id OPERATOR(pg_catalog.=) g.course_id OFFSET 0) AS c
            CROSS JOIN LATERAL (SELECT u.role, u.school_id FROM "public".users AS u WHERE u.id OPERATOR(pg_catalog.=) gm.user_id OFFSET 0) AS u
            WHERE gm.active IS TRUE
        ) AS x
    ) AS k;
    RETURN NULL;
END
$sync$;

REVOKE ALL ON FUNCTION "public".course_enrollments_sync_group() FROM PUBLIC;

-- course_enrollments_sync_course: queues a course moved to another school.
CREATE OR REPLACE FUNCTION "public".course_enrollments_sync_course() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET jit = off
AS $sync$
BEGIN
    IF TG_RELID OPERATOR(pg_catalog.<>) '"public".courses'::pg_catalog.regclass THEN
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
            MESSAGE = 'course_enrollments_sync_course runs only as a sync trigger of "public".courses';
    END IF;
    INSERT INTO "public".course_enrollments_sync_pending (kind, ids, courses, students, opens)
    SELECT 'course', ARRAY[NEW.id], k.courses, k.students,
        NOT EXISTS (SELECT 1 FROM "public".course_enrollments_sync_pending AS q WHERE q.xact OPERATOR(pg_catalog.=) pg_catalog.pg_current_xact_id())
    FROM (
        SELECT pg_catalog.array_agg(x.course_id) FILTER (WHERE x.eligible) AS courses,
            pg_catalog.array_agg(x.student_id) FILTER (WHERE x.eligible) AS students,
            pg_catalog.array_agg(x.membership) FILTER (WHERE NOT x.eligible) AS rechecks,
            pg_catalog.count(*) AS touched
        FROM (
            SELECT gm.id AS membership, gm.user_id AS student_id, gm.group_id, g.course_id,
                (u.role OPERATOR(pg_catalog.=) 'student' AND u.school_id OPERATOR(pg_catalog.=) c.school_id) AS eligible
            FROM (
                SELECT x.id, x.user_id, x.group_id, x.active FROM "public".groups AS y
                CROSS JOIN LATERAL (SELECT x.id, x.user_id, x.group_id, x.active FROM "public".group_members AS x WHERE x.group_id OPERATOR(pg_catalog.=) y.id OFFSET 0) AS x
                WHERE y.course_id OPERATOR(pg_catalog.=) NEW.id
            ) AS gm
            CROSS JOIN LATERAL (SELECT g.course_id FROM "public".groups AS g WHERE g.id OPERATOR(pg_catalog.=) gm.group_id OFFSET 0) AS g
            CROSS JOIN LATERAL (SELECT c.school_id FROM "public".courses AS c WHERE c.id OPERATOR(pg_catalog.=) g.course_id OFFSET 0) AS c
            CROSS JOIN LATERAL (SELECT u.role, u.school_id FROM "public".users AS u WHERE u.id OPERATOR(pg_catalog.=) gm.user_id OFFSET 0) AS u
            WHERE gm.active IS TRUE
        ) AS x
    ) AS k;
    RETURN NULL;
END
$sync$;

REVOKE ALL ON FUNCTION "public".course_enrollments_sync_course() FROM PUBLIC;

-- course_enrollments_sync_apply: at commit: enrolls what was queued.
CREATE OR REPLACE FUNCTION "public".course_enrollments_sync_apply() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET jit = off
AS $sync$
DECLARE
    courses integer[];
    students integer[];
    m_ids integer[];
    u_ids integer[];
    g_ids integer[];
    c_ids integer[];
    one_course integer[];
    one_student integer[];
BEGIN
    IF TG_RELID OPERATOR(pg_catalog.<>) '"public".course_enrollments_sync_pending'::pg_catalog.regclass THEN
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
            MESSAGE = 'course_enrollments_sync_apply runs only as a sync trigger of "public".course_enrollments_sync_pending';
    END IF;
    -- An earlier firing has applied everything this transaction queued.
    IF NOT EXISTS (SELECT 1 FROM "public".course_enrollments_sync_pending AS q WHERE q.id OPERATOR(pg_catalog.=) NEW.id) THEN
        RETURN NULL;
    END IF;
    -- Everything this transaction queued, in one pass: its pairs eligible at the end of a
    -- statement, and what to read again.
    WITH mine AS MATERIALIZED (
        DELETE FROM "public".course_enrollments_sync_pending AS q WHERE q.xact OPERATOR(pg_catalog.=) pg_catalog.pg_current_xact_id()
        RETURNING q.kind, q.ids, q.courses, q.students
    ),
    ids AS (
        SELECT m.kind, i.id FROM mine AS m CROSS JOIN LATERAL pg_catalog.unnest(m.ids) AS i(id)
    ),
    -- The pairs in one pass, both arrays in the same order (sorted once, below).
    queued AS (
        SELECT pg_catalog.array_agg(p.course_id) AS courses, pg_catalog.array_agg(p.student_id) AS students
        FROM mine AS m
        CROSS JOIN LATERAL ROWS FROM (pg_catalog.unnest(m.courses), pg_catalog.unnest(m.students)) AS p(course_id, student_id)
    )
    SELECT queued.courses, queued.students,
        (SELECT pg_catalog.array_agg(DISTINCT i.id) FROM ids AS i WHERE i.kind OPERATOR(pg_catalog.=) 'membership'),
        (SELECT pg_catalog.array_agg(DISTINCT i.id) FROM ids AS i WHERE i.kind OPERATOR(pg_catalog.=) 'user'),
        (SELECT pg_catalog.array_agg(DISTINCT i.id) FROM ids AS i WHERE i.kind OPERATOR(pg_catalog.=) 'group'),
        (SELECT pg_catalog.array_agg(DISTINCT i.id) FROM ids AS i WHERE i.kind OPERATOR(pg_catalog.=) 'course')
    INTO courses, students, m_ids, u_ids, g_ids, c_ids
    FROM queued;
    IF m_ids IS NOT NULL OR u_ids IS NOT NULL OR g_ids IS NOT NULL OR c_ids IS NOT NULL THEN
        -- Mark what a concurrent transaction may be changing too (see the module's notes):
        -- the second of two waits here (READ COMMITTED) or fails (REPEATABLE READ) ...
        INSERT INTO "public".course_enrollments_sync_guard AS k (kind, id)
        SELECT DISTINCT x.kind, x.id FROM (
            SELECT 'c' AS kind, i.id FROM pg_catalog.unnest(c_ids) AS i(id)
            UNION ALL SELECT 'g', i.id FROM pg_catalog.unnest(g_ids) AS i(id)
            UNION ALL SELECT 'u', i.id FROM pg_catalog.unnest(u_ids) AS i(id)
            UNION ALL
            SELECT v.kind, v.id FROM (
                SELECT gm.id AS membership, gm.user_id AS student_id, gm.group_id, g.course_id,
                    (u.role OPERATOR(pg_catalog.=) 'student' AND u.school_id OPERATOR(pg_catalog.=) c.school_id) AS eligible
                FROM (
                    SELECT x.id, x.user_id, x.group_id, x.active FROM "public".group_members AS x WHERE x.id OPERATOR(pg_catalog.=) ANY (m_ids)
                    UNION
                    SELECT x.id, x.user_id, x.group_id, x.active FROM "public".group_members AS x WHERE x.user_id OPERATOR(pg_catalog.=) ANY (u_ids)
                    UNION
                    SELECT x.id, x.user_id, x.group_id, x.active FROM "public".group_members AS x WHERE x.group_id OPERATOR(pg_catalog.=) ANY (g_ids)
                    UNION
                    SELECT x.id, x.user_id, x.group_id, x.active FROM "public".groups AS y
                    CROSS JOIN LATERAL (SELECT x.id, x.user_id, x.group_id, x.active FROM "public".group_members AS x WHERE x.group_id OPERATOR(pg_catalog.=) y.id OFFSET 0) AS x
                    WHERE y.course_id OPERATOR(pg_catalog.=) ANY (c_ids)
                ) AS gm
                CROSS JOIN LATERAL (SELECT g.course_id FROM "public".groups AS g WHERE g.id OPERATOR(pg_catalog.=) gm.group_id OFFSET 0) AS g
                CROSS JOIN LATERAL (SELECT c.school_id FROM "public".courses AS c WHERE c.id OPERATOR(pg_catalog.=) g.course_id OFFSET 0) AS c
                CROSS JOIN LATERAL (SELECT u.role, u.school_id FROM "public".users AS u WHERE u.id OPERATOR(pg_catalog.=) gm.user_id OFFSET 0) AS u
                WHERE gm.active IS TRUE
            ) AS n
            CROSS JOIN LATERAL (VALUES ('c', n.course_id), ('g', n.group_id), ('u', n.student_id)) AS v(kind, id)
            WHERE NOT n.eligible
        ) AS x
        ORDER BY x.kind, x.id
        ON CONFLICT (kind, id) DO UPDATE SET marks = k.marks OPERATOR(pg_catalog.+) 1;
        -- ... then read again: under READ COMMITTED a new snapshot, taken after the wait.
        SELECT pg_catalog.array_cat(courses, pg_catalog.array_agg(n.course_id)),
            pg_catalog.array_cat(students, pg_catalog.array_agg(n.student_id))
        INTO courses, students
        FROM (
            SELECT gm.id AS membership, gm.user_id AS student_id, gm.group_id, g.course_id,
                (u.role OPERATOR(pg_catalog.=) 'student' AND u.school_id OPERATOR(pg_catalog.=) c.school_id) AS eligible
            FROM (
                SELECT x.id, x.user_id, x.group_id, x.active FROM "public".group_members AS x WHERE x.id OPERATOR(pg_catalog.=) ANY (m_ids)
                UNION
                SELECT x.id, x.user_id, x.group_id, x.active FROM "public".group_members AS x WHERE x.user_id OPERATOR(pg_catalog.=) ANY (u_ids)
                UNION
                SELECT x.id, x.user_id, x.group_id, x.active FROM "public".group_members AS x WHERE x.group_id OPERATOR(pg_catalog.=) ANY (g_ids)
                UNION
                SELECT x.id, x.user_id, x.group_id, x.active FROM "public".groups AS y
                CROSS JOIN LATERAL (SELECT x.id, x.user_id, x.group_id, x.active FROM "public".group_members AS x WHERE x.group_id OPERATOR(pg_catalog.=) y.id OFFSET 0) AS x
                WHERE y.course_id OPERATOR(pg_catalog.=) ANY (c_ids)
            ) AS gm
            CROSS JOIN LATERAL (SELECT g.course_id FROM "public".groups AS g WHERE g.id OPERATOR(pg_catalog.=) gm.group_id OFFSET 0) AS g
            CROSS JOIN LATERAL (SELECT c.school_id FROM "public".courses AS c WHERE c.id OPERATOR(pg_catalog.=) g.course_id OFFSET 0) AS c
            CROSS JOIN LATERAL (SELECT u.role, u.school_id FROM "public".users AS u WHERE u.id OPERATOR(pg_catalog.=) gm.user_id OFFSET 0) AS u
            WHERE gm.active IS TRUE
        ) AS n
        WHERE n.eligible;
    END IF;
    IF courses IS NULL THEN
        RETURN NULL;
    END IF;
    -- Each pair once, in (course, student) order.
    SELECT pg_catalog.array_agg(p.course_id ORDER BY p.course_id, p.student_id),
        pg_catalog.array_agg(p.student_id ORDER BY p.course_id, p.student_id)
    INTO courses, students
    FROM (
        SELECT DISTINCT x.course_id, x.student_id
        FROM ROWS FROM (pg_catalog.unnest(courses), pg_catalog.unnest(students)) AS x(course_id, student_id)
    ) AS p;
    IF pg_catalog.current_setting('transaction_isolation') OPERATOR(pg_catalog.=) 'read committed' THEN
        WITH met AS MATERIALIZED (
            SELECT e.id
            FROM ROWS FROM (pg_catalog.unnest(courses), pg_catalog.unnest(students)) AS p(course_id, student_id)
            CROSS JOIN LATERAL (SELECT e.id, e.xmin FROM "public".course_enrollments AS e WHERE e.course_id OPERATOR(pg_catalog.=) p.course_id AND e.student_id OPERATOR(pg_catalog.=) p.student_id AND e.active OFFSET 0) AS e
            LEFT JOIN LATERAL (SELECT true AS found FROM "public".enrollment_backfill_batches AS b WHERE b.row_xmin OPERATOR(pg_catalog.=) e.xmin::pg_catalog.text::pg_catalog.int8 LIMIT 1 OFFSET 0) AS b ON true
            LEFT JOIN LATERAL (SELECT true AS found FROM "public".enrollment_backfill_changes AS r WHERE r.enrollment_id OPERATOR(pg_catalog.=) e.id AND r.claimed_at IS NULL LIMIT 1 OFFSET 0) AS r ON true
            WHERE b.found OR r.found
        ),
        locked AS MATERIALIZED (
            SELECT l.id FROM met
            CROSS JOIN LATERAL (SELECT l.id FROM "public".course_enrollments AS l WHERE l.id OPERATOR(pg_catalog.=) met.id AND l.active OFFSET 0 FOR SHARE) AS l
        )
        INSERT INTO "public".enrollment_backfill_claims (enrollment_id)
        SELECT locked.id FROM locked ORDER BY locked.id
        ON CONFLICT (enrollment_id) DO NOTHING;
        INSERT INTO "public".course_enrollments AS ce (course_id, student_id, active)
        SELECT p.course_id, p.student_id, true
        FROM ROWS FROM (pg_catalog.unnest(courses), pg_catalog.unnest(students)) AS p(course_id, student_id)
        WHERE NOT EXISTS (
            SELECT 1 FROM "public".course_enrollments AS e
            WHERE e.course_id OPERATOR(pg_catalog.=) p.course_id AND e.student_id OPERATOR(pg_catalog.=) p.student_id AND e.active
            OFFSET 0
        )
        ORDER BY p.course_id, p.student_id
        ON CONFLICT (course_id, student_id) DO UPDATE SET active = true WHERE NOT ce.active;
        RETURN NULL;
    END IF;
    BEGIN
        WITH met AS MATERIALIZED (
            SELECT e.id
            FROM ROWS FROM (pg_catalog.unnest(courses), pg_catalog.unnest(students)) AS p(course_id, student_id)
            CROSS JOIN LATERAL (SELECT e.id, e.xmin FROM "public".course_enrollments AS e WHERE e.course_id OPERATOR(pg_catalog.=) p.course_id AND e.student_id OPERATOR(pg_catalog.=) p.student_id AND e.active OFFSET 0) AS e
            LEFT JOIN LATERAL (SELECT true AS found FROM "public".enrollment_backfill_batches AS b WHERE b.row_xmin OPERATOR(pg_catalog.=) e.xmin::pg_catalog.text::pg_catalog.int8 LIMIT 1 OFFSET 0) AS b ON true
            LEFT JOIN LATERAL (SELECT true AS found FROM "public".enrollment_backfill_changes AS r WHERE r.enrollment_id OPERATOR(pg_catalog.=) e.id AND r.claimed_at IS NULL LIMIT 1 OFFSET 0) AS r ON true
            WHERE b.found OR r.found
        ),
        locked AS MATERIALIZED (
            SELECT l.id FROM met
            CROSS JOIN LATERAL (SELECT l.id FROM "public".course_enrollments AS l WHERE l.id OPERATOR(pg_catalog.=) met.id AND l.active OFFSET 0 FOR SHARE) AS l
        )
        INSERT INTO "public".enrollment_backfill_claims (enrollment_id)
        SELECT locked.id FROM locked ORDER BY locked.id
        ON CONFLICT (enrollment_id) DO NOTHING;
        INSERT INTO "public".course_enrollments AS ce (course_id, student_id, active)
        SELECT p.course_id, p.student_id, true
        FROM ROWS FROM (pg_catalog.unnest(courses), pg_catalog.unnest(students)) AS p(course_id, student_id)
        WHERE NOT EXISTS (
            SELECT 1 FROM "public".course_enrollments AS e
            WHERE e.course_id OPERATOR(pg_catalog.=) p.course_id AND e.student_id OPERATOR(pg_catalog.=) p.student_id AND e.active
            OFFSET 0
        )
        ORDER BY p.course_id, p.student_id
        ON CONFLICT (course_id, student_id) DO UPDATE SET active = true WHERE NOT ce.active;
    EXCEPTION WHEN serialization_failure THEN
        -- REPEATABLE READ or SERIALIZABLE: a pair's enrollment was committed by another
        -- transaction after this one's snapshot. That pair has its enrollment; every other
        -- pair is written, one by one.
        FOR i IN 1 .. pg_catalog.cardinality(courses) LOOP
            one_course := ARRAY[courses[i]];
            one_student := ARRAY[students[i]];
            BEGIN
                WITH met AS MATERIALIZED (
                    SELECT e.id
                    FROM ROWS FROM (pg_catalog.unnest(one_course), pg_catalog.unnest(one_student)) AS p(course_id, student_id)
                    CROSS JOIN LATERAL (SELECT e.id, e.xmin FROM "public".course_enrollments AS e WHERE e.course_id OPERATOR(pg_catalog.=) p.course_id AND e.student_id OPERATOR(pg_catalog.=) p.student_id AND e.active OFFSET 0) AS e
                    LEFT JOIN LATERAL (SELECT true AS found FROM "public".enrollment_backfill_batches AS b WHERE b.row_xmin OPERATOR(pg_catalog.=) e.xmin::pg_catalog.text::pg_catalog.int8 LIMIT 1 OFFSET 0) AS b ON true
                    LEFT JOIN LATERAL (SELECT true AS found FROM "public".enrollment_backfill_changes AS r WHERE r.enrollment_id OPERATOR(pg_catalog.=) e.id AND r.claimed_at IS NULL LIMIT 1 OFFSET 0) AS r ON true
                    WHERE b.found OR r.found
                ),
                locked AS MATERIALIZED (
                    SELECT l.id FROM met
                    CROSS JOIN LATERAL (SELECT l.id FROM "public".course_enrollments AS l WHERE l.id OPERATOR(pg_catalog.=) met.id AND l.active OFFSET 0 FOR SHARE) AS l
                )
                INSERT INTO "public".enrollment_backfill_claims (enrollment_id)
                SELECT locked.id FROM locked ORDER BY locked.id
                ON CONFLICT (enrollment_id) DO NOTHING;
                INSERT INTO "public".course_enrollments AS ce (course_id, student_id, active)
                SELECT p.course_id, p.student_id, true
                FROM ROWS FROM (pg_catalog.unnest(one_course), pg_catalog.unnest(one_student)) AS p(course_id, student_id)
                WHERE NOT EXISTS (
                    SELECT 1 FROM "public".course_enrollments AS e
                    WHERE e.course_id OPERATOR(pg_catalog.=) p.course_id AND e.student_id OPERATOR(pg_catalog.=) p.student_id AND e.active
                    OFFSET 0
                )
                ORDER BY p.course_id, p.student_id
                ON CONFLICT (course_id, student_id) DO UPDATE SET active = true WHERE NOT ce.active;
            EXCEPTION WHEN serialization_failure THEN
                NULL;
            END;
        END LOOP;
    END;
    RETURN NULL;
END
$sync$;

REVOKE ALL ON FUNCTION "public".course_enrollments_sync_apply() FROM PUBLIC;

COMMIT;

-- ======================================================================================
-- Step: installs the trigger that enrolls what the queue holds when a transaction
--   commits
-- Locks: the queue table alone (only the sync functions write it), for milliseconds
-- Takes: milliseconds
-- ======================================================================================

-- Stop here if a statement above failed (psql goes on after an error without ON_ERROR_STOP).
\unset enrollments_ok_00000
\set enrollments_ok_:LAST_ERROR_SQLSTATE
\if :{?enrollments_ok_00000}
\else
\set ON_ERROR_STOP on
DO $stop$ BEGIN RAISE EXCEPTION 'a statement above failed: this script stops here, and nothing after it runs' USING HINT = 'fix what failed (the first ERROR above), then write the script again from where the database stands (alembic current)'; END $stop$;
\endif

BEGIN;

SET LOCAL search_path = pg_catalog, pg_temp;

SET LOCAL lock_timeout = '500ms';

SET LOCAL statement_timeout = '0';

DO $lock$
DECLARE
    held boolean;
BEGIN
    BEGIN  -- the table's lock, then the advisory lock unless a role that may deploy holds it
        LOCK TABLE "public".enrollments_lock IN EXCLUSIVE MODE NOWAIT;
        held := NOT pg_catalog.pg_try_advisory_xact_lock(28550410422479921)
            AND EXISTS (SELECT 1
            FROM pg_catalog.pg_locks AS l LEFT JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
            LEFT JOIN pg_catalog.pg_locks AS own_xid ON l.pid IS NULL AND own_xid.pid IS NULL
                AND own_xid.locktype = 'transactionid' AND own_xid.virtualtransaction = l.virtualtransaction
            LEFT JOIN pg_catalog.pg_prepared_xacts AS px ON px.transaction = own_xid.transactionid
            WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()) AND l.classid = (28550410422479921 >> 32)::oid AND l.objid = (28550410422479921 & 4294967295)::oid AND coalesce(pg_catalog.has_table_privilege(coalesce(a.usesysid, (SELECT r.oid FROM pg_catalog.pg_roles AS r WHERE r.rolname = px.owner)), pg_catalog.to_regclass('"public".enrollments_lock'), 'INSERT, UPDATE, DELETE, TRUNCATE'), true));
    EXCEPTION WHEN lock_not_available THEN
        held := true;
    END;
    IF held THEN
        RAISE EXCEPTION 'the enrollments lock is held by %; nothing more of alembic 0004:0005 --sql was changed',
            (SELECT pg_catalog.string_agg(CASE WHEN l.pid IS NULL
                THEN pg_catalog.format('prepared transaction %s (COMMIT PREPARED or ROLLBACK PREPARED ends it)',
                    coalesce(pg_catalog.quote_literal(px.gid), '(gid not readable)'))
                ELSE pg_catalog.format('pid %s (%s, connected since %s)', a.pid, a.application_name, a.backend_start)
                END, ', ')
            FROM pg_catalog.pg_locks AS l LEFT JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
            LEFT JOIN pg_catalog.pg_locks AS own_xid ON l.pid IS NULL AND own_xid.pid IS NULL
                AND own_xid.locktype = 'transactionid' AND own_xid.virtualtransaction = l.virtualtransaction
            LEFT JOIN pg_catalog.pg_prepared_xacts AS px ON px.transaction = own_xid.transactionid
            WHERE l.pid IS DISTINCT FROM pg_catalog.pg_backend_pid()
                  AND ((l.locktype = 'relation' AND l.granted AND l.mode <> 'AccessShareLock'
                        AND l.relation = pg_catalog.to_regclass('"public".enrollments_lock') AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()))
                       OR (l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()) AND l.classid = (28550410422479921 >> 32)::oid AND l.objid = (28550410422479921 & 4294967295)::oid AND coalesce(pg_catalog.has_table_privilege(coalesce(a.usesysid, (SELECT r.oid FROM pg_catalog.pg_roles AS r WHERE r.rolname = px.owner)), pg_catalog.to_regclass('"public".enrollments_lock'), 'INSERT, UPDATE, DELETE, TRUNCATE'), true))))
            USING HINT = 'run this script again when that session has finished';
    ELSIF NOT pg_catalog.pg_try_advisory_xact_lock(28550410422479921) THEN
        RAISE WARNING '% holds the advisory lock of releases before 1.3 but may not run a deploy (no INSERT, UPDATE, DELETE or TRUNCATE on "public".enrollments_lock): not waited for',
            (SELECT pg_catalog.string_agg(i.who, ', ') FROM (
                SELECT pg_catalog.format('pid %s (role %s, %s)', a.pid, a.usename,
                    coalesce(nullif(a.application_name, ''), 'no application_name'))
                FROM pg_catalog.pg_locks AS l JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
                WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()) AND l.classid = (28550410422479921 >> 32)::oid AND l.objid = (28550410422479921 & 4294967295)::oid AND NOT coalesce(pg_catalog.has_table_privilege(a.usesysid, pg_catalog.to_regclass('"public".enrollments_lock'), 'INSERT, UPDATE, DELETE, TRUNCATE'), true)) AS i(who));
    END IF;
END
$lock$;

DO $where$
DECLARE
    found text := '';
BEGIN
    IF pg_catalog.to_regclass('"public".alembic_version') IS NOT NULL THEN
        SELECT coalesce(pg_catalog.string_agg(version_num, ', ' ORDER BY version_num), '') INTO found FROM "public".alembic_version;
    END IF;
    IF found IS DISTINCT FROM '0004' THEN
        RAISE EXCEPTION 'this step expects the database at 0004, but it is at %: a step before it failed; nothing more of this script is applied', coalesce(nullif(found, ''), 'base')
            USING HINT = 'fix what failed first, then write the script again from where the database stands: ' || replace('alembic upgrade {found}:0005 --sql', '{found}', coalesce(nullif(found, ''), 'base'));
    END IF;
END
$where$;

-- installing the trigger that applies the sync queue: each attempt waits at most lock_timeout (500ms) for the tables, so the
-- application's writes never queue behind it for longer; retried until 10min.
DO $ddl$
DECLARE
    started timestamptz := pg_catalog.clock_timestamp();
    attempt integer := 0;
    holders text;
    budget text;
    deadline timestamptz;
    relation regclass;
BEGIN
    LOOP
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".course_enrollments_sync_pending') AND t.tgname = 'course_enrollments_sync_apply' AND NOT t.tgisinternal AND t.tgfoid = pg_catalog.to_regprocedure('"public".course_enrollments_sync_apply()') AND t.tgqual IS NOT NULL) THEN
                IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".course_enrollments_sync_pending') AND t.tgname = 'course_enrollments_sync_apply' AND NOT t.tgisinternal) THEN
                    DROP TRIGGER course_enrollments_sync_apply ON "public".course_enrollments_sync_pending;
                END IF;
                CREATE CONSTRAINT TRIGGER course_enrollments_sync_apply AFTER INSERT ON "public".course_enrollments_sync_pending
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.opens) EXECUTE FUNCTION "public".course_enrollments_sync_apply();
            END IF;
            EXIT;
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            attempt := attempt + 1;
            -- in this database only (another database's relation may have the same oid); a
            -- prepared transaction (no pid) by its gid, found through its own xid's lock
            SELECT pg_catalog.string_agg(DISTINCT CASE
                       WHEN l.pid IS NULL THEN pg_catalog.format('prepared transaction %s (owner %s, prepared %s ago: COMMIT PREPARED or ROLLBACK PREPARED ends it)',
                           coalesce(pg_catalog.quote_literal(px.gid), '(gid not readable)'), coalesce(px.owner::text, '?'),
                           coalesce(pg_catalog.date_trunc('second', pg_catalog.clock_timestamp() - px.prepared)::text, '?'))
                       ELSE pg_catalog.format('pid %s (%s, %s, transaction open for %s)',
                           a.pid, coalesce(nullif(a.application_name, ''), 'no application_name'),
                           coalesce(a.state, 'state hidden: grant pg_monitor to see it'),
                           coalesce(pg_catalog.date_trunc('second', pg_catalog.clock_timestamp() - a.xact_start)::text, 'a time hidden'))
                   END, '; ')
            INTO holders
            FROM pg_catalog.pg_locks AS l
            LEFT JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
            LEFT JOIN pg_catalog.pg_locks AS own_xid ON l.pid IS NULL AND own_xid.pid IS NULL
                AND own_xid.locktype = 'transactionid' AND own_xid.virtualtransaction = l.virtualtransaction
            LEFT JOIN pg_catalog.pg_prepared_xacts AS px ON px.transaction = own_xid.transactionid
            WHERE l.granted AND l.relation IN (pg_catalog.to_regclass('"public".course_enrollments_sync_pending'))
              AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d
                                WHERE d.datname = pg_catalog.current_database())
              AND l.mode IN ('AccessShareLock', 'RowShareLock', 'RowExclusiveLock', 'ShareUpdateExclusiveLock', 'ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock') AND l.pid IS DISTINCT FROM pg_catalog.pg_backend_pid();
            holders := coalesce(holders, 'a session that has just let go');
            IF pg_catalog.clock_timestamp() - started > interval '600 s' THEN
                RAISE EXCEPTION USING ERRCODE = 'lock_not_available',
                    MESSAGE = pg_catalog.format('installing the trigger that applies the sync queue: gave up after %s attempts over %s (lock_patience 10min); the tables are held by %s',
                        attempt, pg_catalog.date_trunc('second', pg_catalog.clock_timestamp() - started), holders);
            END IF;
            RAISE WARNING 'installing the trigger that applies the sync queue: a lock was not granted within 500ms (attempt %); held by %; retrying', attempt, holders;
            PERFORM pg_catalog.pg_sleep(least(5.0, pg_catalog.random() * 0.2 * 2 ^ least(attempt, 6)));
        END;
    END LOOP;
END
$ddl$;

COMMIT;

-- ======================================================================================
-- Step: installs the sync triggers
-- Locks: SHARE ROW EXCLUSIVE on group_members, users, groups and courses, for
--   milliseconds: writes to them wait; each attempt waits at most lock_timeout for its
--   locks, then retries with backoff until lock_patience
-- Takes: milliseconds, or retries while a long transaction holds one of the tables
-- ======================================================================================

-- Stop here if a statement above failed (psql goes on after an error without ON_ERROR_STOP).
\unset enrollments_ok_00000
\set enrollments_ok_:LAST_ERROR_SQLSTATE
\if :{?enrollments_ok_00000}
\else
\set ON_ERROR_STOP on
DO $stop$ BEGIN RAISE EXCEPTION 'a statement above failed: this script stops here, and nothing after it runs' USING HINT = 'fix what failed (the first ERROR above), then write the script again from where the database stands (alembic current)'; END $stop$;
\endif

BEGIN;

SET LOCAL search_path = pg_catalog, pg_temp;

SET LOCAL lock_timeout = '500ms';

SET LOCAL statement_timeout = '0';

DO $lock$
DECLARE
    held boolean;
BEGIN
    BEGIN  -- the table's lock, then the advisory lock unless a role that may deploy holds it
        LOCK TABLE "public".enrollments_lock IN EXCLUSIVE MODE NOWAIT;
        held := NOT pg_catalog.pg_try_advisory_xact_lock(28550410422479921)
            AND EXISTS (SELECT 1
            FROM pg_catalog.pg_locks AS l LEFT JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
            LEFT JOIN pg_catalog.pg_locks AS own_xid ON l.pid IS NULL AND own_xid.pid IS NULL
                AND own_xid.locktype = 'transactionid' AND own_xid.virtualtransaction = l.virtualtransaction
            LEFT JOIN pg_catalog.pg_prepared_xacts AS px ON px.transaction = own_xid.transactionid
            WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()) AND l.classid = (28550410422479921 >> 32)::oid AND l.objid = (28550410422479921 & 4294967295)::oid AND coalesce(pg_catalog.has_table_privilege(coalesce(a.usesysid, (SELECT r.oid FROM pg_catalog.pg_roles AS r WHERE r.rolname = px.owner)), pg_catalog.to_regclass('"public".enrollments_lock'), 'INSERT, UPDATE, DELETE, TRUNCATE'), true));
    EXCEPTION WHEN lock_not_available THEN
        held := true;
    END;
    IF held THEN
        RAISE EXCEPTION 'the enrollments lock is held by %; nothing more of alembic 0004:0005 --sql was changed',
            (SELECT pg_catalog.string_agg(CASE WHEN l.pid IS NULL
                THEN pg_catalog.format('prepared transaction %s (COMMIT PREPARED or ROLLBACK PREPARED ends it)',
                    coalesce(pg_catalog.quote_literal(px.gid), '(gid not readable)'))
                ELSE pg_catalog.format('pid %s (%s, connected since %s)', a.pid, a.application_name, a.backend_start)
                END, ', ')
            FROM pg_catalog.pg_locks AS l LEFT JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
            LEFT JOIN pg_catalog.pg_locks AS own_xid ON l.pid IS NULL AND own_xid.pid IS NULL
                AND own_xid.locktype = 'transactionid' AND own_xid.virtualtransaction = l.virtualtransaction
            LEFT JOIN pg_catalog.pg_prepared_xacts AS px ON px.transaction = own_xid.transactionid
            WHERE l.pid IS DISTINCT FROM pg_catalog.pg_backend_pid()
                  AND ((l.locktype = 'relation' AND l.granted AND l.mode <> 'AccessShareLock'
                        AND l.relation = pg_catalog.to_regclass('"public".enrollments_lock') AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()))
                       OR (l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()) AND l.classid = (28550410422479921 >> 32)::oid AND l.objid = (28550410422479921 & 4294967295)::oid AND coalesce(pg_catalog.has_table_privilege(coalesce(a.usesysid, (SELECT r.oid FROM pg_catalog.pg_roles AS r WHERE r.rolname = px.owner)), pg_catalog.to_regclass('"public".enrollments_lock'), 'INSERT, UPDATE, DELETE, TRUNCATE'), true))))
            USING HINT = 'run this script again when that session has finished';
    ELSIF NOT pg_catalog.pg_try_advisory_xact_lock(28550410422479921) THEN
        RAISE WARNING '% holds the advisory lock of releases before 1.3 but may not run a deploy (no INSERT, UPDATE, DELETE or TRUNCATE on "public".enrollments_lock): not waited for',
            (SELECT pg_catalog.string_agg(i.who, ', ') FROM (
                SELECT pg_catalog.format('pid %s (role %s, %s)', a.pid, a.usename,
                    coalesce(nullif(a.application_name, ''), 'no application_name'))
                FROM pg_catalog.pg_locks AS l JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
                WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()) AND l.classid = (28550410422479921 >> 32)::oid AND l.objid = (28550410422479921 & 4294967295)::oid AND NOT coalesce(pg_catalog.has_table_privilege(a.usesysid, pg_catalog.to_regclass('"public".enrollments_lock'), 'INSERT, UPDATE, DELETE, TRUNCATE'), true)) AS i(who));
    END IF;
END
$lock$;

DO $where$
DECLARE
    found text := '';
BEGIN
    IF pg_catalog.to_regclass('"public".alembic_version') IS NOT NULL THEN
        SELECT coalesce(pg_catalog.string_agg(version_num, ', ' ORDER BY version_num), '') INTO found FROM "public".alembic_version;
    END IF;
    IF found IS DISTINCT FROM '0004' THEN
        RAISE EXCEPTION 'this step expects the database at 0004, but it is at %: a step before it failed; nothing more of this script is applied', coalesce(nullif(found, ''), 'base')
            USING HINT = 'fix what failed first, then write the script again from where the database stands: ' || replace('alembic upgrade {found}:0005 --sql', '{found}', coalesce(nullif(found, ''), 'base'));
    END IF;
END
$where$;

-- installing the sync triggers: each attempt waits at most lock_timeout (500ms) for the tables, so the
-- application's writes never queue behind it for longer; retried until 10min.
DO $ddl$
DECLARE
    started timestamptz := pg_catalog.clock_timestamp();
    attempt integer := 0;
    holders text;
    budget text;
    deadline timestamptz;
    relation regclass;
BEGIN
    LOOP
        BEGIN
            -- the tables, all within one lock_timeout (none set: each waits as long as it takes)
            budget := nullif(pg_catalog.current_setting('lock_timeout'), '0');
            deadline := pg_catalog.clock_timestamp() + budget::interval;
            FOREACH relation IN ARRAY ARRAY[pg_catalog.to_regclass('"public".group_members'), pg_catalog.to_regclass('"public".users'), pg_catalog.to_regclass('"public".groups'), pg_catalog.to_regclass('"public".courses')] LOOP
                IF budget IS NOT NULL THEN
                    PERFORM pg_catalog.set_config('lock_timeout', pg_catalog.ceil(1000 * pg_catalog.date_part('epoch',
                        greatest(deadline - pg_catalog.clock_timestamp(), interval '1 ms')))::bigint || 'ms', true);
                END IF;
                EXECUTE pg_catalog.format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', relation);
            END LOOP;
            PERFORM pg_catalog.set_config('lock_timeout', coalesce(budget, '0'), true);
            IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".group_members') AND t.tgname = 'course_enrollments_sync_on_insert' AND NOT t.tgisinternal AND t.tgfoid = pg_catalog.to_regprocedure('"public".course_enrollments_sync_members()')) THEN
                IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".group_members') AND t.tgname = 'course_enrollments_sync_on_insert' AND NOT t.tgisinternal) THEN
                    DROP TRIGGER course_enrollments_sync_on_insert ON "public".group_members;
                END IF;
                CREATE TRIGGER course_enrollments_sync_on_insert AFTER INSERT ON "public".group_members REFERENCING NEW TABLE AS new_members
                FOR EACH STATEMENT EXECUTE FUNCTION "public".course_enrollments_sync_members();
            END IF;
            IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".group_members') AND t.tgname = 'course_enrollments_sync_on_update' AND NOT t.tgisinternal AND t.tgfoid = pg_catalog.to_regprocedure('"public".course_enrollments_sync_members()')) THEN
                IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".group_members') AND t.tgname = 'course_enrollments_sync_on_update' AND NOT t.tgisinternal) THEN
                    DROP TRIGGER course_enrollments_sync_on_update ON "public".group_members;
                END IF;
                CREATE TRIGGER course_enrollments_sync_on_update AFTER UPDATE ON "public".group_members
                REFERENCING OLD TABLE AS old_members NEW TABLE AS new_members
                FOR EACH STATEMENT EXECUTE FUNCTION "public".course_enrollments_sync_members();
            END IF;
            IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".users') AND t.tgname = 'course_enrollments_sync_on_user' AND NOT t.tgisinternal AND t.tgfoid = pg_catalog.to_regprocedure('"public".course_enrollments_sync_user()')) THEN
                IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".users') AND t.tgname = 'course_enrollments_sync_on_user' AND NOT t.tgisinternal) THEN
                    DROP TRIGGER course_enrollments_sync_on_user ON "public".users;
                END IF;
                CREATE TRIGGER course_enrollments_sync_on_user AFTER UPDATE OF role, school_id ON "public".users FOR EACH ROW
                WHEN (NEW.role = 'student' AND (OLD.role IS DISTINCT FROM NEW.role
                      OR OLD.school_id IS DISTINCT FROM NEW.school_id))
                EXECUTE FUNCTION "public".course_enrollments_sync_user();
            END IF;
            IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".groups') AND t.tgname = 'course_enrollments_sync_on_group' AND NOT t.tgisinternal AND t.tgfoid = pg_catalog.to_regprocedure('"public".course_enrollments_sync_group()')) THEN
                IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".groups') AND t.tgname = 'course_enrollments_sync_on_group' AND NOT t.tgisinternal) THEN
                    DROP TRIGGER course_enrollments_sync_on_group ON "public".groups;
                END IF;
                CREATE TRIGGER course_enrollments_sync_on_group AFTER UPDATE OF course_id ON "public".groups FOR EACH ROW
                WHEN (OLD.course_id IS DISTINCT FROM NEW.course_id)
                EXECUTE FUNCTION "public".course_enrollments_sync_group();
            END IF;
            IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".courses') AND t.tgname = 'course_enrollments_sync_on_course' AND NOT t.tgisinternal AND t.tgfoid = pg_catalog.to_regprocedure('"public".course_enrollments_sync_course()')) THEN
                IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".courses') AND t.tgname = 'course_enrollments_sync_on_course' AND NOT t.tgisinternal) THEN
                    DROP TRIGGER course_enrollments_sync_on_course ON "public".courses;
                END IF;
                CREATE TRIGGER course_enrollments_sync_on_course AFTER UPDATE OF school_id ON "public".courses FOR EACH ROW
                WHEN (OLD.school_id IS DISTINCT FROM NEW.school_id)
                EXECUTE FUNCTION "public".course_enrollments_sync_course();
            END IF;
            EXIT;
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            attempt := attempt + 1;
            -- in this database only (another database's relation may have the same oid); a
            -- prepared transaction (no pid) by its gid, found through its own xid's lock
            SELECT pg_catalog.string_agg(DISTINCT CASE
                       WHEN l.pid IS NULL THEN pg_catalog.format('prepared transaction %s (owner %s, prepared %s ago: COMMIT PREPARED or ROLLBACK PREPARED ends it)',
                           coalesce(pg_catalog.quote_literal(px.gid), '(gid not readable)'), coalesce(px.owner::text, '?'),
                           coalesce(pg_catalog.date_trunc('second', pg_catalog.clock_timestamp() - px.prepared)::text, '?'))
                       ELSE pg_catalog.format('pid %s (%s, %s, transaction open for %s)',
                           a.pid, coalesce(nullif(a.application_name, ''), 'no application_name'),
                           coalesce(a.state, 'state hidden: grant pg_monitor to see it'),
                           coalesce(pg_catalog.date_trunc('second', pg_catalog.clock_timestamp() - a.xact_start)::text, 'a time hidden'))
                   END, '; ')
            INTO holders
            FROM pg_catalog.pg_locks AS l
            LEFT JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
            LEFT JOIN pg_catalog.pg_locks AS own_xid ON l.pid IS NULL AND own_xid.pid IS NULL
                AND own_xid.locktype = 'transactionid' AND own_xid.virtualtransaction = l.virtualtransaction
            LEFT JOIN pg_catalog.pg_prepared_xacts AS px ON px.transaction = own_xid.transactionid
            WHERE l.granted AND l.relation IN (pg_catalog.to_regclass('"public".group_members'), pg_catalog.to_regclass('"public".users'), pg_catalog.to_regclass('"public".groups'), pg_catalog.to_regclass('"public".courses'))
              AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d
                                WHERE d.datname = pg_catalog.current_database())
              AND l.mode IN ('RowExclusiveLock', 'ShareUpdateExclusiveLock', 'ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock') AND l.pid IS DISTINCT FROM pg_catalog.pg_backend_pid();
            holders := coalesce(holders, 'a session that has just let go');
            IF pg_catalog.clock_timestamp() - started > interval '600 s' THEN
                RAISE EXCEPTION USING ERRCODE = 'lock_not_available',
                    MESSAGE = pg_catalog.format('installing the sync triggers: gave up after %s attempts over %s (lock_patience 10min); the tables are held by %s',
                        attempt, pg_catalog.date_trunc('second', pg_catalog.clock_timestamp() - started), holders);
            END IF;
            RAISE WARNING 'installing the sync triggers: a lock was not granted within 500ms (attempt %); held by %; retrying', attempt, holders;
            PERFORM pg_catalog.pg_sleep(least(5.0, pg_catalog.random() * 0.2 * 2 ^ least(attempt, 6)));
        END;
    END LOOP;
END
$ddl$;

COMMIT;

-- ======================================================================================
-- Step: drops older sync functions outside this schema that no trigger calls
-- Locks: those functions only
-- Takes: milliseconds
-- ======================================================================================

-- Stop here if a statement above failed (psql goes on after an error without ON_ERROR_STOP).
\unset enrollments_ok_00000
\set enrollments_ok_:LAST_ERROR_SQLSTATE
\if :{?enrollments_ok_00000}
\else
\set ON_ERROR_STOP on
DO $stop$ BEGIN RAISE EXCEPTION 'a statement above failed: this script stops here, and nothing after it runs' USING HINT = 'fix what failed (the first ERROR above), then write the script again from where the database stands (alembic current)'; END $stop$;
\endif

BEGIN;

SET LOCAL search_path = pg_catalog, pg_temp;

SET LOCAL lock_timeout = '500ms';

SET LOCAL statement_timeout = '0';

DO $lock$
DECLARE
    held boolean;
BEGIN
    BEGIN  -- the table's lock, then the advisory lock unless a role that may deploy holds it
        LOCK TABLE "public".enrollments_lock IN EXCLUSIVE MODE NOWAIT;
        held := NOT pg_catalog.pg_try_advisory_xact_lock(28550410422479921)
            AND EXISTS (SELECT 1
            FROM pg_catalog.pg_locks AS l LEFT JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
            LEFT JOIN pg_catalog.pg_locks AS own_xid ON l.pid IS NULL AND own_xid.pid IS NULL
                AND own_xid.locktype = 'transactionid' AND own_xid.virtualtransaction = l.virtualtransaction
            LEFT JOIN pg_catalog.pg_prepared_xacts AS px ON px.transaction = own_xid.transactionid
            WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()) AND l.classid = (28550410422479921 >> 32)::oid AND l.objid = (28550410422479921 & 4294967295)::oid AND coalesce(pg_catalog.has_table_privilege(coalesce(a.usesysid, (SELECT r.oid FROM pg_catalog.pg_roles AS r WHERE r.rolname = px.owner)), pg_catalog.to_regclass('"public".enrollments_lock'), 'INSERT, UPDATE, DELETE, TRUNCATE'), true));
    EXCEPTION WHEN lock_not_available THEN
        held := true;
    END;
    IF held THEN
        RAISE EXCEPTION 'the enrollments lock is held by %; nothing more of alembic 0004:0005 --sql was changed',
            (SELECT pg_catalog.string_agg(CASE WHEN l.pid IS NULL
                THEN pg_catalog.format('prepared transaction %s (COMMIT PREPARED or ROLLBACK PREPARED ends it)',
                    coalesce(pg_catalog.quote_literal(px.gid), '(gid not readable)'))
                ELSE pg_catalog.format('pid %s (%s, connected since %s)', a.pid, a.application_name, a.backend_start)
                END, ', ')
            FROM pg_catalog.pg_locks AS l LEFT JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
            LEFT JOIN pg_catalog.pg_locks AS own_xid ON l.pid IS NULL AND own_xid.pid IS NULL
                AND own_xid.locktype = 'transactionid' AND own_xid.virtualtransaction = l.virtualtransaction
            LEFT JOIN pg_catalog.pg_prepared_xacts AS px ON px.transaction = own_xid.transactionid
            WHERE l.pid IS DISTINCT FROM pg_catalog.pg_backend_pid()
                  AND ((l.locktype = 'relation' AND l.granted AND l.mode <> 'AccessShareLock'
                        AND l.relation = pg_catalog.to_regclass('"public".enrollments_lock') AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()))
                       OR (l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()) AND l.classid = (28550410422479921 >> 32)::oid AND l.objid = (28550410422479921 & 4294967295)::oid AND coalesce(pg_catalog.has_table_privilege(coalesce(a.usesysid, (SELECT r.oid FROM pg_catalog.pg_roles AS r WHERE r.rolname = px.owner)), pg_catalog.to_regclass('"public".enrollments_lock'), 'INSERT, UPDATE, DELETE, TRUNCATE'), true))))
            USING HINT = 'run this script again when that session has finished';
    ELSIF NOT pg_catalog.pg_try_advisory_xact_lock(28550410422479921) THEN
        RAISE WARNING '% holds the advisory lock of releases before 1.3 but may not run a deploy (no INSERT, UPDATE, DELETE or TRUNCATE on "public".enrollments_lock): not waited for',
            (SELECT pg_catalog.string_agg(i.who, ', ') FROM (
                SELECT pg_catalog.format('pid %s (role %s, %s)', a.pid, a.usename,
                    coalesce(nullif(a.application_name, ''), 'no application_name'))
                FROM pg_catalog.pg_locks AS l JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
                WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()) AND l.classid = (28550410422479921 >> 32)::oid AND l.objid = (28550410422479921 & 4294967295)::oid AND NOT coalesce(pg_catalog.has_table_privilege(a.usesysid, pg_catalog.to_regclass('"public".enrollments_lock'), 'INSERT, UPDATE, DELETE, TRUNCATE'), true)) AS i(who));
    END IF;
END
$lock$;

DO $where$
DECLARE
    found text := '';
BEGIN
    IF pg_catalog.to_regclass('"public".alembic_version') IS NOT NULL THEN
        SELECT coalesce(pg_catalog.string_agg(version_num, ', ' ORDER BY version_num), '') INTO found FROM "public".alembic_version;
    END IF;
    IF found IS DISTINCT FROM '0004' THEN
        RAISE EXCEPTION 'this step expects the database at 0004, but it is at %: a step before it failed; nothing more of this script is applied', coalesce(nullif(found, ''), 'base')
            USING HINT = 'fix what failed first, then write the script again from where the database stands: ' || replace('alembic upgrade {found}:0005 --sql', '{found}', coalesce(nullif(found, ''), 'base'));
    END IF;
END
$where$;

-- Older sync functions outside public that no trigger calls any more: dropped, so
-- that none is left for a role to call.
DO $strays$
DECLARE
    f record;
BEGIN
    FOR f IN
        SELECT p.oid::pg_catalog.regprocedure AS signature
        FROM pg_catalog.pg_proc AS p
        JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
        WHERE p.proname IN ('course_enrollments_sync_members', 'course_enrollments_sync_user', 'course_enrollments_sync_group', 'course_enrollments_sync_course', 'course_enrollments_sync_apply')
          AND n.nspname <> 'public'
          AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgfoid = p.oid)
    LOOP
        EXECUTE pg_catalog.format('DROP FUNCTION %s', f.signature);
    END LOOP;
END
$strays$;

COMMIT;

-- ======================================================================================
-- Step: writes the missing enrollments: the candidates once per pass (one read), then
--   one batch per transaction, paced on replica lag, resumable from its checkpoint
-- Locks: each batch: the memberships it reads FOR SHARE and the enrollments it writes,
--   for its transaction (about 100 ms); the candidates' read locks no row
-- Takes: 25 to 65 min at 100M memberships (39 to 114 s at 3M measured, by shape), its
--   candidates 3 to 5 min a pass; it says how far it got every 5 s
-- ======================================================================================

-- Stop here if a statement above failed (psql goes on after an error without ON_ERROR_STOP).
\unset enrollments_ok_00000
\set enrollments_ok_:LAST_ERROR_SQLSTATE
\if :{?enrollments_ok_00000}
\else
\set ON_ERROR_STOP on
DO $stop$ BEGIN RAISE EXCEPTION 'a statement above failed: this script stops here, and nothing after it runs' USING HINT = 'fix what failed (the first ERROR above), then write the script again from where the database stands (alembic current)'; END $stop$;
\endif

-- The backfill: candidates once per pass, then one batch per transaction.
DO $backfill$
DECLARE
    run record;
    found_pass record;
    result record;
    lo bigint;
    last_pass boolean;
    passes integer := 0;
    size integer := 1000;
    attempt integer;
    started timestamptz;
    done_batches integer := 0;
    done_created bigint := 0;
    done_reactivated bigint := 0;
    standbys record;
    replayed pg_lsn;
    replay_moved timestamptz := clock_timestamp();
    waited_at timestamptz;
    told boolean := false;
    pass_number integer;
    pass_total bigint;
    reported_at timestamptz;
    orders record;
    ready bigint;
    holding text;
    held_said_at timestamptz;
    paused_since timestamptz;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    PERFORM pg_catalog.set_config('lock_timeout', '500ms', true);
    PERFORM pg_catalog.set_config('statement_timeout', '0', true);
    DECLARE
        held boolean;
    BEGIN
        BEGIN  -- the table's lock, then the advisory lock unless a role that may deploy holds it
            LOCK TABLE "public".enrollments_lock IN EXCLUSIVE MODE NOWAIT;
            held := NOT pg_catalog.pg_try_advisory_xact_lock(28550410422479921)
                AND EXISTS (SELECT 1
                FROM pg_catalog.pg_locks AS l LEFT JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
                LEFT JOIN pg_catalog.pg_locks AS own_xid ON l.pid IS NULL AND own_xid.pid IS NULL
                    AND own_xid.locktype = 'transactionid' AND own_xid.virtualtransaction = l.virtualtransaction
                LEFT JOIN pg_catalog.pg_prepared_xacts AS px ON px.transaction = own_xid.transactionid
                WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()) AND l.classid = (28550410422479921 >> 32)::oid AND l.objid = (28550410422479921 & 4294967295)::oid AND coalesce(pg_catalog.has_table_privilege(coalesce(a.usesysid, (SELECT r.oid FROM pg_catalog.pg_roles AS r WHERE r.rolname = px.owner)), pg_catalog.to_regclass('"public".enrollments_lock'), 'INSERT, UPDATE, DELETE, TRUNCATE'), true));
        EXCEPTION WHEN lock_not_available THEN
            held := true;
        END;
        IF held THEN
            RAISE EXCEPTION 'backfill 0005: the enrollments lock is held by % (taken between two batches); nothing of this batch was written',
                (SELECT pg_catalog.string_agg(CASE WHEN l.pid IS NULL
                    THEN pg_catalog.format('prepared transaction %s (COMMIT PREPARED or ROLLBACK PREPARED ends it)',
                        coalesce(pg_catalog.quote_literal(px.gid), '(gid not readable)'))
                    ELSE pg_catalog.format('pid %s (%s, connected since %s)', a.pid, a.application_name, a.backend_start)
                    END, ', ')
                FROM pg_catalog.pg_locks AS l LEFT JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
                LEFT JOIN pg_catalog.pg_locks AS own_xid ON l.pid IS NULL AND own_xid.pid IS NULL
                    AND own_xid.locktype = 'transactionid' AND own_xid.virtualtransaction = l.virtualtransaction
                LEFT JOIN pg_catalog.pg_prepared_xacts AS px ON px.transaction = own_xid.transactionid
                WHERE l.pid IS DISTINCT FROM pg_catalog.pg_backend_pid()
                      AND ((l.locktype = 'relation' AND l.granted AND l.mode <> 'AccessShareLock'
                            AND l.relation = pg_catalog.to_regclass('"public".enrollments_lock') AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()))
                           OR (l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()) AND l.classid = (28550410422479921 >> 32)::oid AND l.objid = (28550410422479921 & 4294967295)::oid AND coalesce(pg_catalog.has_table_privilege(coalesce(a.usesysid, (SELECT r.oid FROM pg_catalog.pg_roles AS r WHERE r.rolname = px.owner)), pg_catalog.to_regclass('"public".enrollments_lock'), 'INSERT, UPDATE, DELETE, TRUNCATE'), true))))
                USING HINT = 'run this script again when that session has finished: it goes on from its checkpoint';
        ELSIF NOT pg_catalog.pg_try_advisory_xact_lock(28550410422479921) THEN
            RAISE WARNING '% holds the advisory lock of releases before 1.3 but may not run a deploy (no INSERT, UPDATE, DELETE or TRUNCATE on "public".enrollments_lock): not waited for',
                (SELECT pg_catalog.string_agg(i.who, ', ') FROM (
                    SELECT pg_catalog.format('pid %s (role %s, %s)', a.pid, a.usename,
                        coalesce(nullif(a.application_name, ''), 'no application_name'))
                    FROM pg_catalog.pg_locks AS l JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
                    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()) AND l.classid = (28550410422479921 >> 32)::oid AND l.objid = (28550410422479921 & 4294967295)::oid AND NOT coalesce(pg_catalog.has_table_privilege(a.usesysid, pg_catalog.to_regclass('"public".enrollments_lock'), 'INSERT, UPDATE, DELETE, TRUNCATE'), true)) AS i(who));
        END IF;
    END;
    WITH trigger_now AS (
        SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".group_members') AND t.tgname = 'course_enrollments_sync_on_insert' AND NOT t.tgisinternal)
           AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".group_members') AND t.tgname = 'course_enrollments_sync_on_update' AND NOT t.tgisinternal)
           AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".users') AND t.tgname = 'course_enrollments_sync_on_user' AND NOT t.tgisinternal)
           AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".groups') AND t.tgname = 'course_enrollments_sync_on_group' AND NOT t.tgisinternal)
           AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".courses') AND t.tgname = 'course_enrollments_sync_on_course' AND NOT t.tgisinternal)
           AND (pg_catalog.to_regclass('"public".course_enrollments_sync_pending') IS NULL OR EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".course_enrollments_sync_pending') AND t.tgname = 'course_enrollments_sync_apply' AND NOT t.tgisinternal)) AS installed
    ),
    resumable AS (
        SELECT r.id, r.pass, r.checkpoint, r.sync_trigger, r.candidates FROM "public".enrollment_backfill_runs AS r
        WHERE r.finished_at IS NULL AND r.pass IS NOT NULL
        ORDER BY r.id DESC
        LIMIT 1
    ),
    closed AS (
        UPDATE "public".enrollment_backfill_runs SET finished_at = now()
        WHERE finished_at IS NULL AND id NOT IN (SELECT id FROM resumable)
    ),
    started AS (
        INSERT INTO "public".enrollment_backfill_runs (source, sync_trigger, pass)
        SELECT '0005', t.installed, 0 FROM trigger_now AS t
        WHERE NOT EXISTS (SELECT 1 FROM resumable)
        RETURNING id
    )
    SELECT r.id, true AS resumed, r.pass AS pass_number, r.sync_trigger,
        r.candidates - r.checkpoint AS left_over,
        CASE WHEN EXISTS (
            SELECT 1 FROM "public".enrollment_backfill_candidates AS k WHERE k.n > r.checkpoint
        ) THEN r.checkpoint END AS checkpoint
    FROM resumable AS r
    UNION ALL
    SELECT s.id, false, 0, false, NULL, NULL FROM started AS s
    INTO run;
    IF run.resumed THEN
        RAISE NOTICE 'backfill 0005: resuming run % in pass % after candidate %', run.id, run.pass_number, coalesce(run.checkpoint::text, '(its candidates are gone: computing them again)');
    END IF;
    COMMIT;
    lo := run.checkpoint;
    last_pass := run.sync_trigger;
    pass_number := run.pass_number;
    LOOP
        IF lo IS NULL THEN
            -- A new pass: the candidates, computed once (a read; it writes only its table).
            EXIT WHEN passes >= 5;
            PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
            PERFORM pg_catalog.set_config('lock_timeout', '500ms', true);
            PERFORM pg_catalog.set_config('statement_timeout', '0', true);
            DECLARE
                held boolean;
            BEGIN
                BEGIN  -- the table's lock, then the advisory lock unless a role that may deploy holds it
                    LOCK TABLE "public".enrollments_lock IN EXCLUSIVE MODE NOWAIT;
                    held := NOT pg_catalog.pg_try_advisory_xact_lock(28550410422479921)
                        AND EXISTS (SELECT 1
                        FROM pg_catalog.pg_locks AS l LEFT JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
                        LEFT JOIN pg_catalog.pg_locks AS own_xid ON l.pid IS NULL AND own_xid.pid IS NULL
                            AND own_xid.locktype = 'transactionid' AND own_xid.virtualtransaction = l.virtualtransaction
                        LEFT JOIN pg_catalog.pg_prepared_xacts AS px ON px.transaction = own_xid.transactionid
                        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()) AND l.classid = (28550410422479921 >> 32)::oid AND l.objid = (28550410422479921 & 4294967295)::oid AND coalesce(pg_catalog.has_table_privilege(coalesce(a.usesysid, (SELECT r.oid FROM pg_catalog.pg_roles AS r WHERE r.rolname = px.owner)), pg_catalog.to_regclass('"public".enrollments_lock'), 'INSERT, UPDATE, DELETE, TRUNCATE'), true));
                EXCEPTION WHEN lock_not_available THEN
                    held := true;
                END;
                IF held THEN
                    RAISE EXCEPTION 'backfill 0005: the enrollments lock is held by % (taken between two batches); nothing of this batch was written',
                        (SELECT pg_catalog.string_agg(CASE WHEN l.pid IS NULL
                            THEN pg_catalog.format('prepared transaction %s (COMMIT PREPARED or ROLLBACK PREPARED ends it)',
                                coalesce(pg_catalog.quote_literal(px.gid), '(gid not readable)'))
                            ELSE pg_catalog.format('pid %s (%s, connected since %s)', a.pid, a.application_name, a.backend_start)
                            END, ', ')
                        FROM pg_catalog.pg_locks AS l LEFT JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
                        LEFT JOIN pg_catalog.pg_locks AS own_xid ON l.pid IS NULL AND own_xid.pid IS NULL
                            AND own_xid.locktype = 'transactionid' AND own_xid.virtualtransaction = l.virtualtransaction
                        LEFT JOIN pg_catalog.pg_prepared_xacts AS px ON px.transaction = own_xid.transactionid
                        WHERE l.pid IS DISTINCT FROM pg_catalog.pg_backend_pid()
                              AND ((l.locktype = 'relation' AND l.granted AND l.mode <> 'AccessShareLock'
                                    AND l.relation = pg_catalog.to_regclass('"public".enrollments_lock') AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()))
                                   OR (l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()) AND l.classid = (28550410422479921 >> 32)::oid AND l.objid = (28550410422479921 & 4294967295)::oid AND coalesce(pg_catalog.has_table_privilege(coalesce(a.usesysid, (SELECT r.oid FROM pg_catalog.pg_roles AS r WHERE r.rolname = px.owner)), pg_catalog.to_regclass('"public".enrollments_lock'), 'INSERT, UPDATE, DELETE, TRUNCATE'), true))))
                        USING HINT = 'run this script again when that session has finished: it goes on from its checkpoint';
                ELSIF NOT pg_catalog.pg_try_advisory_xact_lock(28550410422479921) THEN
                    RAISE WARNING '% holds the advisory lock of releases before 1.3 but may not run a deploy (no INSERT, UPDATE, DELETE or TRUNCATE on "public".enrollments_lock): not waited for',
                        (SELECT pg_catalog.string_agg(i.who, ', ') FROM (
                            SELECT pg_catalog.format('pid %s (role %s, %s)', a.pid, a.usename,
                                coalesce(nullif(a.application_name, ''), 'no application_name'))
                            FROM pg_catalog.pg_locks AS l JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
                            WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()) AND l.classid = (28550410422479921 >> 32)::oid AND l.objid = (28550410422479921 & 4294967295)::oid AND NOT coalesce(pg_catalog.has_table_privilege(a.usesysid, pg_catalog.to_regclass('"public".enrollments_lock'), 'INSERT, UPDATE, DELETE, TRUNCATE'), true)) AS i(who));
                END IF;
            END;
            started := clock_timestamp();
            SET LOCAL work_mem = '64MB';
            SET LOCAL jit = off;
            TRUNCATE "public".enrollment_backfill_candidates;
            INSERT INTO "public".enrollment_backfill_candidates (n, student_id, course_id, memberships)
            SELECT pg_catalog.row_number() OVER (ORDER BY p.student_id, p.course_id),
                p.student_id, p.course_id, p.memberships
            FROM (
                SELECT gm.user_id AS student_id, g.course_id,
                    pg_catalog.array_agg(gm.id ORDER BY gm.id) AS memberships
                FROM "public".group_members AS gm
                JOIN "public".groups AS g ON g.id = gm.group_id
                JOIN "public".courses AS c ON c.id = g.course_id
                JOIN "public".users AS u ON u.id = gm.user_id
                WHERE gm.active IS TRUE AND u.role = 'student' AND u.school_id = c.school_id
                  AND NOT EXISTS (
                    SELECT 1 FROM "public".course_enrollments AS ce
                    WHERE ce.course_id = g.course_id AND ce.student_id = gm.user_id AND ce.active
                  )
                GROUP BY gm.user_id, g.course_id
            ) AS p;
            WITH trigger_now AS (
                SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".group_members') AND t.tgname = 'course_enrollments_sync_on_insert' AND NOT t.tgisinternal)
                   AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".group_members') AND t.tgname = 'course_enrollments_sync_on_update' AND NOT t.tgisinternal)
                   AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".users') AND t.tgname = 'course_enrollments_sync_on_user' AND NOT t.tgisinternal)
                   AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".groups') AND t.tgname = 'course_enrollments_sync_on_group' AND NOT t.tgisinternal)
                   AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".courses') AND t.tgname = 'course_enrollments_sync_on_course' AND NOT t.tgisinternal)
                   AND (pg_catalog.to_regclass('"public".course_enrollments_sync_pending') IS NULL OR EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".course_enrollments_sync_pending') AND t.tgname = 'course_enrollments_sync_apply' AND NOT t.tgisinternal)) AS installed
            )
            UPDATE "public".enrollment_backfill_runs AS r
            SET pass = coalesce(r.pass, 0) + 1, checkpoint = 0,
                candidates = (SELECT coalesce(pg_catalog.max(k.n), 0) FROM "public".enrollment_backfill_candidates AS k),
                sync_trigger = tn.installed
            FROM trigger_now AS tn
            WHERE r.id = run.id
            RETURNING r.pass AS pass_number, r.candidates, r.sync_trigger
            INTO found_pass;
            RAISE NOTICE 'backfill 0005: pass %: % pairs to create or reactivate (candidates in % s)',
                found_pass.pass_number, found_pass.candidates, round(extract(epoch FROM clock_timestamp() - started)::numeric, 1);
            COMMIT;
            passes := passes + 1;
            EXIT WHEN found_pass.candidates = 0;
            lo := 0;
            last_pass := found_pass.sync_trigger;
            pass_number := found_pass.pass_number;
            pass_total := found_pass.candidates;
        END IF;
        LOOP
            attempt := 0;
            PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
            PERFORM pg_catalog.set_config('lock_timeout', '500ms', true);
            PERFORM pg_catalog.set_config('statement_timeout', '0', true);
            DECLARE
                held boolean;
            BEGIN
                BEGIN  -- the table's lock, then the advisory lock unless a role that may deploy holds it
                    LOCK TABLE "public".enrollments_lock IN EXCLUSIVE MODE NOWAIT;
                    held := NOT pg_catalog.pg_try_advisory_xact_lock(28550410422479921)
                        AND EXISTS (SELECT 1
                        FROM pg_catalog.pg_locks AS l LEFT JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
                        LEFT JOIN pg_catalog.pg_locks AS own_xid ON l.pid IS NULL AND own_xid.pid IS NULL
                            AND own_xid.locktype = 'transactionid' AND own_xid.virtualtransaction = l.virtualtransaction
                        LEFT JOIN pg_catalog.pg_prepared_xacts AS px ON px.transaction = own_xid.transactionid
                        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()) AND l.classid = (28550410422479921 >> 32)::oid AND l.objid = (28550410422479921 & 4294967295)::oid AND coalesce(pg_catalog.has_table_privilege(coalesce(a.usesysid, (SELECT r.oid FROM pg_catalog.pg_roles AS r WHERE r.rolname = px.owner)), pg_catalog.to_regclass('"public".enrollments_lock'), 'INSERT, UPDATE, DELETE, TRUNCATE'), true));
                EXCEPTION WHEN lock_not_available THEN
                    held := true;
                END;
                IF held THEN
                    RAISE EXCEPTION 'backfill 0005: the enrollments lock is held by % (taken between two batches); nothing of this batch was written',
                        (SELECT pg_catalog.string_agg(CASE WHEN l.pid IS NULL
                            THEN pg_catalog.format('prepared transaction %s (COMMIT PREPARED or ROLLBACK PREPARED ends it)',
                                coalesce(pg_catalog.quote_literal(px.gid), '(gid not readable)'))
                            ELSE pg_catalog.format('pid %s (%s, connected since %s)', a.pid, a.application_name, a.backend_start)
                            END, ', ')
                        FROM pg_catalog.pg_locks AS l LEFT JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
                        LEFT JOIN pg_catalog.pg_locks AS own_xid ON l.pid IS NULL AND own_xid.pid IS NULL
                            AND own_xid.locktype = 'transactionid' AND own_xid.virtualtransaction = l.virtualtransaction
                        LEFT JOIN pg_catalog.pg_prepared_xacts AS px ON px.transaction = own_xid.transactionid
                        WHERE l.pid IS DISTINCT FROM pg_catalog.pg_backend_pid()
                              AND ((l.locktype = 'relation' AND l.granted AND l.mode <> 'AccessShareLock'
                                    AND l.relation = pg_catalog.to_regclass('"public".enrollments_lock') AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()))
                                   OR (l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()) AND l.classid = (28550410422479921 >> 32)::oid AND l.objid = (28550410422479921 & 4294967295)::oid AND coalesce(pg_catalog.has_table_privilege(coalesce(a.usesysid, (SELECT r.oid FROM pg_catalog.pg_roles AS r WHERE r.rolname = px.owner)), pg_catalog.to_regclass('"public".enrollments_lock'), 'INSERT, UPDATE, DELETE, TRUNCATE'), true))))
                        USING HINT = 'run this script again when that session has finished: it goes on from its checkpoint';
                ELSIF NOT pg_catalog.pg_try_advisory_xact_lock(28550410422479921) THEN
                    RAISE WARNING '% holds the advisory lock of releases before 1.3 but may not run a deploy (no INSERT, UPDATE, DELETE or TRUNCATE on "public".enrollments_lock): not waited for',
                        (SELECT pg_catalog.string_agg(i.who, ', ') FROM (
                            SELECT pg_catalog.format('pid %s (role %s, %s)', a.pid, a.usename,
                                coalesce(nullif(a.application_name, ''), 'no application_name'))
                            FROM pg_catalog.pg_locks AS l JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
                            WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()) AND l.classid = (28550410422479921 >> 32)::oid AND l.objid = (28550410422479921 & 4294967295)::oid AND NOT coalesce(pg_catalog.has_table_privilege(a.usesysid, pg_catalog.to_regclass('"public".enrollments_lock'), 'INSERT, UPDATE, DELETE, TRUNCATE'), true)) AS i(who));
                END IF;
            END;
            -- Pace on the standbys: wait while one is more than 10 s behind.
            LOOP
                SELECT count(*) FILTER (WHERE r.replay_lsn IS NULL) AS hidden,
                       min(r.replay_lsn) AS replay,
                       max(extract(epoch FROM r.replay_lag)) AS seconds,
                       max(pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), r.replay_lsn)) AS bytes
                INTO standbys FROM pg_catalog.pg_stat_replication AS r;
                IF standbys.hidden > 0 THEN
                    IF NOT told THEN
                        RAISE WARNING 'backfill 0005: cannot read the replication lag of % standby(s): role % may not see the lag columns of pg_stat_replication; the backfill does not pace on them; GRANT pg_monitor TO %', standbys.hidden, current_user, current_user;
                        told := true;
                    END IF;
                END IF;
                IF standbys.replay IS DISTINCT FROM replayed THEN
                    replayed := standbys.replay;
                    replay_moved := clock_timestamp();
                END IF;
                EXIT WHEN coalesce(standbys.bytes, 0) <= 0
                    OR greatest(coalesce(standbys.seconds, 0),
                                extract(epoch FROM clock_timestamp() - replay_moved)) <= 10.0;
                IF waited_at IS NULL OR clock_timestamp() - waited_at > interval '10 s' THEN
                    RAISE NOTICE 'backfill 0005: waiting: a standby is % MB / % s behind, above the bound of 10 s (-x max_replica_lag)',
                        round(standbys.bytes / 1048576.0, 1), round(greatest(coalesce(standbys.seconds, 0), extract(epoch FROM clock_timestamp() - replay_moved))::numeric, 1);
                    waited_at := clock_timestamp();
                END IF;
                PERFORM pg_catalog.pg_sleep(1);
            END LOOP;
            waited_at := NULL;
            -- The orders (enrollments pause, resume, throttle) and the health checks.
            LOOP
                -- pg_stat_activity and the progress views are read once a transaction: read anew
                PERFORM pg_catalog.pg_stat_clear_snapshot();
                -- WAL waiting to be archived: counted only where the role may (a plan naming a
                -- function the role may not call fails even where that part never runs)
                ready := NULL;
                IF pg_catalog.current_setting('archive_mode') IN ('on', 'always')
                   AND pg_catalog.has_function_privilege('pg_catalog.pg_ls_archive_statusdir()', 'EXECUTE') THEN
                    EXECUTE 'SELECT pg_catalog.count(*) FROM pg_catalog.pg_ls_archive_statusdir() AS w WHERE w.name LIKE ''%.ready'''
                        INTO ready;
                END IF;
                orders := NULL;
                SELECT c.paused_at IS NOT NULL AND (c.paused_until IS NULL OR c.paused_until > pg_catalog.now()) AS paused,
                       c.changed_by, c.sleep, c.max_rate, c.batch_time
                INTO orders FROM "public".enrollment_backfill_control AS c WHERE c.id;
                holding := NULL;
                IF coalesce(orders.paused, false) THEN
                    holding := pg_catalog.format('paused by %s (enrollments resume goes on)', orders.changed_by);
                    paused_since := coalesce(paused_since, pg_catalog.clock_timestamp());
                    IF pg_catalog.clock_timestamp() - paused_since > interval '3600 s' THEN
                        RAISE EXCEPTION 'backfill 0005: paused for longer than its pause patience (1h, -x pause_patience); nothing of the next batch was written'
                            USING HINT = 'run this script again after enrollments resume: it goes on from its checkpoint';
                    END IF;
                ELSIF EXISTS (SELECT 1 FROM pg_catalog.pg_stat_progress_vacuum AS p
                              WHERE p.relid IN (pg_catalog.to_regclass('"public".course_enrollments'), pg_catalog.to_regclass('"public".group_members'))) THEN
                    holding := 'a VACUUM of course_enrollments or group_members is running (-x hold_on_vacuum=no does not wait for it)';
                ELSIF (SELECT pg_catalog.max(pg_catalog.clock_timestamp() - a.xact_start)
                       FROM pg_catalog.pg_stat_activity AS a
                       WHERE a.datname = pg_catalog.current_database() AND a.pid <> pg_catalog.pg_backend_pid()
                         AND (a.backend_xmin IS NOT NULL OR a.backend_xid IS NOT NULL)) > interval '3600 s' THEN
                    holding := 'a transaction older than 3600 s holds back the xmin horizon (-x max_xmin_age)';
                ELSIF ready > 100 THEN
                    holding := 'more than 100 WAL files wait to be archived (-x max_archive_backlog)';
                END IF;
                EXIT WHEN holding IS NULL;
                IF held_said_at IS NULL OR pg_catalog.clock_timestamp() - held_said_at > interval '5 s' THEN
                    RAISE NOTICE 'backfill 0005: held: %', holding;
                    held_said_at := pg_catalog.clock_timestamp();
                END IF;
                PERFORM pg_catalog.pg_sleep(0.5);
            END LOOP;
            IF held_said_at IS NOT NULL THEN
                RAISE NOTICE 'backfill 0005: no longer held: going on';
            END IF;
            held_said_at := NULL;
            paused_since := NULL;
            started := clock_timestamp();
            LOOP
                BEGIN
                    WITH pairs AS MATERIALIZED (
                        SELECT k.n, k.student_id, k.course_id, k.memberships
                        FROM "public".enrollment_backfill_candidates AS k
                        WHERE k.n > lo ORDER BY k.n LIMIT size
                    ),
                    locked AS MATERIALIZED (
                        -- locked until this transaction ends, in id order: a deactivation by the application
                        -- waits for it, or came first and makes the row drop out here (PostgreSQL re-reads a
                        -- row it locks)
                        SELECT gm.id, gm.user_id, gm.group_id
                        FROM "public".group_members AS gm
                        WHERE gm.id = ANY (ARRAY(SELECT pg_catalog.unnest(p.memberships) FROM pairs AS p))
                          AND gm.active IS TRUE
                        ORDER BY gm.id
                        FOR SHARE
                    ),
                    verified AS MATERIALIZED (
                        -- still eligible on the current rows: an active membership of the student in a group
                        -- of the course, the user a student of the course's school
                        SELECT v.student_id, v.course_id
                        FROM (
                            SELECT DISTINCT p.student_id, p.course_id
                            FROM pairs AS p
                            CROSS JOIN LATERAL pg_catalog.unnest(p.memberships) AS m(id)
                            JOIN locked AS l ON l.id = m.id AND l.user_id = p.student_id
                            CROSS JOIN LATERAL (SELECT x.course_id FROM "public".groups AS x WHERE x.id = l.group_id OFFSET 0) AS g
                            WHERE g.course_id = p.course_id
                        ) AS v
                        CROSS JOIN LATERAL (SELECT x.school_id FROM "public".courses AS x WHERE x.id = v.course_id OFFSET 0) AS c
                        CROSS JOIN LATERAL (SELECT x.role, x.school_id FROM "public".users AS x WHERE x.id = v.student_id OFFSET 0) AS u
                        WHERE u.role = 'student' AND u.school_id = c.school_id
                    ),
                    current AS MATERIALIZED (
                        SELECT v.student_id, v.course_id, ce.id AS enrollment_id, ce.active
                        FROM verified AS v
                        LEFT JOIN LATERAL (
                            SELECT x.id, x.active FROM "public".course_enrollments AS x
                            WHERE x.course_id = v.course_id AND x.student_id = v.student_id OFFSET 0
                        ) AS ce ON true
                    ),
                    to_reactivate AS MATERIALIZED (
                        -- in (course, student) order, as the sync trigger and the undo lock them
                        SELECT e.id
                        FROM "public".course_enrollments AS e
                        WHERE e.id = ANY (ARRAY(SELECT k.enrollment_id FROM current AS k WHERE NOT k.active))
                          AND NOT e.active
                        ORDER BY e.course_id, e.student_id
                        FOR UPDATE
                    ),
                    reactivated AS (
                        UPDATE "public".course_enrollments AS e
                        SET active = true
                        WHERE e.id = ANY (ARRAY(SELECT r.id FROM to_reactivate AS r)) AND NOT e.active
                        RETURNING e.id, e.course_id, e.student_id, e.xmin::text::bigint AS row_xmin
                    ),
                    created AS (
                        -- a batch inserts plainly (no speculative insertion: 20% of its time): a pair the
                        -- application enrolled after this statement's snapshot is a unique violation, and the
                        -- batch is retried (it then finds that enrollment); one statement over everything
                        -- skips such a pair instead
                        INSERT INTO "public".course_enrollments (course_id, student_id, active)
                        SELECT k.course_id, k.student_id, true
                        FROM current AS k
                        WHERE k.enrollment_id IS NULL
                        ORDER BY k.course_id, k.student_id
                        RETURNING id, course_id, student_id, xmin::text::bigint AS row_xmin
                    ),
                    changed AS (
                        SELECT x.id, x.student_id, x.course_id, x.row_xmin, x.created,
                            (pg_catalog.row_number() OVER (ORDER BY x.student_id, x.course_id) - 1) / 10000 AS chunk
                        FROM (
                            SELECT id, student_id, course_id, row_xmin, true AS created FROM created
                            UNION ALL
                            SELECT id, student_id, course_id, row_xmin, false FROM reactivated
                        ) AS x
                    ),
                    recorded AS (
                        INSERT INTO "public".enrollment_backfill_batches
                            (run_id, pass, last_student_id, last_course_id, xid, row_xmin, created, reactivated)
                        SELECT run.id, (SELECT r.pass FROM "public".enrollment_backfill_runs AS r WHERE r.id = run.id),
                            (pg_catalog.max(ARRAY[x.student_id, x.course_id]))[1],
                            (pg_catalog.max(ARRAY[x.student_id, x.course_id]))[2],
                            pg_catalog.pg_current_xact_id(), pg_catalog.min(x.row_xmin),
                            coalesce(pg_catalog.array_agg(x.id ORDER BY x.id) FILTER (WHERE x.created), '{}'),
                            coalesce(pg_catalog.array_agg(x.id ORDER BY x.id) FILTER (WHERE NOT x.created), '{}')
                        FROM changed AS x
                        GROUP BY x.chunk
                    ),
                    unclaimed AS (
                        -- a claim from an earlier life of an enrollment this batch reactivates
                        DELETE FROM "public".enrollment_backfill_claims AS k
                        WHERE k.enrollment_id = ANY (ARRAY(SELECT r.id FROM reactivated AS r))
                    ),
                    progress AS (
                        UPDATE "public".enrollment_backfill_runs
                        SET checkpoint = coalesce((SELECT max(p.n) FROM pairs AS p), checkpoint),
                            batches = batches + 1,
                            created = created + (SELECT count(*) FROM created),
                            reactivated = reactivated + (SELECT count(*) FROM reactivated)
                        WHERE id = run.id AND EXISTS (SELECT 1 FROM pairs)
                    )
                    SELECT (SELECT max(p.n) FROM pairs AS p) AS last_n,
                        (SELECT count(*) FROM pairs) AS pairs,
                        (SELECT count(*) FROM created) AS created,
                        (SELECT count(*) FROM reactivated) AS reactivated
                    INTO result;
                    EXIT;
                EXCEPTION WHEN deadlock_detected OR serialization_failure OR lock_not_available
                    OR unique_violation THEN
                    attempt := attempt + 1;
                    IF clock_timestamp() - started > interval '600 s' THEN
                        RAISE EXCEPTION USING ERRCODE = SQLSTATE,
                            MESSAGE = format('backfill 0005: gave up after %s attempts over %s (lock_patience 10min): %s',
                                attempt, date_trunc('second', clock_timestamp() - started), SQLERRM),
                            HINT = 'run it again when the lock is free: it goes on from where it stopped';
                    END IF;
                    RAISE WARNING 'backfill 0005: a batch failed (%), rolled back; retrying (attempt %)', SQLERRM, attempt;
                    PERFORM pg_sleep(least(5.0, random() * 0.1 * 2 ^ least(attempt, 6)));
                END;
            END LOOP;
            IF result.pairs = 0 THEN
                COMMIT;
                EXIT;
            END IF;
            done_batches := done_batches + 1;
            done_created := done_created + result.created;
            done_reactivated := done_reactivated + result.reactivated;
            lo := result.last_n;
            COMMIT;
            -- Progress: after the first batch, then every 5 s.
            IF reported_at IS NULL OR clock_timestamp() - reported_at >= interval '5 s' THEN
                RAISE NOTICE 'backfill 0005: pass %: % of % pairs done (% created, % reactivated so far)',
                    pass_number, to_char(lo, 'FM999,999,999,990'),
                    coalesce(to_char(pass_total, 'FM999,999,999,990'), 'its'),
                    to_char(done_created, 'FM999,999,999,990'), to_char(done_reactivated, 'FM999,999,999,990');
                reported_at := clock_timestamp();
            END IF;
            -- toward 0.1 s a batch: x0.5 to x1.5 a step, within [100, 200000]
            IF result.pairs = size THEN
                size := least(200000, greatest(100, (size * least(1.5, greatest(0.5,
                    coalesce(pg_catalog.date_part('epoch', orders.batch_time), 0.1)
                    / greatest(extract(epoch FROM clock_timestamp() - started), 0.000001))))::integer));
            END IF;
            IF orders.sleep IS NOT NULL OR orders.max_rate IS NOT NULL THEN
                PERFORM pg_catalog.pg_sleep(greatest(
                    coalesce(pg_catalog.date_part('epoch', orders.sleep), 0),
                    coalesce(result.pairs::float8 / orders.max_rate
                             - pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() - started), 0)));
            END IF;
        END LOOP;
        -- The sync trigger kept coverage since this pass's candidates: nothing more to find.
        EXIT WHEN last_pass;
        lo := NULL;
    END LOOP;
    IF passes >= 5 AND NOT last_pass THEN
        RAISE WARNING 'backfill 0005: still finding pairs after 5 passes (the application keeps writing memberships and no sync trigger is installed); the audit or the gate counts what is left';
    END IF;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    PERFORM pg_catalog.set_config('lock_timeout', '500ms', true);
    PERFORM pg_catalog.set_config('statement_timeout', '0', true);
    DECLARE
        held boolean;
    BEGIN
        BEGIN  -- the table's lock, then the advisory lock unless a role that may deploy holds it
            LOCK TABLE "public".enrollments_lock IN EXCLUSIVE MODE NOWAIT;
            held := NOT pg_catalog.pg_try_advisory_xact_lock(28550410422479921)
                AND EXISTS (SELECT 1
                FROM pg_catalog.pg_locks AS l LEFT JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
                LEFT JOIN pg_catalog.pg_locks AS own_xid ON l.pid IS NULL AND own_xid.pid IS NULL
                    AND own_xid.locktype = 'transactionid' AND own_xid.virtualtransaction = l.virtualtransaction
                LEFT JOIN pg_catalog.pg_prepared_xacts AS px ON px.transaction = own_xid.transactionid
                WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()) AND l.classid = (28550410422479921 >> 32)::oid AND l.objid = (28550410422479921 & 4294967295)::oid AND coalesce(pg_catalog.has_table_privilege(coalesce(a.usesysid, (SELECT r.oid FROM pg_catalog.pg_roles AS r WHERE r.rolname = px.owner)), pg_catalog.to_regclass('"public".enrollments_lock'), 'INSERT, UPDATE, DELETE, TRUNCATE'), true));
        EXCEPTION WHEN lock_not_available THEN
            held := true;
        END;
        IF held THEN
            RAISE EXCEPTION 'backfill 0005: the enrollments lock is held by % (taken between two batches); nothing of this batch was written',
                (SELECT pg_catalog.string_agg(CASE WHEN l.pid IS NULL
                    THEN pg_catalog.format('prepared transaction %s (COMMIT PREPARED or ROLLBACK PREPARED ends it)',
                        coalesce(pg_catalog.quote_literal(px.gid), '(gid not readable)'))
                    ELSE pg_catalog.format('pid %s (%s, connected since %s)', a.pid, a.application_name, a.backend_start)
                    END, ', ')
                FROM pg_catalog.pg_locks AS l LEFT JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
                LEFT JOIN pg_catalog.pg_locks AS own_xid ON l.pid IS NULL AND own_xid.pid IS NULL
                    AND own_xid.locktype = 'transactionid' AND own_xid.virtualtransaction = l.virtualtransaction
                LEFT JOIN pg_catalog.pg_prepared_xacts AS px ON px.transaction = own_xid.transactionid
                WHERE l.pid IS DISTINCT FROM pg_catalog.pg_backend_pid()
                      AND ((l.locktype = 'relation' AND l.granted AND l.mode <> 'AccessShareLock'
                            AND l.relation = pg_catalog.to_regclass('"public".enrollments_lock') AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()))
                           OR (l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()) AND l.classid = (28550410422479921 >> 32)::oid AND l.objid = (28550410422479921 & 4294967295)::oid AND coalesce(pg_catalog.has_table_privilege(coalesce(a.usesysid, (SELECT r.oid FROM pg_catalog.pg_roles AS r WHERE r.rolname = px.owner)), pg_catalog.to_regclass('"public".enrollments_lock'), 'INSERT, UPDATE, DELETE, TRUNCATE'), true))))
                USING HINT = 'run this script again when that session has finished: it goes on from its checkpoint';
        ELSIF NOT pg_catalog.pg_try_advisory_xact_lock(28550410422479921) THEN
            RAISE WARNING '% holds the advisory lock of releases before 1.3 but may not run a deploy (no INSERT, UPDATE, DELETE or TRUNCATE on "public".enrollments_lock): not waited for',
                (SELECT pg_catalog.string_agg(i.who, ', ') FROM (
                    SELECT pg_catalog.format('pid %s (role %s, %s)', a.pid, a.usename,
                        coalesce(nullif(a.application_name, ''), 'no application_name'))
                    FROM pg_catalog.pg_locks AS l JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
                    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()) AND l.classid = (28550410422479921 >> 32)::oid AND l.objid = (28550410422479921 & 4294967295)::oid AND NOT coalesce(pg_catalog.has_table_privilege(a.usesysid, pg_catalog.to_regclass('"public".enrollments_lock'), 'INSERT, UPDATE, DELETE, TRUNCATE'), true)) AS i(who));
        END IF;
    END;
    UPDATE "public".enrollment_backfill_runs SET finished_at = now() WHERE id = run.id;
    RAISE NOTICE 'backfill 0005: % enrollments created, % reactivated (% batches)', to_char(done_created, 'FM999,999,999,990'),
        to_char(done_reactivated, 'FM999,999,999,990'), to_char(done_batches, 'FM999,999,999,990');
    COMMIT;
END
$backfill$;

\endif

\else
\echo 'skipped: the database is not where this step expects (a step before it failed)'
\endif

-- Stop here if a statement above failed (psql goes on after an error without ON_ERROR_STOP).
\unset enrollments_ok_00000
\set enrollments_ok_:LAST_ERROR_SQLSTATE
\if :{?enrollments_ok_00000}
\else
\set ON_ERROR_STOP on
DO $stop$ BEGIN RAISE EXCEPTION 'a statement above failed: this script stops here, and nothing after it runs' USING HINT = 'fix what failed (the first ERROR above), then write the script again from where the database stands (alembic current)'; END $stop$;
\endif

BEGIN;

SET LOCAL search_path = pg_catalog, pg_temp;

SET LOCAL lock_timeout = '500ms';

SET LOCAL statement_timeout = '0';

DO $lock$
DECLARE
    held boolean;
BEGIN
    BEGIN  -- the table's lock, then the advisory lock unless a role that may deploy holds it
        LOCK TABLE "public".enrollments_lock IN EXCLUSIVE MODE NOWAIT;
        held := NOT pg_catalog.pg_try_advisory_xact_lock(28550410422479921)
            AND EXISTS (SELECT 1
            FROM pg_catalog.pg_locks AS l LEFT JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
            LEFT JOIN pg_catalog.pg_locks AS own_xid ON l.pid IS NULL AND own_xid.pid IS NULL
                AND own_xid.locktype = 'transactionid' AND own_xid.virtualtransaction = l.virtualtransaction
            LEFT JOIN pg_catalog.pg_prepared_xacts AS px ON px.transaction = own_xid.transactionid
            WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()) AND l.classid = (28550410422479921 >> 32)::oid AND l.objid = (28550410422479921 & 4294967295)::oid AND coalesce(pg_catalog.has_table_privilege(coalesce(a.usesysid, (SELECT r.oid FROM pg_catalog.pg_roles AS r WHERE r.rolname = px.owner)), pg_catalog.to_regclass('"public".enrollments_lock'), 'INSERT, UPDATE, DELETE, TRUNCATE'), true));
    EXCEPTION WHEN lock_not_available THEN
        held := true;
    END;
    IF held THEN
        RAISE EXCEPTION 'the enrollments lock is held by %; nothing more of alembic 0004:0005 --sql was changed',
            (SELECT pg_catalog.string_agg(CASE WHEN l.pid IS NULL
                THEN pg_catalog.format('prepared transaction %s (COMMIT PREPARED or ROLLBACK PREPARED ends it)',
                    coalesce(pg_catalog.quote_literal(px.gid), '(gid not readable)'))
                ELSE pg_catalog.format('pid %s (%s, connected since %s)', a.pid, a.application_name, a.backend_start)
                END, ', ')
            FROM pg_catalog.pg_locks AS l LEFT JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
            LEFT JOIN pg_catalog.pg_locks AS own_xid ON l.pid IS NULL AND own_xid.pid IS NULL
                AND own_xid.locktype = 'transactionid' AND own_xid.virtualtransaction = l.virtualtransaction
            LEFT JOIN pg_catalog.pg_prepared_xacts AS px ON px.transaction = own_xid.transactionid
            WHERE l.pid IS DISTINCT FROM pg_catalog.pg_backend_pid()
                  AND ((l.locktype = 'relation' AND l.granted AND l.mode <> 'AccessShareLock'
                        AND l.relation = pg_catalog.to_regclass('"public".enrollments_lock') AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()))
                       OR (l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()) AND l.classid = (28550410422479921 >> 32)::oid AND l.objid = (28550410422479921 & 4294967295)::oid AND coalesce(pg_catalog.has_table_privilege(coalesce(a.usesysid, (SELECT r.oid FROM pg_catalog.pg_roles AS r WHERE r.rolname = px.owner)), pg_catalog.to_regclass('"public".enrollments_lock'), 'INSERT, UPDATE, DELETE, TRUNCATE'), true))))
            USING HINT = 'run this script again when that session has finished';
    ELSIF NOT pg_catalog.pg_try_advisory_xact_lock(28550410422479921) THEN
        RAISE WARNING '% holds the advisory lock of releases before 1.3 but may not run a deploy (no INSERT, UPDATE, DELETE or TRUNCATE on "public".enrollments_lock): not waited for',
            (SELECT pg_catalog.string_agg(i.who, ', ') FROM (
                SELECT pg_catalog.format('pid %s (role %s, %s)', a.pid, a.usename,
                    coalesce(nullif(a.application_name, ''), 'no application_name'))
                FROM pg_catalog.pg_locks AS l JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
                WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()) AND l.classid = (28550410422479921 >> 32)::oid AND l.objid = (28550410422479921 & 4294967295)::oid AND NOT coalesce(pg_catalog.has_table_privilege(a.usesysid, pg_catalog.to_regclass('"public".enrollments_lock'), 'INSERT, UPDATE, DELETE, TRUNCATE'), true)) AS i(who));
    END IF;
END
$lock$;

DO $where$
DECLARE
    found text := '';
BEGIN
    IF pg_catalog.to_regclass('"public".alembic_version') IS NOT NULL THEN
        SELECT coalesce(pg_catalog.string_agg(version_num, ', ' ORDER BY version_num), '') INTO found FROM "public".alembic_version;
    END IF;
    IF found IS DISTINCT FROM '0004' THEN
        RAISE EXCEPTION 'this step expects the database at 0004, but it is at %: a step before it failed; nothing more of this script is applied', coalesce(nullif(found, ''), 'base')
            USING HINT = 'fix what failed first, then write the script again from where the database stands: ' || replace('alembic upgrade {found}:0005 --sql', '{found}', coalesce(nullif(found, ''), 'base'));
    END IF;
END
$where$;

-- Stop before recording revision 0005 unless the sync trigger keeps coverage.
DO $verify$
BEGIN
    IF NOT (SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".group_members') AND t.tgname = 'course_enrollments_sync_on_insert' AND NOT t.tgisinternal)
   AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".group_members') AND t.tgname = 'course_enrollments_sync_on_update' AND NOT t.tgisinternal)
   AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".users') AND t.tgname = 'course_enrollments_sync_on_user' AND NOT t.tgisinternal)
   AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".groups') AND t.tgname = 'course_enrollments_sync_on_group' AND NOT t.tgisinternal)
   AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".courses') AND t.tgname = 'course_enrollments_sync_on_course' AND NOT t.tgisinternal)
   AND (pg_catalog.to_regclass('"public".course_enrollments_sync_pending') IS NULL OR EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".course_enrollments_sync_pending') AND t.tgname = 'course_enrollments_sync_apply' AND NOT t.tgisinternal)) AS keeping) THEN
        RAISE EXCEPTION 'revision 0005 is not recorded: the sync trigger is not installed'
            USING HINT = 'fix what failed above, then run the upgrade again: it goes on from where it stopped';
    END IF;
END
$verify$;

-- Stop before recording revision 0005 unless no backfill run is left unfinished.
DO $verify$
BEGIN
    IF NOT (SELECT NOT EXISTS (SELECT 1 FROM "public".enrollment_backfill_runs WHERE finished_at IS NULL)) THEN
        RAISE EXCEPTION 'revision 0005 is not recorded: a backfill run did not finish'
            USING HINT = 'fix what failed above, then run the upgrade again: it goes on from where it stopped';
    END IF;
END
$verify$;

-- ======================================================================================
-- Step: counts the eligible pairs without an active enrollment in one REPEATABLE READ
--   snapshot, and stops the script below 100%
-- Locks: ACCESS SHARE on the tables it reads, which no read or write waits for
-- Takes: 3 to 5 min at 100M memberships (6 to 8 s at 3M measured)
-- ======================================================================================

-- Coverage gate before revision 0005: every eligible (student, course) pair must
-- have an active course_enrollment, and the sync trigger must be installed to keep it so.
-- Below 100% this block raises and psql stops here: nothing after it runs.
DO $gate$
DECLARE
    pair record;
    lo bigint;
    hi bigint;
    middle bigint;
    width bigint;
    covered bigint := 0;
    inactive bigint := 0;
    missing bigint := 0;
    non_student bigint := 0;
    cross_school bigint := 0;
    eligible bigint;
    buckets bigint[] := '{}';
    b bigint;
    firsts text[] := '{}';
    settings_before text[];
BEGIN
    IF NOT (EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".group_members') AND t.tgname = 'course_enrollments_sync_on_insert' AND NOT t.tgisinternal)
               AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".group_members') AND t.tgname = 'course_enrollments_sync_on_update' AND NOT t.tgisinternal)
               AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".users') AND t.tgname = 'course_enrollments_sync_on_user' AND NOT t.tgisinternal)
               AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".groups') AND t.tgname = 'course_enrollments_sync_on_group' AND NOT t.tgisinternal)
               AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".courses') AND t.tgname = 'course_enrollments_sync_on_course' AND NOT t.tgisinternal)
               AND (pg_catalog.to_regclass('"public".course_enrollments_sync_pending') IS NULL OR EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".course_enrollments_sync_pending') AND t.tgname = 'course_enrollments_sync_apply' AND NOT t.tgisinternal))) THEN
        RAISE EXCEPTION 'coverage gate before revision 0005: the sync trigger is not installed, so coverage would not hold; nothing of revision 0005 was applied'
            USING HINT = 'write the script again from there (alembic upgrade 0004:0005 --sql) and run it: revision 0005 or 0006 installs it';
    END IF;
    -- buckets of student ids: at least 512 ids each, at most 65,536 of them
    SELECT coalesce(min(id), 0), coalesce(max(id), 0) INTO lo, hi FROM "public".users;
    width := greatest(512, ceil((hi - lo + 1) / 65536.0))::bigint;
    middle := lo + (hi - lo + 1) / 2;
    -- the counting statement's plan: hash joins, no JIT, bounded memory; put back after
    settings_before := ARRAY[pg_catalog.current_setting('enable_nestloop'), pg_catalog.current_setting('jit'), pg_catalog.current_setting('work_mem')];
    PERFORM pg_catalog.set_config('enable_nestloop', 'off', true), pg_catalog.set_config('jit', 'off', true), pg_catalog.set_config('work_mem', '64MB', true);
    -- EXECUTE, not a FOR loop or a SELECT ... INTO: PostgreSQL runs those in one process
    -- (a loop's query is a cursor; an INTO asks for a row count), and this in parallel.
    -- $1, $2, $3: lo, width, middle (a one-off plan, made with their values)
    EXECUTE $counts$
        SELECT coalesce(sum(r.pairs) FILTER (WHERE r.status = 'covered'), 0),
               coalesce(sum(r.pairs) FILTER (WHERE r.status = 'inactive'), 0),
               coalesce(sum(r.pairs) FILTER (WHERE r.status = 'missing'), 0),
               coalesce(sum(r.pairs) FILTER (WHERE r.status = 'non_student'), 0),
               coalesce(sum(r.pairs) FILTER (WHERE r.status = 'cross_school'), 0),
               coalesce(array_agg(r.bucket) FILTER (WHERE r.status IN ('missing', 'inactive')), '{}')
        FROM (
            SELECT h.status, h.bucket,
                sum(h.pairs)::bigint AS pairs, sum(h.memberships)::bigint AS memberships
            FROM (
                SELECT k.status,
                    CASE WHEN k.status = 'covered' THEN NULL ELSE (k.student_id - $1) / $2 END AS bucket,
                    count(*) AS pairs, sum(k.memberships) AS memberships
                FROM (
                    SELECT p.student_id, p.memberships,
                        CASE
                            WHEN NOT (u.role = 'student') THEN 'non_student'
                            WHEN NOT (u.school_id = c.school_id) THEN 'cross_school'
                            WHEN ce.active THEN 'covered'
                            WHEN ce.id IS NOT NULL THEN 'inactive'
                            ELSE 'missing'
                        END AS status
                    FROM (
                        SELECT gm.user_id AS student_id, g.course_id, count(*) AS memberships
                        FROM "public".group_members AS gm
                        JOIN "public".groups AS g ON g.id = gm.group_id
                        WHERE gm.active IS TRUE AND gm.user_id < $3
                        GROUP BY gm.user_id, g.course_id
                    ) AS p
                    JOIN "public".users AS u ON u.id = p.student_id AND u.id < $3
                    JOIN "public".courses AS c ON c.id = p.course_id
                    LEFT JOIN "public".course_enrollments AS ce
                        ON ce.course_id = p.course_id AND ce.student_id = p.student_id
                        AND ce.student_id < $3
                ) AS k
                GROUP BY 1, 2
                UNION ALL
                SELECT k.status,
                    CASE WHEN k.status = 'covered' THEN NULL ELSE (k.student_id - $1) / $2 END AS bucket,
                    count(*) AS pairs, sum(k.memberships) AS memberships
                FROM (
                    SELECT p.student_id, p.memberships,
                        CASE
                            WHEN NOT (u.role = 'student') THEN 'non_student'
                            WHEN NOT (u.school_id = c.school_id) THEN 'cross_school'
                            WHEN ce.active THEN 'covered'
                            WHEN ce.id IS NOT NULL THEN 'inactive'
                            ELSE 'missing'
                        END AS status
                    FROM (
                        SELECT gm.user_id AS student_id, g.course_id, count(*) AS memberships
                        FROM "public".group_members AS gm
                        JOIN "public".groups AS g ON g.id = gm.group_id
                        WHERE gm.active IS TRUE AND gm.user_id >= $3
                        GROUP BY gm.user_id, g.course_id
                    ) AS p
                    JOIN "public".users AS u ON u.id = p.student_id AND u.id >= $3
                    JOIN "public".courses AS c ON c.id = p.course_id
                    LEFT JOIN "public".course_enrollments AS ce
                        ON ce.course_id = p.course_id AND ce.student_id = p.student_id
                        AND ce.student_id >= $3
                ) AS k
                GROUP BY 1, 2
            ) AS h
            GROUP BY 1, 2
        ) AS r
    $counts$
    INTO covered, inactive, missing, non_student, cross_school, buckets
    USING lo, width, middle;
    PERFORM pg_catalog.set_config('enable_nestloop', settings_before[1], true), pg_catalog.set_config('jit', settings_before[2], true), pg_catalog.set_config('work_mem', settings_before[3], true);
    eligible := covered + inactive + missing;
    IF covered < eligible THEN
        FOR b IN SELECT DISTINCT x FROM unnest(buckets) AS x ORDER BY x LOOP
            FOR pair IN
                SELECT * FROM (
                    SELECT p.student_id, p.course_id, p.groups, u.name AS student_name, u.email, u.role,
                        c.name AS course_name,
                        CASE
                            WHEN NOT (u.role = 'student') THEN 'non_student'
                            WHEN NOT (u.school_id = c.school_id) THEN 'cross_school'
                            WHEN ce.active THEN 'covered'
                            WHEN ce.id IS NOT NULL THEN 'inactive'
                            ELSE 'missing'
                        END AS status
                    FROM (
                        SELECT gm.user_id AS student_id, g.course_id, count(*) AS groups
                        FROM "public".group_members AS gm
                        CROSS JOIN LATERAL (
                            SELECT x.course_id FROM "public".groups AS x WHERE x.id = gm.group_id OFFSET 0
                        ) AS g
                        WHERE gm.active IS TRUE AND gm.user_id >= lo + b * width AND gm.user_id < lo + (b + 1) * width
                        GROUP BY gm.user_id, g.course_id
                    ) AS p
                    CROSS JOIN LATERAL (
                        SELECT x.name, x.email, x.role, x.school_id FROM "public".users AS x
                        WHERE x.id = p.student_id OFFSET 0
                    ) AS u
                    CROSS JOIN LATERAL (
                        SELECT x.name, x.school_id FROM "public".courses AS x WHERE x.id = p.course_id OFFSET 0
                    ) AS c
                    LEFT JOIN LATERAL (
                        SELECT x.id, x.active FROM "public".course_enrollments AS x
                        WHERE x.course_id = p.course_id AND x.student_id = p.student_id OFFSET 0
                    ) AS ce ON true
                ) AS s
                WHERE s.status IN ('missing', 'inactive')
                ORDER BY s.student_id, s.course_id
                LIMIT 10 - cardinality(firsts)
            LOOP
                firsts := firsts || format('(student %s %s <%s>, course %s %s, %s, %s group(s))',
                    pair.student_id, pair.student_name, pair.email, pair.course_id,
                    pair.course_name, pair.status, pair.groups);
            END LOOP;
            EXIT WHEN cardinality(firsts) >= 10;
        END LOOP;
        RAISE EXCEPTION 'coverage gate before revision 0005: coverage %: % of % eligible (student, course) pairs have an active enrollment; % missing, % inactive; nothing of revision 0005 was applied',
            format('%s%%', to_char(floor(covered * 10000.0 / eligible) / 100, 'FM990.00')),
            to_char(covered, 'FM999,999,999,990'), to_char(eligible, 'FM999,999,999,990'),
            to_char(missing, 'FM999,999,999,990'), to_char(inactive, 'FM999,999,999,990')
            USING DETAIL = 'first uncovered pairs: ' || array_to_string(firsts, ', '),
                  HINT = 'run enrollments backfill --commit, then write the script again from there (alembic upgrade 0004:0005 --sql) and run it';
    ELSE
        RAISE NOTICE 'coverage gate before revision 0005 passed: % of % eligible pairs covered',
            to_char(covered, 'FM999,999,999,990'), to_char(eligible, 'FM999,999,999,990');
    END IF;
    IF non_student + cross_school > 0 THEN
        RAISE WARNING 'coverage gate: % non_student and % cross_school pairs (anomalies) are not enrolled; review them with enrollments audit',
            to_char(non_student, 'FM999,999,999,990'), to_char(cross_school, 'FM999,999,999,990');
    END IF;
END
$gate$;

-- ==== downgrade 0005 -> 0004 ====

-- Running downgrade 0005 -> 0004
