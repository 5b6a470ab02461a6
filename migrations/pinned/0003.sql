-- Pinned offline SQL of revision 0003; digest 2129552a840b.
-- Written by `python -m migrations.pins --write`. tests/test_pins.py fails when the
-- revision writes anything else. A released revision changes only to fix a defect: rewrite
-- this file in the same commit and give the reason in migrations/pinned/CHANGES.md.

-- ==== upgrade 0002 -> 0003 ====

-- Running upgrade 0002 -> 0003

CREATE TABLE enrollment_backfill_changes (
    revision VARCHAR(32) NOT NULL, 
    enrollment_id INTEGER NOT NULL, 
    course_id INTEGER NOT NULL, 
    student_id INTEGER NOT NULL, 
    action VARCHAR(20) NOT NULL, 
    changed_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    CONSTRAINT enrollment_backfill_changes_pkey PRIMARY KEY (revision, enrollment_id), 
    CONSTRAINT ck_enrollment_backfill_changes_action CHECK (action IN ('created', 'reactivated'))
);

-- ==== downgrade 0003 -> 0002 ====

-- Running downgrade 0003 -> 0002

DROP TABLE enrollment_backfill_changes;
