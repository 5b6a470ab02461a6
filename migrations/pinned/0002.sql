-- Pinned offline SQL of revision 0002; digest 1154ed807648.
-- Written by `python -m migrations.pins --write`. tests/test_pins.py fails when the
-- revision writes anything else. A released revision changes only to fix a defect: rewrite
-- this file in the same commit and give the reason in migrations/pinned/CHANGES.md.

-- ==== upgrade 0001 -> 0002 ====

-- Running upgrade 0001 -> 0002

COMMIT;

-- If an interrupted CREATE INDEX CONCURRENTLY left ix_course_enrollment_course_active INVALID, drop it without
-- blocking writes: this query yields that DROP INDEX CONCURRENTLY and psql's \gexec runs
-- it (it yields nothing when the index is valid or absent).
SELECT format('DROP INDEX CONCURRENTLY IF EXISTS %I.%I', n.nspname, c.relname)
FROM pg_index AS i
JOIN pg_class AS c ON c.oid = i.indexrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE i.indexrelid = to_regclass('ix_course_enrollment_course_active') AND NOT i.indisvalid
\gexec

-- Build ix_course_enrollment_course_active without blocking writes to course_enrollments. The build waits for
-- every older transaction: lock_timeout must not cut that wait short.
SET lock_timeout = 0;

CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_course_enrollment_course_active ON course_enrollments (course_id, active);

SET lock_timeout = '5s';

-- Stop before recording this revision unless ix_course_enrollment_course_active is there and valid.
DO $valid$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_index WHERE indexrelid = to_regclass('ix_course_enrollment_course_active') AND indisvalid
    ) THEN
        RAISE EXCEPTION 'index ix_course_enrollment_course_active is missing or INVALID after its build'
            USING HINT = 'run the script of this revision again: it drops an INVALID index and builds it anew';
    END IF;
END
$valid$;

BEGIN;

-- ==== downgrade 0002 -> 0001 ====

-- Running downgrade 0002 -> 0001

COMMIT;

DROP INDEX CONCURRENTLY IF EXISTS ix_course_enrollment_course_active;

BEGIN;
