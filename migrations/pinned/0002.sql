-- Pinned offline SQL of revision 0002; digest fe19a387801a.
-- Written by `python -m enrollments_phase1.migrations.pins --write`. tests/test_pins.py
-- fails when the revision writes anything else. A released revision changes only to fix a
-- defect: rewrite this file in the same commit and give the reason in
-- migrations/pinned/CHANGES.md.

-- ==== upgrade 0001 -> 0002 ====

-- Running upgrade 0001 -> 0002

COMMIT;

-- Only where the database stands at 0001: a step before this one failed otherwise.
\unset enrollments_on_track
SELECT coalesce(pg_catalog.string_agg(version_num, ', ' ORDER BY version_num), '') OPERATOR(pg_catalog.=) '0001' AS enrollments_on_track
FROM "public".alembic_version
\gset
\if :enrollments_on_track

-- ======================================================================================
-- Step: builds ix_course_enrollment_course_active without blocking writes (CREATE INDEX
--   CONCURRENTLY; an INVALID leftover of a cut build is dropped concurrently first)
-- Locks: SHARE UPDATE EXCLUSIVE on course_enrollments, which no read or write waits
--   for; the build waits for every transaction older than it (named just before it
--   starts; meanwhile pg_stat_progress_create_index shows where it is)
-- Takes: about 30 s at 100M memberships (1.8 s at 7.5M measured), after the oldest open
--   transaction ends
-- ======================================================================================

-- If an interrupted CREATE INDEX CONCURRENTLY left ix_course_enrollment_course_active INVALID, drop it without
-- blocking writes: this query yields that DROP INDEX CONCURRENTLY and psql's \gexec runs
-- it (it yields nothing when the index is valid or absent).
SELECT pg_catalog.format('DROP INDEX CONCURRENTLY IF EXISTS %I.%I', n.nspname, c.relname)
FROM pg_catalog.pg_index AS i
JOIN pg_catalog.pg_class AS c ON c.oid OPERATOR(pg_catalog.=) i.indexrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
WHERE i.indexrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass('"public".ix_course_enrollment_course_active') AND NOT i.indisvalid
\gexec

-- Stop here if a statement above failed (psql goes on after an error without ON_ERROR_STOP).
\unset enrollments_ok_00000
\set enrollments_ok_:LAST_ERROR_SQLSTATE
\if :{?enrollments_ok_00000}
\else
\set ON_ERROR_STOP on
DO $stop$ BEGIN RAISE EXCEPTION 'a statement above failed: this script stops here, and nothing after it runs' USING HINT = 'fix what failed (the first ERROR above), then write the script again from where the database stands (alembic current)'; END $stop$;
\endif

DO $waits$
DECLARE
    older text;
BEGIN
    SELECT pg_catalog.string_agg(pg_catalog.format('pid %s (%s, %s, transaction open since %s)', a.pid,
               coalesce(nullif(a.application_name, ''), 'no application_name'), a.state,
               pg_catalog.to_char(a.xact_start, 'HH24:MI:SS')), '; ' ORDER BY a.xact_start)
    INTO older
    FROM pg_catalog.pg_stat_activity AS a
    WHERE a.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()
      AND (a.backend_xmin IS NOT NULL OR a.backend_xid IS NOT NULL)
      AND a.datname OPERATOR(pg_catalog.=) pg_catalog.current_database();
    RAISE NOTICE 'building ix_course_enrollment_course_active on "public".course_enrollments: it waits for %',
        coalesce('these transactions to end: ' OPERATOR(pg_catalog.||) older, 'no older transaction (none is open now)');
END
$waits$;

-- Stop here if a statement above failed (psql goes on after an error without ON_ERROR_STOP).
\unset enrollments_ok_00000
\set enrollments_ok_:LAST_ERROR_SQLSTATE
\if :{?enrollments_ok_00000}
\else
\set ON_ERROR_STOP on
DO $stop$ BEGIN RAISE EXCEPTION 'a statement above failed: this script stops here, and nothing after it runs' USING HINT = 'fix what failed (the first ERROR above), then write the script again from where the database stands (alembic current)'; END $stop$;
\endif

-- Build ix_course_enrollment_course_active without blocking writes to course_enrollments. The build waits for every
-- older transaction, blocking nobody meanwhile; it runs with the server's
-- lock_timeout (0 unless the role or the database sets one).
CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_course_enrollment_course_active ON "public".course_enrollments (course_id, active);

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
        RAISE EXCEPTION 'the enrollments lock is held by %; nothing more of alembic 0001:0002 --sql was changed',
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
    IF found IS DISTINCT FROM '0001' THEN
        RAISE EXCEPTION 'this step expects the database at 0001, but it is at %: a step before it failed; nothing more of this script is applied', coalesce(nullif(found, ''), 'base')
            USING HINT = 'fix what failed first, then write the script again from where the database stands: ' || replace('alembic upgrade {found}:0002 --sql', '{found}', coalesce(nullif(found, ''), 'base'));
    END IF;
END
$where$;

-- Stop before recording this revision unless ix_course_enrollment_course_active is there and valid.
DO $valid$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index AS i WHERE i.indexrelid = pg_catalog.to_regclass('"public".ix_course_enrollment_course_active') AND i.indisvalid) THEN
        RAISE EXCEPTION 'index ix_course_enrollment_course_active is missing or INVALID after its build'
            USING HINT = 'run the script of this revision again: it drops an INVALID index and builds it anew';
    END IF;
END
$valid$;

-- ==== downgrade 0002 -> 0001 ====

-- Running downgrade 0002 -> 0001

COMMIT;

-- Only where the database stands at 0002: a step before this one failed otherwise.
\unset enrollments_on_track
SELECT coalesce(pg_catalog.string_agg(version_num, ', ' ORDER BY version_num), '') OPERATOR(pg_catalog.=) '0002' AS enrollments_on_track
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

DROP INDEX CONCURRENTLY IF EXISTS "public".ix_course_enrollment_course_active;

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
        RAISE EXCEPTION 'the enrollments lock is held by %; nothing more of alembic 0002:0001 --sql was changed',
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
    IF found IS DISTINCT FROM '0002' THEN
        RAISE EXCEPTION 'this step expects the database at 0002, but it is at %: a step before it failed; nothing more of this script is applied', coalesce(nullif(found, ''), 'base')
            USING HINT = 'fix what failed first, then write the script again from where the database stands: ' || replace('alembic downgrade {found}:0001 --sql', '{found}', coalesce(nullif(found, ''), 'base'));
    END IF;
END
$where$;
