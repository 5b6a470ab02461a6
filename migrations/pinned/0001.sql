-- Pinned offline SQL of revision 0001; digest 404a9664a48f.
-- Written by `python -m enrollments_phase1.migrations.pins --write`. tests/test_pins.py
-- fails when the revision writes anything else. A released revision changes only to fix a
-- defect: rewrite this file in the same commit and give the reason in
-- migrations/pinned/CHANGES.md.

-- ==== upgrade base -> 0001 ====

-- Running upgrade  -> 0001

CREATE TABLE public.schools (
    id SERIAL NOT NULL, 
    name VARCHAR(200) NOT NULL, 
    CONSTRAINT schools_pkey PRIMARY KEY (id), 
    CONSTRAINT schools_name_key UNIQUE (name)
);

CREATE TABLE public.users (
    id SERIAL NOT NULL, 
    school_id INTEGER NOT NULL, 
    email VARCHAR(320) NOT NULL, 
    name VARCHAR(200) NOT NULL, 
    role VARCHAR(20) DEFAULT 'student' NOT NULL, 
    archived BOOLEAN DEFAULT false NOT NULL, 
    CONSTRAINT users_pkey PRIMARY KEY (id), 
    CONSTRAINT users_school_id_fkey FOREIGN KEY(school_id) REFERENCES public.schools (id) ON DELETE CASCADE, 
    CONSTRAINT uq_user_email_per_school UNIQUE (school_id, email)
);

CREATE TABLE public.courses (
    id SERIAL NOT NULL, 
    school_id INTEGER NOT NULL, 
    name VARCHAR(200) NOT NULL, 
    code VARCHAR(50), 
    is_active BOOLEAN DEFAULT true NOT NULL, 
    CONSTRAINT courses_pkey PRIMARY KEY (id), 
    CONSTRAINT courses_school_id_fkey FOREIGN KEY(school_id) REFERENCES public.schools (id) ON DELETE CASCADE
);

CREATE TABLE public.groups (
    id SERIAL NOT NULL, 
    school_id INTEGER NOT NULL, 
    course_id INTEGER NOT NULL, 
    name VARCHAR(100) NOT NULL, 
    team_number INTEGER, 
    CONSTRAINT groups_pkey PRIMARY KEY (id), 
    CONSTRAINT groups_course_id_fkey FOREIGN KEY(course_id) REFERENCES public.courses (id) ON DELETE CASCADE
);

CREATE INDEX ix_group_course ON public.groups (course_id);

CREATE TABLE public.group_members (
    id SERIAL NOT NULL, 
    school_id INTEGER NOT NULL, 
    group_id INTEGER NOT NULL, 
    user_id INTEGER NOT NULL, 
    role_in_team VARCHAR(50), 
    active BOOLEAN DEFAULT true, 
    CONSTRAINT group_members_pkey PRIMARY KEY (id), 
    CONSTRAINT group_members_group_id_fkey FOREIGN KEY(group_id) REFERENCES public.groups (id) ON DELETE CASCADE, 
    CONSTRAINT group_members_user_id_fkey FOREIGN KEY(user_id) REFERENCES public.users (id) ON DELETE CASCADE, 
    CONSTRAINT uq_member_once UNIQUE (group_id, user_id)
);

CREATE INDEX ix_member_user ON public.group_members (user_id);

CREATE TABLE public.course_enrollments (
    id SERIAL NOT NULL, 
    course_id INTEGER NOT NULL, 
    student_id INTEGER NOT NULL, 
    active BOOLEAN DEFAULT true NOT NULL, 
    CONSTRAINT course_enrollments_pkey PRIMARY KEY (id), 
    CONSTRAINT course_enrollments_course_id_fkey FOREIGN KEY(course_id) REFERENCES public.courses (id) ON DELETE CASCADE, 
    CONSTRAINT course_enrollments_student_id_fkey FOREIGN KEY(student_id) REFERENCES public.users (id) ON DELETE CASCADE, 
    CONSTRAINT uq_course_enrollment_once UNIQUE (course_id, student_id)
);

CREATE INDEX ix_course_enrollment_course ON public.course_enrollments (course_id);

CREATE INDEX ix_course_enrollment_student ON public.course_enrollments (student_id);

-- ==== downgrade 0001 -> base ====

-- Running downgrade 0001 -> 

-- Stop unless the legacy tables are empty: they are production's data.
DO $refuse$
BEGIN
    IF EXISTS (SELECT 1 FROM "public".schools)
       OR EXISTS (SELECT 1 FROM "public".users)
       OR EXISTS (SELECT 1 FROM "public".courses)
       OR EXISTS (SELECT 1 FROM "public".groups)
       OR EXISTS (SELECT 1 FROM "public".group_members)
       OR EXISTS (SELECT 1 FROM "public".course_enrollments) THEN
        RAISE EXCEPTION 'refusing to drop the legacy tables: they hold rows (production data)'
            USING HINT = 'to drop them anyway (tests, empty databases): alembic -x drop_legacy_schema=yes downgrade base';
    END IF;
END
$refuse$;

DROP TABLE public.course_enrollments;

DROP TABLE public.group_members;

DROP TABLE public.groups;

DROP TABLE public.courses;

DROP TABLE public.users;

DROP TABLE public.schools;
