-- Pinned offline SQL of revision 0002; digest dff2fafe458e.
-- Written by `python -m migrations.pins --write`. tests/test_pins.py fails when the
-- revision writes anything else. A released revision changes only to fix a defect: rewrite
-- this file in the same commit and give the reason in migrations/pinned/CHANGES.md.

-- ==== upgrade 0001 -> 0002 ====

-- Running upgrade 0001 -> 0002

COMMIT;

-- Drop ix_course_enrollment_course_active if an interrupted CREATE INDEX CONCURRENTLY left it INVALID,
-- so that the build below starts again instead of skipping it.
DO $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM pg_index
        WHERE indexrelid = to_regclass('ix_course_enrollment_course_active') AND NOT indisvalid
    ) THEN
        DROP INDEX ix_course_enrollment_course_active;
    END IF;
END
$$;

-- Build ix_course_enrollment_course_active without blocking writes to course_enrollments.
CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_course_enrollment_course_active ON course_enrollments (course_id, active);

BEGIN;

-- ==== downgrade 0002 -> 0001 ====

-- Running downgrade 0002 -> 0001

COMMIT;

DROP INDEX CONCURRENTLY IF EXISTS ix_course_enrollment_course_active;

BEGIN;
