-- Pinned offline SQL of revision 0003; digest 63fd524d0cb8.
-- Written by `python -m enrollments_phase1.migrations.pins --write`. tests/test_pins.py
-- fails when the revision writes anything else. A released revision changes only to fix a
-- defect: rewrite this file in the same commit and give the reason in
-- migrations/pinned/CHANGES.md.

-- ==== upgrade 0002 -> 0003 ====

-- Running upgrade 0002 -> 0003

-- ======================================================================================
-- Step: creates the backfill's bookkeeping tables (record, runs, claims, candidates)
-- Locks: nothing the application uses: new tables
-- Takes: milliseconds
-- ======================================================================================

-- What a backfill created or reactivated, so that a downgrade undoes exactly that.
CREATE TABLE "public".enrollment_backfill_changes (
    revision varchar(32) NOT NULL,
    enrollment_id integer NOT NULL,
    course_id integer NOT NULL,
    student_id integer NOT NULL,
    action varchar(20) NOT NULL,
    changed_at timestamp with time zone DEFAULT now() NOT NULL,
    row_xmin bigint,
    claimed_at timestamp with time zone,
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
    pass integer,
    candidates bigint,
    CONSTRAINT enrollment_backfill_runs_pkey PRIMARY KEY (id)
);

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

-- Only their owner (and whom the DBA grants) may read or write them.
REVOKE ALL ON "public".enrollment_backfill_changes, "public".enrollment_backfill_runs,
    "public".enrollment_backfill_batches, "public".enrollment_backfill_claims,
    "public".enrollment_backfill_candidates, "public".enrollment_backfill_control FROM PUBLIC;
REVOKE ALL ON SEQUENCE "public".enrollment_backfill_runs_id_seq,
    "public".enrollment_backfill_batches_id_seq FROM PUBLIC;

-- ==== downgrade 0003 -> 0002 ====

-- Running downgrade 0003 -> 0002

COMMIT;

-- Only where the database stands at 0003: a step before this one failed otherwise.
\unset enrollments_on_track
SELECT coalesce(pg_catalog.string_agg(version_num, ', ' ORDER BY version_num), '') OPERATOR(pg_catalog.=) '0003' AS enrollments_on_track
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
        RAISE EXCEPTION 'the enrollments lock is held by %; nothing more of alembic 0003:0002 --sql was changed',
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
    IF found IS DISTINCT FROM '0003' THEN
        RAISE EXCEPTION 'this step expects the database at 0003, but it is at %: a step before it failed; nothing more of this script is applied', coalesce(nullif(found, ''), 'base')
            USING HINT = 'fix what failed first, then write the script again from where the database stands: ' || replace('alembic downgrade {found}:0002 --sql', '{found}', coalesce(nullif(found, ''), 'base'));
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
-- Step: undoes what the backfills recorded, newest first, one batch per transaction
--   (referenced and claimed enrollments kept)
-- Locks: each batch: the enrollments it deletes or deactivates, for its transaction
-- Takes: about as long as the backfill it undoes
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
        RAISE EXCEPTION 'the enrollments lock is held by %; nothing more of alembic 0003:0002 --sql was changed',
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
    IF found IS DISTINCT FROM '0003' THEN
        RAISE EXCEPTION 'this step expects the database at 0003, but it is at %: a step before it failed; nothing more of this script is applied', coalesce(nullif(found, ''), 'base')
            USING HINT = 'fix what failed first, then write the script again from where the database stands: ' || replace('alembic downgrade {found}:0002 --sql', '{found}', coalesce(nullif(found, ''), 'base'));
    END IF;
END
$where$;

-- Was the database moved since the backfill (dump and restore, logical replication)?
-- Then stop, keeping the record: nothing tells any more what the application changed.
DO $moved$
DECLARE
    moved bigint;
