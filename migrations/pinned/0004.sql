-- Pinned offline SQL of revision 0004; digest f8e394580e0e.
-- Written by `python -m migrations.pins --write`. tests/test_pins.py fails when the
-- revision writes anything else. A released revision changes only to fix a defect: rewrite
-- this file in the same commit and give the reason in migrations/pinned/CHANGES.md.

-- ==== upgrade 0003 -> 0004 ====

-- Running upgrade 0003 -> 0004

-- Backfill 1 of 2: reactivate the inactive course_enrollments of eligible pairs
-- (a student's active membership in a group of a course of the student's school).
WITH changed AS (
    UPDATE course_enrollments AS ce
    SET active = true
    FROM (
        SELECT DISTINCT gm.user_id AS student_id, g.course_id
        FROM group_members AS gm
        JOIN groups AS g ON g.id = gm.group_id
        JOIN courses AS c ON c.id = g.course_id
        JOIN users AS u ON u.id = gm.user_id
        WHERE gm.active IS TRUE
          AND u.role = 'student'
          AND u.school_id = c.school_id
    ) AS p
    WHERE ce.course_id = p.course_id
      AND ce.student_id = p.student_id
      AND NOT ce.active
    RETURNING ce.id, ce.course_id, ce.student_id
)
INSERT INTO enrollment_backfill_changes (revision, enrollment_id, course_id, student_id, action)
SELECT '0004', id, course_id, student_id, 'reactivated' FROM changed
ON CONFLICT (revision, enrollment_id) DO NOTHING;

-- Backfill 2 of 2: create an active course_enrollment for each eligible pair
-- that has none; ON CONFLICT skips a pair the application enrolled meanwhile.
WITH changed AS (
    INSERT INTO course_enrollments (course_id, student_id, active)
    SELECT p.course_id, p.student_id, true
    FROM (
        SELECT DISTINCT gm.user_id AS student_id, g.course_id
        FROM group_members AS gm
        JOIN groups AS g ON g.id = gm.group_id
        JOIN courses AS c ON c.id = g.course_id
        JOIN users AS u ON u.id = gm.user_id
        WHERE gm.active IS TRUE
          AND u.role = 'student'
          AND u.school_id = c.school_id
    ) AS p
    WHERE NOT EXISTS (
        SELECT 1 FROM course_enrollments AS ce
        WHERE ce.course_id = p.course_id AND ce.student_id = p.student_id
    )
    ORDER BY p.student_id, p.course_id
    ON CONFLICT (course_id, student_id) DO NOTHING
    RETURNING id, course_id, student_id
)
INSERT INTO enrollment_backfill_changes (revision, enrollment_id, course_id, student_id, action)
SELECT '0004', id, course_id, student_id, 'created' FROM changed
ON CONFLICT (revision, enrollment_id) DO NOTHING;

-- ==== downgrade 0004 -> 0003 ====

-- Running downgrade 0004 -> 0003

-- Warn about enrollments changed since backfill 0004: they are left alone.
DO $$
DECLARE
    changed bigint;
BEGIN
    SELECT count(*) INTO changed FROM (
        SELECT r.enrollment_id, r.course_id, r.student_id, r.action
        FROM enrollment_backfill_changes AS r
        LEFT JOIN course_enrollments AS ce ON ce.id = r.enrollment_id
        WHERE r.revision = '0004'
          AND (ce.id IS NULL OR NOT ce.active
               OR ce.course_id <> r.course_id OR ce.student_id <> r.student_id)
        ORDER BY r.enrollment_id
    ) AS c;
    IF changed > 0 THEN
        RAISE WARNING 'backfill 0004 downgrade: % recorded enrollments changed since the upgrade; left as they are', changed;
    END IF;
END
$$;

-- Undo backfill 0004, 1 of 3: delete the enrollments it created,
-- where they are still as it left them (same pair, active).
DELETE FROM course_enrollments AS ce
USING enrollment_backfill_changes AS r
WHERE r.revision = '0004' AND r.action = 'created'
      AND ce.id = r.enrollment_id AND ce.course_id = r.course_id
      AND ce.student_id = r.student_id AND ce.active;

-- Undo backfill 0004, 2 of 3: deactivate the enrollments it reactivated,
-- where they are still active.
UPDATE course_enrollments AS ce
SET active = false
FROM enrollment_backfill_changes AS r
WHERE r.revision = '0004' AND r.action = 'reactivated'
      AND ce.id = r.enrollment_id AND ce.course_id = r.course_id
      AND ce.student_id = r.student_id AND ce.active;

-- Undo backfill 0004, 3 of 3: forget its record.
DELETE FROM enrollment_backfill_changes WHERE revision = '0004';
