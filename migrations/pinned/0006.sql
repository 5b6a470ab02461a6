-- Pinned offline SQL of revision 0006; digest 01b5c182e4fa.
-- Written by `python -m migrations.pins --write`. tests/test_pins.py fails when the
-- revision writes anything else. A released revision changes only to fix a defect: rewrite
-- this file in the same commit and give the reason in migrations/pinned/CHANGES.md.

-- ==== upgrade 0005 -> 0006 ====

-- Running upgrade 0005 -> 0006

COMMIT;

-- The backfill's bookkeeping as 1.1 keeps it: a database 1.0.0 migrated lacks the row
-- version column, the index and the runs table (otherwise nothing happens).
BEGIN;
SET LOCAL client_min_messages = warning;
ALTER TABLE enrollment_backfill_changes ADD COLUMN IF NOT EXISTS row_xmin bigint;
-- Only backfills write this table, and they wait for the enrollments lock this run holds.
-- squawk-ignore require-concurrent-index-creation
CREATE UNIQUE INDEX IF NOT EXISTS uq_enrollment_backfill_changes_enrollment ON enrollment_backfill_changes (enrollment_id);
CREATE TABLE IF NOT EXISTS enrollment_backfill_runs (
    id serial NOT NULL,
    source varchar(32) NOT NULL,
    started_at timestamp with time zone DEFAULT now() NOT NULL,
    finished_at timestamp with time zone,
    checkpoint bigint,
    sync_trigger boolean NOT NULL,
    batches integer DEFAULT 0 NOT NULL,
    created bigint DEFAULT 0 NOT NULL,
    reactivated bigint DEFAULT 0 NOT NULL,
    CONSTRAINT enrollment_backfill_runs_pkey PRIMARY KEY (id)
);
COMMIT;

-- Is the sync trigger missing (1.0.0 migrated this database)? Then install it
-- and catch up with a backfill: psql's \gset and \if decide.
SELECT NOT (EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass('group_members') AND tgname = 'course_enrollments_sync_on_insert' AND NOT tgisinternal)
   AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass('group_members') AND tgname = 'course_enrollments_sync_on_update' AND NOT tgisinternal)
   AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass('users') AND tgname = 'course_enrollments_sync_on_user' AND NOT tgisinternal)
   AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass('groups') AND tgname = 'course_enrollments_sync_on_group' AND NOT tgisinternal)
   AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass('courses') AND tgname = 'course_enrollments_sync_on_course' AND NOT tgisinternal)) AS enrollments_sync_missing
\gset

\if :enrollments_sync_missing

CREATE OR REPLACE FUNCTION course_enrollments_sync_members() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT
AS $sync$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO course_enrollments AS ce (course_id, student_id, active)
        SELECT p.course_id, p.student_id, true
        FROM (
            SELECT DISTINCT g.course_id, gm.user_id AS student_id
            FROM new_members AS gm
            JOIN groups AS g ON g.id = gm.group_id
            JOIN courses AS c ON c.id = g.course_id
            JOIN users AS u ON u.id = gm.user_id
            WHERE gm.active IS TRUE AND u.role = 'student' AND u.school_id = c.school_id
        ) AS p
        WHERE NOT EXISTS (
            SELECT 1 FROM course_enrollments AS e
            WHERE e.course_id = p.course_id AND e.student_id = p.student_id AND e.active
        )
        ORDER BY p.course_id, p.student_id
        ON CONFLICT (course_id, student_id) DO UPDATE SET active = true WHERE NOT ce.active;
    ELSE
        -- Only rows that may have become eligible: activated, or moved.
        INSERT INTO course_enrollments AS ce (course_id, student_id, active)
        SELECT p.course_id, p.student_id, true
        FROM (
            SELECT DISTINCT g.course_id, gm.user_id AS student_id
            FROM new_members AS gm
            JOIN old_members AS o ON o.id = gm.id
            JOIN groups AS g ON g.id = gm.group_id
            JOIN courses AS c ON c.id = g.course_id
            JOIN users AS u ON u.id = gm.user_id
            WHERE gm.active IS TRUE AND u.role = 'student' AND u.school_id = c.school_id
              AND (o.active IS NOT TRUE OR o.group_id <> gm.group_id OR o.user_id <> gm.user_id)
        ) AS p
        WHERE NOT EXISTS (
            SELECT 1 FROM course_enrollments AS e
            WHERE e.course_id = p.course_id AND e.student_id = p.student_id AND e.active
        )
        ORDER BY p.course_id, p.student_id
        ON CONFLICT (course_id, student_id) DO UPDATE SET active = true WHERE NOT ce.active;
    END IF;
    RETURN NULL;