BEGIN
    SELECT (SELECT coalesce(pg_catalog.sum(pg_catalog.cardinality(b.created)
                                                      + pg_catalog.cardinality(b.reactivated)), 0)
            FROM "public".enrollment_backfill_batches AS b
            WHERE b.xmin::text::bigint <> b.row_xmin)
        + (SELECT pg_catalog.count(*) FROM "public".enrollment_backfill_changes AS r
           WHERE r.claimed_at IS NULL AND r.xmin::text::bigint <> r.row_xmin)
    INTO moved;
    IF moved > 0 THEN
        RAISE EXCEPTION 'backfill undo (downgrade of 0003): the database was moved since the backfill (a dump and restore, logical replication or a table rewrite gave the record of % enrollments new transaction ids), so it cannot tell what the application changed since; nothing was changed and the record is kept (-x undo_after_move=values undoes what is still active for its pair, unreferenced and unclaimed)',
            to_char(moved, 'FM999,999,999,990')
            USING HINT = 'docs/commands.md, "Rolling back after a move", says what -x undo_after_move=values cannot see';
    END IF;
END
$moved$;

COMMIT;

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
        RAISE EXCEPTION 'the enrollments lock is held by %; nothing more of alembic 0003:0002 --sql was changed',
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
    IF found IS DISTINCT FROM '0003' THEN
        RAISE EXCEPTION 'this step expects the database at 0003, but it is at %: a step before it failed; nothing more of this script is applied', coalesce(nullif(found, ''), 'base')
            USING HINT = 'fix what failed first, then write the script again from where the database stands: ' || replace('alembic downgrade {found}:0002 --sql', '{found}', coalesce(nullif(found, ''), 'base'));
    END IF;
END
$where$;

