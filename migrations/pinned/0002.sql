-- Pinned offline SQL of revision 0002; digest bd2fc49ee8cc.
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
BEGIN
    IF NOT pg_catalog.pg_try_advisory_xact_lock(28550410422479921) THEN
        RAISE EXCEPTION 'the enrollments lock is held by %; nothing more of alembic 0001:0002 --sql was changed',
            (SELECT pg_catalog.string_agg(CASE WHEN l.pid IS NULL
            THEN pg_catalog.format('prepared transaction %s (COMMIT PREPARED or ROLLBACK PREPARED ends it)',
                coalesce(pg_catalog.quote_literal(px.gid), '(gid not readable)'))
            ELSE pg_catalog.format('pid %s (%s, connected since %s)',
                a.pid, a.application_name, a.backend_start) END, ', ')
         FROM pg_catalog.pg_locks AS l LEFT JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
         LEFT JOIN pg_catalog.pg_locks AS own_xid
             ON l.pid IS NULL AND own_xid.pid IS NULL AND own_xid.locktype = 'transactionid'
            AND own_xid.virtualtransaction = l.virtualtransaction
         LEFT JOIN pg_catalog.pg_prepared_xacts AS px ON px.transaction = own_xid.transactionid
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
             AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d
                               WHERE d.datname = pg_catalog.current_database())
             AND l.classid = (28550410422479921 >> 32)::oid
             AND l.objid = (28550410422479921 & 4294967295)::oid)
            USING HINT = 'run this script again when that session has finished';
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
BEGIN
    IF NOT pg_catalog.pg_try_advisory_xact_lock(28550410422479921) THEN
        RAISE EXCEPTION 'the enrollments lock is held by %; nothing more of alembic 0002:0001 --sql was changed',
            (SELECT pg_catalog.string_agg(CASE WHEN l.pid IS NULL
            THEN pg_catalog.format('prepared transaction %s (COMMIT PREPARED or ROLLBACK PREPARED ends it)',
                coalesce(pg_catalog.quote_literal(px.gid), '(gid not readable)'))
            ELSE pg_catalog.format('pid %s (%s, connected since %s)',
                a.pid, a.application_name, a.backend_start) END, ', ')
         FROM pg_catalog.pg_locks AS l LEFT JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
         LEFT JOIN pg_catalog.pg_locks AS own_xid
             ON l.pid IS NULL AND own_xid.pid IS NULL AND own_xid.locktype = 'transactionid'
            AND own_xid.virtualtransaction = l.virtualtransaction
         LEFT JOIN pg_catalog.pg_prepared_xacts AS px ON px.transaction = own_xid.transactionid
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
             AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d
                               WHERE d.datname = pg_catalog.current_database())
             AND l.classid = (28550410422479921 >> 32)::oid
             AND l.objid = (28550410422479921 & 4294967295)::oid)
            USING HINT = 'run this script again when that session has finished';
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