END
$sync$;

CREATE OR REPLACE FUNCTION course_enrollments_sync_user() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT
AS $sync$
BEGIN
    INSERT INTO course_enrollments AS ce (course_id, student_id, active)
    SELECT p.course_id, p.student_id, true
    FROM (
        SELECT DISTINCT g.course_id, gm.user_id AS student_id
        FROM group_members AS gm
        JOIN groups AS g ON g.id = gm.group_id
        JOIN courses AS c ON c.id = g.course_id
        JOIN users AS u ON u.id = gm.user_id
        WHERE gm.active IS TRUE AND u.role = 'student' AND u.school_id = c.school_id
          AND gm.user_id = NEW.id
    ) AS p
    WHERE NOT EXISTS (
        SELECT 1 FROM course_enrollments AS e
        WHERE e.course_id = p.course_id AND e.student_id = p.student_id AND e.active
    )
    ORDER BY p.course_id, p.student_id
    ON CONFLICT (course_id, student_id) DO UPDATE SET active = true WHERE NOT ce.active;
    RETURN NULL;
END
$sync$;

CREATE OR REPLACE FUNCTION course_enrollments_sync_group() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT
AS $sync$
BEGIN
    INSERT INTO course_enrollments AS ce (course_id, student_id, active)
    SELECT p.course_id, p.student_id, true
    FROM (
        SELECT DISTINCT g.course_id, gm.user_id AS student_id
        FROM group_members AS gm
        JOIN groups AS g ON g.id = gm.group_id
        JOIN courses AS c ON c.id = g.course_id
        JOIN users AS u ON u.id = gm.user_id
        WHERE gm.active IS TRUE AND u.role = 'student' AND u.school_id = c.school_id
          AND gm.group_id = NEW.id
    ) AS p
    WHERE NOT EXISTS (
        SELECT 1 FROM course_enrollments AS e
        WHERE e.course_id = p.course_id AND e.student_id = p.student_id AND e.active
    )
    ORDER BY p.course_id, p.student_id
    ON CONFLICT (course_id, student_id) DO UPDATE SET active = true WHERE NOT ce.active;
    RETURN NULL;
END
$sync$;

CREATE OR REPLACE FUNCTION course_enrollments_sync_course() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT
AS $sync$
BEGIN
    INSERT INTO course_enrollments AS ce (course_id, student_id, active)
    SELECT p.course_id, p.student_id, true
    FROM (
        SELECT DISTINCT g.course_id, gm.user_id AS student_id
        FROM group_members AS gm
        JOIN groups AS g ON g.id = gm.group_id
        JOIN courses AS c ON c.id = g.course_id
        JOIN users AS u ON u.id = gm.user_id
        WHERE gm.active IS TRUE AND u.role = 'student' AND u.school_id = c.school_id
          AND g.course_id = NEW.id
    ) AS p
    WHERE NOT EXISTS (
        SELECT 1 FROM course_enrollments AS e
        WHERE e.course_id = p.course_id AND e.student_id = p.student_id AND e.active
    )
    ORDER BY p.course_id, p.student_id
    ON CONFLICT (course_id, student_id) DO UPDATE SET active = true WHERE NOT ce.active;
    RETURN NULL;
END
$sync$;

-- Install the sync triggers on group_members: a moment of SHARE ROW EXCLUSIVE (writes to
-- group_members wait, reads do not), retried on a lock timeout.
DO $install$
DECLARE
    attempt integer := 0;
BEGIN
    LOOP
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass('group_members') AND tgname = 'course_enrollments_sync_on_insert' AND NOT tgisinternal) THEN
                EXECUTE $ddl$CREATE TRIGGER course_enrollments_sync_on_insert AFTER INSERT ON group_members REFERENCING NEW TABLE AS new_members
