-- Pinned offline SQL of revision 0008; digest 6b9855a9bdfa.
-- Written by `python -m enrollments_phase1.migrations.pins --write`. tests/test_pins.py
-- fails when the revision writes anything else. A released revision changes only to fix a
-- defect: rewrite this file in the same commit and give the reason in
-- migrations/pinned/CHANGES.md.

-- ==== upgrade 0007 -> 0008 ====

-- Running upgrade 0007 -> 0008

COMMIT;

-- Only where the database stands at 0007: a step before this one failed otherwise.
\unset enrollments_on_track
SELECT coalesce(pg_catalog.string_agg(version_num, ', ' ORDER BY version_num), '') OPERATOR(pg_catalog.=) '0007' AS enrollments_on_track
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
        RAISE EXCEPTION 'the enrollments lock is held by %; nothing more of alembic 0007:0008 --sql was changed',
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
    IF found IS DISTINCT FROM '0007' THEN
        RAISE EXCEPTION 'this step expects the database at 0007, but it is at %: a step before it failed; nothing more of this script is applied', coalesce(nullif(found, ''), 'base')
            USING HINT = 'fix what failed first, then write the script again from where the database stands: ' || replace('alembic upgrade {found}:0008 --sql', '{found}', coalesce(nullif(found, ''), 'base'));
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
        RAISE EXCEPTION 'the enrollments lock is held by %; nothing more of alembic 0007:0008 --sql was changed',
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
    IF found IS DISTINCT FROM '0007' THEN
        RAISE EXCEPTION 'this step expects the database at 0007, but it is at %: a step before it failed; nothing more of this script is applied', coalesce(nullif(found, ''), 'base')
            USING HINT = 'fix what failed first, then write the script again from where the database stands: ' || replace('alembic upgrade {found}:0008 --sql', '{found}', coalesce(nullif(found, ''), 'base'));
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
        RAISE EXCEPTION 'the enrollments lock is held by %; nothing more of alembic 0007:0008 --sql was changed',
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
    IF found IS DISTINCT FROM '0007' THEN
        RAISE EXCEPTION 'this step expects the database at 0007, but it is at %: a step before it failed; nothing more of this script is applied', coalesce(nullif(found, ''), 'base')
            USING HINT = 'fix what failed first, then write the script again from where the database stands: ' || replace('alembic upgrade {found}:0008 --sql', '{found}', coalesce(nullif(found, ''), 'base'));
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
        RAISE EXCEPTION 'the enrollments lock is held by %; nothing more of alembic 0007:0008 --sql was changed',
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
    IF found IS DISTINCT FROM '0007' THEN
        RAISE EXCEPTION 'this step expects the database at 0007, but it is at %: a step before it failed; nothing more of this script is applied', coalesce(nullif(found, ''), 'base')
            USING HINT = 'fix what failed first, then write the script again from where the database stands: ' || replace('alembic upgrade {found}:0008 --sql', '{found}', coalesce(nullif(found, ''), 'base'));
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
        RAISE EXCEPTION 'the enrollments lock is held by %; nothing more of alembic 0007:0008 --sql was changed',
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
    IF found IS DISTINCT FROM '0007' THEN
        RAISE EXCEPTION 'this step expects the database at 0007, but it is at %: a step before it failed; nothing more of this script is applied', coalesce(nullif(found, ''), 'base')
            USING HINT = 'fix what failed first, then write the script again from where the database stands: ' || replace('alembic upgrade {found}:0008 --sql', '{found}', coalesce(nullif(found, ''), 'base'));
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
        RAISE EXCEPTION 'the enrollments lock is held by %; nothing more of alembic 0007:0008 --sql was changed',
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
    IF found IS DISTINCT FROM '0007' THEN
        RAISE EXCEPTION 'this step expects the database at 0007, but it is at %: a step before it failed; nothing more of this script is applied', coalesce(nullif(found, ''), 'base')
            USING HINT = 'fix what failed first, then write the script again from where the database stands: ' || replace('alembic upgrade {found}:0008 --sql', '{found}', coalesce(nullif(found, ''), 'base'));
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
        RAISE EXCEPTION 'the enrollments lock is held by %; nothing more of alembic 0007:0008 --sql was changed',
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
    IF found IS DISTINCT FROM '0007' THEN
        RAISE EXCEPTION 'this step expects the database at 0007, but it is at %: a step before it failed; nothing more of this script is applied', coalesce(nullif(found, ''), 'base')
            USING HINT = 'fix what failed first, then write the script again from where the database stands: ' || replace('alembic upgrade {found}:0008 --sql', '{found}', coalesce(nullif(found, ''), 'base'));
    END IF;
END
$where$;

-- Stop before recording revision 0008 unless every sync trigger of this version is installed.
DO $verify$
BEGIN
    IF NOT (SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".group_members') AND t.tgname = 'course_enrollments_sync_on_insert' AND NOT t.tgisinternal AND t.tgfoid = pg_catalog.to_regprocedure('"public".course_enrollments_sync_members()'))
   AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".group_members') AND t.tgname = 'course_enrollments_sync_on_update' AND NOT t.tgisinternal AND t.tgfoid = pg_catalog.to_regprocedure('"public".course_enrollments_sync_members()'))
   AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".users') AND t.tgname = 'course_enrollments_sync_on_user' AND NOT t.tgisinternal AND t.tgfoid = pg_catalog.to_regprocedure('"public".course_enrollments_sync_user()'))
   AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".groups') AND t.tgname = 'course_enrollments_sync_on_group' AND NOT t.tgisinternal AND t.tgfoid = pg_catalog.to_regprocedure('"public".course_enrollments_sync_group()'))
   AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".courses') AND t.tgname = 'course_enrollments_sync_on_course' AND NOT t.tgisinternal AND t.tgfoid = pg_catalog.to_regprocedure('"public".course_enrollments_sync_course()'))
   AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = pg_catalog.to_regclass('"public".course_enrollments_sync_pending') AND t.tgname = 'course_enrollments_sync_apply' AND NOT t.tgisinternal AND t.tgfoid = pg_catalog.to_regprocedure('"public".course_enrollments_sync_apply()') AND t.tgqual IS NOT NULL) AS installed) THEN
        RAISE EXCEPTION 'revision 0008 is not recorded: the sync triggers are not all installed'
            USING HINT = 'fix what failed above, then run the upgrade again: it goes on from where it stopped';
    END IF;
END
$verify$;

-- ==== downgrade 0008 -> 0007 ====

-- Running downgrade 0008 -> 0007
