-- Pinned offline SQL of revision 0002; digest 2bac75fcadaa.
-- Written by `python -m migrations.pins --write`. tests/test_pins.py fails when the
-- revision writes anything else. A released revision changes only to fix a defect: rewrite
-- this file in the same commit and give the reason in migrations/pinned/CHANGES.md.

-- ==== upgrade 0001 -> 0002 ====

-- Running upgrade 0001 -> 0002

COMMIT;

-- If an interrupted CREATE INDEX CONCURRENTLY left ix_course_enrollment_course_active INVALID, drop it without
-- blocking writes: this query yields that DROP INDEX CONCURRENTLY and psql's \gexec runs
-- it (it yields nothing when the index is valid or absent).
SELECT pg_catalog.format('DROP INDEX CONCURRENTLY IF EXISTS %I.%I', n.nspname, c.relname)
FROM pg_catalog.pg_index AS i
JOIN pg_catalog.pg_class AS c ON c.oid OPERATOR(pg_catalog.=) i.indexrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
WHERE i.indexrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass('"public".ix_course_enrollment_course_active') AND NOT i.indisvalid
\gexec

-- Build ix_course_enrollment_course_active without blocking writes to course_enrollments. The build waits for every
-- older transaction, blocking nobody meanwhile; it runs with the server's
-- lock_timeout (0 unless the role or the database sets one).
CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_course_enrollment_course_active ON "public".course_enrollments (course_id, active);

BEGIN;

SET LOCAL search_path = pg_catalog, pg_temp;

SET LOCAL lock_timeout = '500ms';

SET LOCAL statement_timeout = '0';

DO $lock$
BEGIN
    IF NOT pg_catalog.pg_try_advisory_xact_lock(28550410422479921) THEN
        RAISE EXCEPTION 'the enrollments lock is held by %; nothing more of alembic 0001:0002 --sql was changed',
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

-- Stop before recording this revision unless ix_course_enrollment_course_active is there and valid.
DO $valid$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index AS i WHERE i.indexrelid = pg_catalog.to_regclass('"public".ix_course_enrollment_course_active') AND i.indisvalid) THEN
        RAISE EXCEPTION 'index ix_course_enrollment_course_active is missing or INVALID after its build'
            USING HINT = 'run the script of this revision again: it drops an INVALID index and builds it anew';
    END IF;
END
$valid$;

COMMIT;

BEGIN;

SET LOCAL search_path = pg_catalog, pg_temp;

SET LOCAL lock_timeout = '500ms';

SET LOCAL statement_timeout = '0';

DO $lock$
BEGIN
    IF NOT pg_catalog.pg_try_advisory_xact_lock(28550410422479921) THEN
        RAISE EXCEPTION 'the enrollments lock is held by %; nothing more of alembic 0001:0002 --sql was changed',
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

-- ==== downgrade 0002 -> 0001 ====

-- Running downgrade 0002 -> 0001

COMMIT;

DROP INDEX CONCURRENTLY IF EXISTS "public".ix_course_enrollment_course_active;

BEGIN;

SET LOCAL search_path = pg_catalog, pg_temp;

SET LOCAL lock_timeout = '500ms';

SET LOCAL statement_timeout = '0';

DO $lock$
BEGIN
    IF NOT pg_catalog.pg_try_advisory_xact_lock(28550410422479921) THEN
        RAISE EXCEPTION 'the enrollments lock is held by %; nothing more of alembic 0002:0001 --sql was changed',
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