FOR EACH STATEMENT EXECUTE FUNCTION course_enrollments_sync_members()$ddl$;
            END IF;
            IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass('group_members') AND tgname = 'course_enrollments_sync_on_update' AND NOT tgisinternal) THEN
                EXECUTE $ddl$CREATE TRIGGER course_enrollments_sync_on_update AFTER UPDATE ON group_members REFERENCING OLD TABLE AS old_members NEW TABLE AS new_members
FOR EACH STATEMENT EXECUTE FUNCTION course_enrollments_sync_members()$ddl$;
            END IF;
            EXIT;
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            attempt := attempt + 1;
            IF attempt > 5 THEN
                RAISE;
            END IF;
            RAISE WARNING 'installing the sync triggers on group_members: lock not granted, retrying (attempt % of 5)', attempt;
            PERFORM pg_sleep(random() * 0.2 * 2 ^ attempt);
        END;
    END LOOP;
END
$install$;

-- Install the sync triggers on users: a moment of SHARE ROW EXCLUSIVE (writes to
-- users wait, reads do not), retried on a lock timeout.
DO $install$
DECLARE
    attempt integer := 0;
BEGIN
    LOOP
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass('users') AND tgname = 'course_enrollments_sync_on_user' AND NOT tgisinternal) THEN
                EXECUTE $ddl$CREATE TRIGGER course_enrollments_sync_on_user AFTER UPDATE OF role, school_id ON users FOR EACH ROW
WHEN (NEW.role = 'student' AND (OLD.role IS DISTINCT FROM NEW.role
      OR OLD.school_id IS DISTINCT FROM NEW.school_id))
EXECUTE FUNCTION course_enrollments_sync_user()$ddl$;
            END IF;
            EXIT;
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            attempt := attempt + 1;
            IF attempt > 5 THEN
                RAISE;
            END IF;
            RAISE WARNING 'installing the sync triggers on users: lock not granted, retrying (attempt % of 5)', attempt;
            PERFORM pg_sleep(random() * 0.2 * 2 ^ attempt);
        END;
    END LOOP;
END
$install$;

-- Install the sync triggers on groups: a moment of SHARE ROW EXCLUSIVE (writes to
-- groups wait, reads do not), retried on a lock timeout.
DO $install$
DECLARE
    attempt integer := 0;
BEGIN
    LOOP
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass('groups') AND tgname = 'course_enrollments_sync_on_group' AND NOT tgisinternal) THEN
                EXECUTE $ddl$CREATE TRIGGER course_enrollments_sync_on_group AFTER UPDATE OF course_id ON groups FOR EACH ROW
WHEN (OLD.course_id IS DISTINCT FROM NEW.course_id)
EXECUTE FUNCTION course_enrollments_sync_group()$ddl$;
            END IF;
            EXIT;
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            attempt := attempt + 1;
            IF attempt > 5 THEN
                RAISE;
            END IF;
            RAISE WARNING 'installing the sync triggers on groups: lock not granted, retrying (attempt % of 5)', attempt;
            PERFORM pg_sleep(random() * 0.2 * 2 ^ attempt);
        END;
    END LOOP;
END
$install$;

-- Install the sync triggers on courses: a moment of SHARE ROW EXCLUSIVE (writes to
-- courses wait, reads do not), retried on a lock timeout.
DO $install$
DECLARE
    attempt integer := 0;
BEGIN
    LOOP
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass('courses') AND tgname = 'course_enrollments_sync_on_course' AND NOT tgisinternal) THEN
                EXECUTE $ddl$CREATE TRIGGER course_enrollments_sync_on_course AFTER UPDATE OF school_id ON courses FOR EACH ROW
WHEN (OLD.school_id IS DISTINCT FROM NEW.school_id)
EXECUTE FUNCTION course_enrollments_sync_course()$ddl$;
            END IF;
            EXIT;
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            attempt := attempt + 1;
            IF attempt > 5 THEN
                RAISE;
            END IF;
            RAISE WARNING 'installing the sync triggers on courses: lock not granted, retrying (attempt % of 5)', attempt;
            PERFORM pg_sleep(random() * 0.2 * 2 ^ attempt);
        END;
    END LOOP;
END
$install$;

-- The backfill, one batch per transaction.
DO $backfill$
DECLARE
    run record;
    result record;
    lo bigint;
    size integer := 1000;
    attempt integer;
    started timestamptz;
    done_batches integer := 0;
    done_created bigint := 0;
    done_reactivated bigint := 0;
