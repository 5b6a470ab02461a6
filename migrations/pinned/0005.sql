-- Pinned offline SQL of revision 0005; digest 22d189a2294b.
-- Written by `python -m migrations.pins --write`. tests/test_pins.py fails when the
-- revision writes anything else. A released revision changes only to fix a defect: rewrite
-- this file in the same commit and give the reason in migrations/pinned/CHANGES.md.

-- ==== upgrade 0004 -> 0005 ====

-- Running upgrade 0004 -> 0005

-- Coverage gate before revision 0005: every eligible (student, course) pair
-- must have an active course_enrollment. If one lacks it, this block raises an
-- exception and psql -v ON_ERROR_STOP=1 stops here: nothing after it is applied.
DO $gate$
DECLARE
    counts record;
BEGIN
    SELECT * INTO counts FROM (
        SELECT active_memberships, eligible_pairs, covered, inactive, missing,
            non_student, cross_school,
            ARRAY(SELECT k FROM unnest(missing_keys) AS k ORDER BY k LIMIT 10) AS first_missing,
            ARRAY(SELECT k FROM unnest(inactive_keys) AS k ORDER BY k LIMIT 10) AS first_inactive,
            ARRAY(SELECT k FROM unnest(non_student_keys) AS k ORDER BY k LIMIT 10) AS first_non_student,
            ARRAY(SELECT k FROM unnest(cross_school_keys) AS k ORDER BY k LIMIT 10) AS first_cross_school
        FROM (
            SELECT
                (SELECT count(*) FROM group_members AS gm WHERE gm.active IS TRUE)
                    AS active_memberships,
                count(*) FILTER (WHERE status IN ('covered', 'inactive', 'missing')) AS eligible_pairs,
                count(*) FILTER (WHERE status = 'covered') AS covered,
                count(*) FILTER (WHERE status = 'inactive') AS inactive,
                count(*) FILTER (WHERE status = 'missing') AS missing,
                count(*) FILTER (WHERE status = 'non_student') AS non_student,
                count(*) FILTER (WHERE status = 'cross_school') AS cross_school,
                array_agg(pair_key) FILTER (WHERE status = 'missing') AS missing_keys,
                array_agg(pair_key) FILTER (WHERE status = 'inactive') AS inactive_keys,
                array_agg(pair_key) FILTER (WHERE status = 'non_student') AS non_student_keys,
                array_agg(pair_key) FILTER (WHERE status = 'cross_school') AS cross_school_keys
            FROM (
                SELECT pairs.*, pairs.student_id::bigint * 4294967296 + pairs.course_id AS pair_key
                FROM (
                    SELECT p.student_id, p.course_id,
                        CASE
                            WHEN NOT (u.role = 'student') THEN 'non_student'
                            WHEN NOT (u.school_id = c.school_id) THEN 'cross_school'
                            WHEN ce.active THEN 'covered'
                            WHEN ce.id IS NOT NULL THEN 'inactive'
                            ELSE 'missing'
                        END AS status
                    FROM (
                        SELECT DISTINCT gm.user_id AS student_id, g.course_id
                        FROM group_members AS gm
                        JOIN groups AS g ON g.id = gm.group_id
                        WHERE gm.active IS TRUE
                    ) AS p
                    JOIN users AS u ON u.id = p.student_id
                    JOIN courses AS c ON c.id = p.course_id
                    LEFT JOIN course_enrollments AS ce
                        ON ce.course_id = p.course_id AND ce.student_id = p.student_id
                ) AS pairs
            ) AS pairs
        ) AS coverage
    ) AS audit;
    IF counts.covered < counts.eligible_pairs THEN
        RAISE EXCEPTION 'coverage gate before revision 0005: % of % eligible pairs lack an active enrollment (% missing, % inactive)',
            counts.eligible_pairs - counts.covered, counts.eligible_pairs,
            counts.missing, counts.inactive
            USING DETAIL = 'first uncovered pairs: ' || trim(both ', ' from array_to_string(ARRAY(
            SELECT '(student ' || (k / 4294967296) || ', course '
                   || mod(k, 4294967296) || ', missing)'
            FROM unnest(counts.first_missing) AS k), ', ') || ', ' || array_to_string(ARRAY(
            SELECT '(student ' || (k / 4294967296) || ', course '
                   || mod(k, 4294967296) || ', inactive)'
            FROM unnest(counts.first_inactive) AS k), ', ')),
                  HINT = 'run enrollments backfill --commit, then alembic upgrade head again';
    END IF;
    IF counts.non_student + counts.cross_school > 0 THEN
        RAISE WARNING 'coverage gate: % non_student and % cross_school memberships are not enrolled; review them with enrollments audit',
            counts.non_student, counts.cross_school;
    END IF;
END
$gate$;

-- ==== downgrade 0005 -> 0004 ====

-- Running downgrade 0005 -> 0004
