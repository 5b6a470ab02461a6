"""The header the script writes above each step: what it does, what it locks, and how long
it may take at 100 million memberships.

The times are the bench's (docs/benchmarks.md: 3 to 7.5 million memberships on a 2-core
virtual machine, PostgreSQL 15), scaled linearly, which the bench's growth exponents
(0.7 to 1.2) allow: an order of magnitude, not a promise. Every transaction of the script
starts with the same guards (the run's settings, the enrollments lock, where the database
stands), described once at its top; they take milliseconds and lock nothing else.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

from enrollments_phase1.migration_env import current_run
from enrollments_phase1.migrations.shared.v4.run import write_raw

RULE = "-- " + "=" * 86


@dataclass(frozen=True)
class Step:
    does: str
    locks: str
    takes: str


STEPS = {
    "index": Step(
        "builds ix_course_enrollment_course_active without blocking writes (CREATE INDEX "
        "CONCURRENTLY; an INVALID leftover of a cut build is dropped concurrently first)",
        "SHARE UPDATE EXCLUSIVE on course_enrollments, which no read or write waits for; the "
        "build waits for every transaction older than it (named just before it starts; "
        "meanwhile pg_stat_progress_create_index shows where it is)",
        "about 30 s at 100M memberships (1.8 s at 7.5M measured), after the oldest open "
        "transaction ends",
    ),
    "bookkeeping": Step(
        "creates the backfill's bookkeeping tables (record, runs, claims, candidates)",
        "nothing the application uses: new tables",
        "milliseconds",
    ),
    "queue": Step(
        "prepares the sync trigger's queue and guard tables",
        "the queue table alone, for milliseconds; each attempt waits at most lock_timeout",
        "milliseconds, or retries until lock_patience while a session holds the queue",
    ),
    "functions": Step(
        "creates or replaces the sync trigger's functions",
        "nothing the application uses (functions that no trigger calls yet, or that a "
        "trigger calls the new version of from its next statement)",
        "milliseconds",
    ),
    "triggers": Step(
        "installs the sync triggers",
        "SHARE ROW EXCLUSIVE on group_members, users, groups and courses, for milliseconds: "
        "writes to them wait; each attempt waits at most lock_timeout for its locks, then "
        "retries with backoff until lock_patience",
        "milliseconds, or retries while a long transaction holds one of the tables",
    ),
    "apply trigger": Step(
        "installs the trigger that enrolls what the queue holds when a transaction commits",
        "the queue table alone (only the sync functions write it), for milliseconds",
        "milliseconds",
    ),
    "strays": Step(
        "drops older sync functions outside this schema that no trigger calls",
        "those functions only",
        "milliseconds",
    ),
    "backfill": Step(
        "writes the missing enrollments: the candidates once per pass (one read), then one "
        "batch per transaction, paced on replica lag, resumable from its checkpoint",
        "each batch: the memberships it reads FOR SHARE and the enrollments it writes, for "
        "its transaction (about 100 ms); the candidates' read locks no row",
        "25 to 65 min at 100M memberships (39 to 114 s at 3M measured, by shape), its "
        "candidates 3 to 5 min a pass; it says how far it got every 5 s",
    ),
    "gate": Step(
        "counts the eligible pairs without an active enrollment in one REPEATABLE READ "
        "snapshot, and stops the script below 100%",
        "ACCESS SHARE on the tables it reads, which no read or write waits for",
        "3 to 5 min at 100M memberships (6 to 8 s at 3M measured)",
    ),
    "undo": Step(
        "undoes what the backfills recorded, newest first, one batch per transaction "
        "(referenced and claimed enrollments kept)",
        "each batch: the enrollments it deletes or deactivates, for its transaction",
        "about as long as the backfill it undoes",
    ),
    "drop sync": Step(
        "drops the sync trigger's triggers, functions and tables",
        "ACCESS EXCLUSIVE on group_members, users, groups and courses, for milliseconds: "
        "reads and writes of them wait; each attempt waits at most lock_timeout, then "
        "retries with backoff until lock_patience",
        "milliseconds, or retries while a long transaction holds one of the tables",
    ),
}


def header(step: str) -> None:
    """Offline: write the header of ``step`` to the script (online, or a helper called on
    its own: nothing)."""
    if current_run().script is None:
        return
    s = STEPS[step]
    lines = [RULE]
    for label, text in (("Step", s.does), ("Locks", s.locks), ("Takes", s.takes)):
        lines += textwrap.wrap(
            text, width=88, initial_indent=f"-- {label}: ", subsequent_indent="--   "
        )
    write_raw("\n".join([*lines, RULE]))