BEGIN
    WITH trigger_now AS (
        SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass('group_members') AND tgname = 'course_enrollments_sync_on_insert' AND NOT tgisinternal)
           AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass('group_members') AND tgname = 'course_enrollments_sync_on_update' AND NOT tgisinternal)
           AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass('users') AND tgname = 'course_enrollments_sync_on_user' AND NOT tgisinternal)
           AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass('groups') AND tgname = 'course_enrollments_sync_on_group' AND NOT tgisinternal)
           AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass('courses') AND tgname = 'course_enrollments_sync_on_course' AND NOT tgisinternal) AS installed
    ),
    unfinished AS (
        SELECT r.id, r.checkpoint, r.sync_trigger
        FROM enrollment_backfill_runs AS r
        WHERE r.finished_at IS NULL
        ORDER BY r.id DESC
        LIMIT 1
    ),
    resumable AS (
        SELECT u.id, u.checkpoint FROM unfinished AS u, trigger_now AS t
        WHERE u.sync_trigger OR NOT t.installed
    ),
    closed AS (
        UPDATE enrollment_backfill_runs SET finished_at = now()
        WHERE finished_at IS NULL AND id NOT IN (SELECT id FROM resumable)
    ),
    started AS (
        INSERT INTO enrollment_backfill_runs (source, sync_trigger)
        SELECT '0006', t.installed FROM trigger_now AS t
        WHERE NOT EXISTS (SELECT 1 FROM resumable)
        RETURNING id
    )
    SELECT id, coalesce(checkpoint, -2147483649) AS after, true AS resumed FROM resumable
    UNION ALL
    SELECT id, -2147483649, false FROM started
    INTO run;
    lo := run.after;
    IF run.resumed THEN
        RAISE NOTICE 'backfill 0006: resuming run % after membership id %', run.id, lo;
    END IF;
    COMMIT;
    LOOP
        attempt := 0;
        started := clock_timestamp();
        LOOP
            BEGIN
                WITH slice AS MATERIALIZED (
                    SELECT id, user_id, group_id, active FROM group_members
                    WHERE id > lo ORDER BY id LIMIT size
                ),
                candidates AS MATERIALIZED (
                    -- active memberships of eligible pairs that lack an active enrollment
                    SELECT gm.id, gm.user_id AS student_id, gm.group_id, g.course_id, ce.id AS enrollment_id
                    FROM slice AS gm
                    CROSS JOIN LATERAL (
                        SELECT x.course_id FROM groups AS x WHERE x.id = gm.group_id OFFSET 0
                    ) AS g
                    CROSS JOIN LATERAL (
                        SELECT x.school_id FROM courses AS x WHERE x.id = g.course_id OFFSET 0
                    ) AS c
                    CROSS JOIN LATERAL (
                        SELECT x.role, x.school_id FROM users AS x WHERE x.id = gm.user_id OFFSET 0
                    ) AS u
                    LEFT JOIN LATERAL (
                        SELECT x.id, x.active FROM course_enrollments AS x
                        WHERE x.course_id = g.course_id AND x.student_id = gm.user_id OFFSET 0
                    ) AS ce ON true
                    WHERE gm.active IS TRUE AND u.role = 'student' AND u.school_id = c.school_id AND ce.active IS NOT TRUE
                ),
                locked AS MATERIALIZED (
                    -- the candidates' memberships, locked until this transaction ends, in id order: a
                    -- deactivation by the application waits for this batch, or came first and makes the
                    -- row drop out here (PostgreSQL re-reads a row it locks)
                    SELECT gm.id, gm.user_id, gm.group_id
                    FROM group_members AS gm
                    WHERE gm.id = ANY (ARRAY(SELECT k.id FROM candidates AS k)) AND gm.active IS TRUE
                    ORDER BY gm.id
                    FOR SHARE
                ),
                pairs AS (
                    -- still as read: active (the lock re-read it), same user, same group
                    SELECT DISTINCT k.student_id, k.course_id, k.enrollment_id
                    FROM locked AS l
                    JOIN candidates AS k ON k.id = l.id AND k.student_id = l.user_id AND k.group_id = l.group_id
                ),
                to_reactivate AS MATERIALIZED (
                    SELECT e.id
                    FROM course_enrollments AS e
                    WHERE e.id = ANY (ARRAY(
                            SELECT p.enrollment_id FROM pairs AS p WHERE p.enrollment_id IS NOT NULL
                        ))
                      AND NOT e.active
                    ORDER BY e.id
                    FOR UPDATE
                ),
                reactivated AS (
                    UPDATE course_enrollments AS e
                    SET active = true
                    WHERE e.id = ANY (ARRAY(SELECT r.id FROM to_reactivate AS r)) AND NOT e.active
                    RETURNING e.id, e.course_id, e.student_id, e.xmin::text::bigint AS row_xmin
                ),
                created AS (
                    INSERT INTO course_enrollments (course_id, student_id, active)
                    SELECT p.course_id, p.student_id, true
                    FROM pairs AS p
                    WHERE p.enrollment_id IS NULL
                    ORDER BY p.course_id, p.student_id
                    ON CONFLICT (course_id, student_id) DO NOTHING
                    RETURNING id, course_id, student_id, xmin::text::bigint AS row_xmin
                ),
                recorded AS (
                    INSERT INTO enrollment_backfill_changes (revision, enrollment_id, course_id, student_id, action, row_xmin)
                    SELECT '0006', id, course_id, student_id, 'reactivated', row_xmin FROM reactivated
                    UNION ALL
                    SELECT '0006', id, course_id, student_id, 'created', row_xmin FROM created
                    ON CONFLICT DO NOTHING
                ),
                progress AS (
                    UPDATE enrollment_backfill_runs
                    SET checkpoint = coalesce((SELECT max(id) FROM slice), checkpoint),
                        batches = batches + 1,
                        created = created + (SELECT count(*) FROM created),
                        reactivated = reactivated + (SELECT count(*) FROM reactivated)
                    WHERE id = run.id
                )
                SELECT (SELECT max(id) FROM slice) AS last_id,
                    (SELECT count(*) FROM slice) AS memberships,
                    (SELECT count(*) FROM created) AS created,
                    (SELECT count(*) FROM reactivated) AS reactivated
                INTO result;
                EXIT;
            EXCEPTION WHEN deadlock_detected OR serialization_failure OR lock_not_available THEN
                attempt := attempt + 1;
                IF attempt > 5 THEN
                    RAISE;
                END IF;
                RAISE WARNING 'backfill 0006: a batch failed (%), rolled back; retrying (attempt % of 5)', SQLERRM, attempt;
                PERFORM pg_sleep(random() * 0.1 * 2 ^ attempt);
            END;
        END LOOP;
        EXIT WHEN result.memberships = 0;
        done_batches := done_batches + 1;
        done_created := done_created + result.created;
        done_reactivated := done_reactivated + result.reactivated;
        lo := result.last_id;
        COMMIT;
        -- toward 0.1 s a batch: x0.5 to x1.5 a step, within [100, 200000]
        IF result.memberships = size THEN
            size := least(200000, greatest(100, (size * least(1.5, greatest(0.5,
                0.1 / greatest(extract(epoch FROM clock_timestamp() - started), 0.000001))))::integer));
        END IF;
        EXIT WHEN false;
    END LOOP;
    UPDATE enrollment_backfill_runs SET finished_at = now() WHERE id = run.id;
    RAISE NOTICE 'backfill 0006: % enrollments created, % reactivated (% batches)', done_created, done_reactivated, done_batches;
    COMMIT;