-- One batch of the undo (see migrations/shared/v4/undo.py): installed for the undo and
-- dropped with it.
CREATE OR REPLACE FUNCTION "public".course_enrollments_undo_batch(source text, lo bigint, size integer)
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
    kept integer[] := '{}';
    found integer[];
    fk record;
    tally jsonb := '{}';
    by_values constant boolean := false;
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
            FROM "public".enrollment_backfill_batches AS b
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
            FROM "public".enrollment_backfill_changes AS r
            WHERE r.enrollment_id > lo ORDER BY r.enrollment_id LIMIT size
        ) AS x;
    END IF;
    IF picked IS NULL THEN
        RETURN QUERY SELECT NULL::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint,
            0::bigint, '{}'::jsonb;
        RETURN;
    END IF;
    SELECT pg_catalog.array_agg(DISTINCT i.id) INTO ids FROM pg_catalog.unnest(e_ids) AS i(id);
    ids := coalesce(ids, '{}');
    -- 1. The batch's rows, locked in (course, student) order as the sync trigger locks them.
    PERFORM 1 FROM "public".course_enrollments AS e
    WHERE e.id = ANY (ids) ORDER BY e.course_id, e.student_id FOR UPDATE;
    -- 2. Which of them another table references (a snapshot taken after the locks).
    FOR fk IN
        SELECT c.conrelid::pg_catalog.regclass::text AS referencing,
            (SELECT pg_catalog.string_agg('r.' || pg_catalog.quote_ident(a.attname), ', ' ORDER BY k.n)
             FROM pg_catalog.unnest(c.conkey) WITH ORDINALITY AS k(attnum, n)
             JOIN pg_catalog.pg_attribute AS a ON a.attrelid = c.conrelid AND a.attnum = k.attnum)
                AS referencing_columns,
            (SELECT pg_catalog.string_agg('e.' || pg_catalog.quote_ident(a.attname), ', ' ORDER BY k.n)
             FROM pg_catalog.unnest(c.confkey) WITH ORDINALITY AS k(attnum, n)
             JOIN pg_catalog.pg_attribute AS a ON a.attrelid = c.confrelid AND a.attnum = k.attnum)
                AS referenced_columns
        FROM pg_catalog.pg_constraint AS c
        WHERE c.contype = 'f' AND c.confrelid = pg_catalog.to_regclass('"public".course_enrollments') AND c.conparentid = 0
        ORDER BY 1
    LOOP
        EXECUTE pg_catalog.format('SELECT coalesce(pg_catalog.array_agg(e.id), ''{}'') FROM "public".course_enrollments AS e WHERE e.id = ANY ($1) AND EXISTS (SELECT 1 FROM %s AS r WHERE (%s) = (%s))', fk.referencing, fk.referencing_columns, fk.referenced_columns) INTO found USING ids;
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
        SELECT k.enrollment_id FROM "public".enrollment_backfill_claims AS k
        WHERE k.enrollment_id = ANY (ids)
    ),
    now_rows AS MATERIALIZED (
        SELECT e.id, e.course_id, e.student_id, e.active, e.xmin::text::bigint AS row_xmin
        FROM "public".course_enrollments AS e WHERE e.id = ANY (ids)
    ),
    written_since AS MATERIALIZED (
        -- pairs with an active membership written after the record (by xmin): the
        -- application's too, where no claim marked it (1.1.0 had none; a backfill run
        -- ahead of time at 0003 has no sync trigger until 0004)
        SELECT n.id FROM batch AS b JOIN now_rows AS n ON n.id = b.enrollment_id
        WHERE b.row_xmin IS NOT NULL AND EXISTS (
            SELECT 1 FROM "public".group_members AS gm JOIN "public".groups AS g ON g.id = gm.group_id
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
        DELETE FROM "public".course_enrollments AS e
        WHERE e.id IN (SELECT c.enrollment_id FROM classified AS c
                       WHERE c.state = 'as left' AND c.action = 'created')
        RETURNING e.id
    ),
    deactivated AS (
        UPDATE "public".course_enrollments AS e SET active = false
        WHERE e.id IN (SELECT c.enrollment_id FROM classified AS c
                       WHERE c.state = 'as left' AND c.action = 'reactivated')
        RETURNING e.id
    ),
    forgotten_batches AS (
        DELETE FROM "public".enrollment_backfill_batches AS r
        WHERE source = 'batches' AND r.id = ANY (picked)
    ),
    forgotten_changes AS (
        DELETE FROM "public".enrollment_backfill_changes AS r
        WHERE source = 'changes' AND r.enrollment_id = ANY (ids)
    ),
    forgotten_claims AS (
        DELETE FROM "public".enrollment_backfill_claims AS k WHERE k.enrollment_id = ANY (ids)
    )
    SELECT last_key, pg_catalog.cardinality(e_ids)::bigint,
        (SELECT pg_catalog.count(*) FROM deleted), (SELECT pg_catalog.count(*) FROM deactivated),
        (SELECT pg_catalog.count(*) FROM classified AS c WHERE c.state = 'referenced'),
        (SELECT pg_catalog.count(*) FROM classified AS c WHERE c.state = 'claimed'),
        (SELECT pg_catalog.count(*) FROM classified AS c WHERE c.state = 'changed'),
        tally;
END
$undo$;

REVOKE ALL ON FUNCTION "public".course_enrollments_undo_batch(text, bigint, integer) FROM PUBLIC;

COMMIT;

-- Stop here if a statement above failed (psql goes on after an error without ON_ERROR_STOP).
\unset enrollments_ok_00000
\set enrollments_ok_:LAST_ERROR_SQLSTATE
\if :{?enrollments_ok_00000}
\else
\set ON_ERROR_STOP on
DO $stop$ BEGIN RAISE EXCEPTION 'a statement above failed: this script stops here, and nothing after it runs' USING HINT = 'fix what failed (the first ERROR above), then write the script again from where the database stands (alembic current)'; END $stop$;
\endif