END
$backfill$;

BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;

-- Coverage gate before revision 0006: every eligible (student, course) pair must
-- have an active course_enrollment, and the sync trigger must be installed to keep it so.
-- Below 100% this block raises and psql stops here: nothing after it runs.
DO $gate$
DECLARE
    r record;
    pair record;
    lo bigint;
    hi bigint;
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
BEGIN
    IF NOT (EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass('group_members') AND tgname = 'course_enrollments_sync_on_insert' AND NOT tgisinternal)
               AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass('group_members') AND tgname = 'course_enrollments_sync_on_update' AND NOT tgisinternal)
               AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass('users') AND tgname = 'course_enrollments_sync_on_user' AND NOT tgisinternal)
               AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass('groups') AND tgname = 'course_enrollments_sync_on_group' AND NOT tgisinternal)
               AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass('courses') AND tgname = 'course_enrollments_sync_on_course' AND NOT tgisinternal)) THEN
        RAISE EXCEPTION 'coverage gate before revision 0006: the sync trigger is not installed, so coverage would not hold; nothing of revision 0006 was applied'
            USING HINT = 'run alembic upgrade head again: revision 0005 or 0006 installs it';
    END IF;
    -- buckets of student ids: at least 512 ids each, at most 65,536 of them
    SELECT coalesce(min(id), 0), coalesce(max(id), 0) INTO lo, hi FROM users;
    width := greatest(512, ceil((hi - lo + 1) / 65536.0))::bigint;
    FOR r IN
        SELECT k.status,
            CASE WHEN k.status = 'covered' THEN NULL ELSE (k.student_id - lo) / width END AS bucket,
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
                FROM group_members AS gm
                JOIN groups AS g ON g.id = gm.group_id
                WHERE gm.active IS TRUE AND gm.user_id & 1 = 0
                GROUP BY gm.user_id, g.course_id
                UNION ALL
                SELECT gm.user_id AS student_id, g.course_id, count(*) AS memberships
                FROM group_members AS gm
                JOIN groups AS g ON g.id = gm.group_id
                WHERE gm.active IS TRUE AND gm.user_id & 1 = 1
                GROUP BY gm.user_id, g.course_id
            ) AS p
            JOIN users AS u ON u.id = p.student_id
            JOIN courses AS c ON c.id = p.course_id
            LEFT JOIN course_enrollments AS ce
                ON ce.course_id = p.course_id AND ce.student_id = p.student_id
            OFFSET 0
        ) AS k
        GROUP BY 1, 2
    LOOP
        CASE r.status
            WHEN 'covered' THEN covered := covered + r.pairs;
            WHEN 'inactive' THEN inactive := inactive + r.pairs;
            WHEN 'missing' THEN missing := missing + r.pairs;
            WHEN 'non_student' THEN non_student := non_student + r.pairs;
            ELSE cross_school := cross_school + r.pairs;
        END CASE;
        IF r.status IN ('missing', 'inactive') THEN
            buckets := buckets || r.bucket;
        END IF;
    END LOOP;
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
                        FROM group_members AS gm
                        CROSS JOIN LATERAL (
                            SELECT x.course_id FROM groups AS x WHERE x.id = gm.group_id OFFSET 0
                        ) AS g
                        WHERE gm.active IS TRUE AND gm.user_id >= lo + b * width AND gm.user_id < lo + (b + 1) * width
                        GROUP BY gm.user_id, g.course_id
                    ) AS p
                    CROSS JOIN LATERAL (
                        SELECT x.name, x.email, x.role, x.school_id FROM users AS x
                        WHERE x.id = p.student_id OFFSET 0
                    ) AS u
                    CROSS JOIN LATERAL (
                        SELECT x.name, x.school_id FROM courses AS x WHERE x.id = p.course_id OFFSET 0
                    ) AS c
                    LEFT JOIN LATERAL (
                        SELECT x.id, x.active FROM course_enrollments AS x
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
        RAISE EXCEPTION 'coverage gate before revision 0006: coverage %: % of % eligible (student, course) pairs have an active enrollment; % missing, % inactive; nothing of revision 0006 was applied',
            format('%s%%', to_char(floor(covered * 10000.0 / eligible) / 100, 'FM990.00')),
            to_char(covered, 'FM999,999,999,990'), to_char(eligible, 'FM999,999,999,990'),
            to_char(missing, 'FM999,999,999,990'), to_char(inactive, 'FM999,999,999,990')
            USING DETAIL = 'first uncovered pairs: ' || array_to_string(firsts, ', '),
                  HINT = 'run enrollments backfill --commit, then alembic upgrade head again';
    ELSE
        RAISE NOTICE 'coverage gate before revision 0006 passed: % of % eligible pairs covered',
            to_char(covered, 'FM999,999,999,990'), to_char(eligible, 'FM999,999,999,990');
    END IF;
    IF non_student + cross_school > 0 THEN
        RAISE WARNING 'coverage gate: % non_student and % cross_school pairs (anomalies) are not enrolled; review them with enrollments audit',
            to_char(non_student, 'FM999,999,999,990'), to_char(cross_school, 'FM999,999,999,990');
    END IF;
END
$gate$;

COMMIT;

\endif

BEGIN;

-- ==== downgrade 0006 -> 0005 ====

-- Running downgrade 0006 -> 0005