-- backfill undo (downgrade of 0003): restore what the backfill changed, where it is still as the backfill left it,
-- keeping what other tables reference and what the application made its own.
DO $undo$
DECLARE
    result record;
    source record;
    lo bigint;
    size integer := 1000;
    attempt integer;
    started timestamptz;
    done_deleted bigint := 0;
    done_deactivated bigint := 0;
    done_referenced bigint := 0;
    done_claimed bigint := 0;
    done_changed bigint := 0;
    tally jsonb := '{}';
    parts text[] := '{}';
    orders record;
    ready bigint;
    holding text;
    held_said_at timestamptz;
    paused_since timestamptz;
BEGIN
    FOR source IN SELECT s.name, s.start FROM (VALUES ('batches', 4611686018427387904), ('changes', -2147483649)) AS s(name, start) LOOP
        lo := source.start;
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
                    RAISE EXCEPTION 'backfill undo (downgrade of 0003): the enrollments lock is held by % (taken between two batches); nothing of this batch was written',
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
                        RAISE EXCEPTION 'backfill undo (downgrade of 0003): paused for longer than its pause patience (1h, -x pause_patience); nothing of the next batch was written'
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
                    RAISE NOTICE 'backfill undo (downgrade of 0003): held: %', holding;
                    held_said_at := pg_catalog.clock_timestamp();
                END IF;
                PERFORM pg_catalog.pg_sleep(0.5);
            END LOOP;
            IF held_said_at IS NOT NULL THEN
                RAISE NOTICE 'backfill undo (downgrade of 0003): no longer held: going on';
            END IF;
            held_said_at := NULL;
            paused_since := NULL;
            started := clock_timestamp();
            LOOP
                BEGIN
                    SELECT * INTO result FROM "public".course_enrollments_undo_batch(source.name, lo, size);
                    EXIT;
                EXCEPTION WHEN deadlock_detected OR serialization_failure OR lock_not_available
                    OR unique_violation THEN
                    attempt := attempt + 1;
                    IF clock_timestamp() - started > interval '600 s' THEN
                        RAISE EXCEPTION USING ERRCODE = SQLSTATE,
                            MESSAGE = format('backfill undo (downgrade of 0003): gave up after %s attempts over %s (lock_patience 10min): %s',
                                attempt, date_trunc('second', clock_timestamp() - started), SQLERRM),
                            HINT = 'run it again when the lock is free: it goes on from where it stopped';
                    END IF;
                    RAISE WARNING 'backfill undo (downgrade of 0003): a batch failed (%), rolled back; retrying (attempt %)', SQLERRM, attempt;
                    PERFORM pg_sleep(least(5.0, random() * 0.1 * 2 ^ least(attempt, 6)));
                END;
            END LOOP;
            EXIT WHEN result.records = 0;
            done_deleted := done_deleted + result.deleted_rows;
            done_deactivated := done_deactivated + result.deactivated_rows;
            done_referenced := done_referenced + result.referenced_rows;
            done_claimed := done_claimed + result.claimed_rows;
            done_changed := done_changed + result.changed_rows;
            tally := tally || coalesce((
                SELECT jsonb_object_agg(j.key, coalesce((tally ->> j.key)::bigint, 0) + j.value::bigint)
                FROM jsonb_each_text(result.by_table) AS j), '{}');
            lo := result.last_id;
            COMMIT;
            IF orders.sleep IS NOT NULL OR orders.max_rate IS NOT NULL THEN
                PERFORM pg_catalog.pg_sleep(greatest(
                    coalesce(pg_catalog.date_part('epoch', orders.sleep), 0),
                    coalesce(result.records::float8 / orders.max_rate
                             - pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() - started), 0)));
            END IF;
        END LOOP;
        COMMIT;
    END LOOP;
    RAISE NOTICE 'backfill undo (downgrade of 0003): % enrollments deleted, % deactivated', done_deleted, done_deactivated;
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
        RAISE WARNING 'backfill undo (downgrade of 0003): kept % recorded enrollments as they are: %',
            done_referenced + done_claimed + done_changed, array_to_string(parts, '; ');
    END IF;
    COMMIT;
END
$undo$;

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
        RAISE EXCEPTION 'the enrollments lock is held by %; nothing more of alembic 0003:0002 --sql was changed',
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
    IF found IS DISTINCT FROM '0003' THEN
        RAISE EXCEPTION 'this step expects the database at 0003, but it is at %: a step before it failed; nothing more of this script is applied', coalesce(nullif(found, ''), 'base')
            USING HINT = 'fix what failed first, then write the script again from where the database stands: ' || replace('alembic downgrade {found}:0002 --sql', '{found}', coalesce(nullif(found, ''), 'base'));
    END IF;
END
$where$;

-- Stop before recording the downgrade of 0003 unless the undo above went through the whole record.
DO $verify$
BEGIN
    IF NOT (SELECT NOT EXISTS (SELECT 1 FROM "public".enrollment_backfill_changes) AND NOT EXISTS (SELECT 1 FROM "public".enrollment_backfill_batches)) THEN
        RAISE EXCEPTION 'the downgrade of 0003 is not recorded: the backfill record still holds records the undo did not reach'
            USING HINT = 'fix what failed above, then run the downgrade again: it goes on from where it stopped';
    END IF;
END
$verify$;

DELETE FROM "public".enrollment_backfill_claims;

-- ======================================================================================
-- Step: drops the sync trigger's triggers, functions and tables
-- Locks: ACCESS EXCLUSIVE on group_members, users, groups and courses, for
--   milliseconds: reads and writes of them wait; each attempt waits at most
--   lock_timeout, then retries with backoff until lock_patience
-- Takes: milliseconds, or retries while a long transaction holds one of the tables
-- ======================================================================================

-- dropping the sync triggers: each attempt waits at most lock_timeout (500ms) for the tables, so the
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
                EXECUTE pg_catalog.format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', relation);
            END LOOP;
            PERFORM pg_catalog.set_config('lock_timeout', coalesce(budget, '0'), true);
            DROP TRIGGER IF EXISTS course_enrollments_sync_on_insert ON "public".group_members;
            DROP TRIGGER IF EXISTS course_enrollments_sync_on_update ON "public".group_members;
            DROP TRIGGER IF EXISTS course_enrollments_sync_on_user ON "public".users;
            DROP TRIGGER IF EXISTS course_enrollments_sync_on_group ON "public".groups;
            DROP TRIGGER IF EXISTS course_enrollments_sync_on_course ON "public".courses;
            DROP TABLE IF EXISTS "public".course_enrollments_sync_pending;
            DROP TABLE IF EXISTS "public".course_enrollments_sync_guard;
            DROP FUNCTION IF EXISTS "public".course_enrollments_sync_members();
            DROP FUNCTION IF EXISTS "public".course_enrollments_sync_user();
            DROP FUNCTION IF EXISTS "public".course_enrollments_sync_group();
            DROP FUNCTION IF EXISTS "public".course_enrollments_sync_course();
            DROP FUNCTION IF EXISTS "public".course_enrollments_sync_apply();
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
              AND l.mode IN ('AccessShareLock', 'RowShareLock', 'RowExclusiveLock', 'ShareUpdateExclusiveLock', 'ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock') AND l.pid IS DISTINCT FROM pg_catalog.pg_backend_pid();
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

DROP FUNCTION IF EXISTS "public".course_enrollments_undo_batch(text, bigint, integer);

DROP FUNCTION IF EXISTS "public".course_enrollments_undo_batch(bigint, integer);

DROP TABLE IF EXISTS "public".enrollment_backfill_control;

DROP TABLE "public".enrollment_backfill_candidates;

DROP TABLE "public".enrollment_backfill_claims;

DROP TABLE "public".enrollment_backfill_batches;

DROP TABLE "public".enrollment_backfill_runs;

DROP TABLE "public".enrollment_backfill_changes;
