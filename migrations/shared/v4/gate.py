"""The coverage gate of the 1.1 revisions, and keeping coverage: one PL/pgSQL block, run
online and written to the offline script alike.

The gate counts, in one pass over the active memberships, every (user, course) pair by
status, and for the uncovered ones by *bucket*, a range of student ids (at most 65,536
buckets whatever the ids), in two halves of the student ids, each whole in a process of
its own. Its plan is pinned for that statement (``COUNTING_SETTINGS``: hash joins, never a
nested loop over the pairs; no JIT; a bounded ``work_mem``; a custom plan), then the
settings are put back. Below 100% it then reads the first uncovered pairs, with names,
from the first buckets that hold any, by ``ix_member_user``: so the server keeps neither
an array of every gap nor a sort of them, and its memory does not grow with their number.
Pairs stay (student_id, course_id) throughout; any int4 id works.

A revision runs it in its own transaction, the one that records the revision: a gate that
fails rolls back the ``alembic_version`` update with it, online and in a script run without
``ON_ERROR_STOP`` alike. The counts come from one statement (one snapshot). It first checks that the sync trigger is installed: only
then does coverage at that moment mean coverage from then on (every membership committed
afterwards gets its enrollment in its own transaction).

Online the block is executed (its notices logged, its exception Alembic's FAILED line);
offline it is written to the script: the same gate either way.
"""

from __future__ import annotations

import logging

from alembic import op
from alembic.util import CommandError
from sqlalchemy.engine import Connection

from enrollments_phase1.migration_env import MigrationSettings, current_run
from enrollments_phase1.migrations.shared.v4 import sync
from enrollments_phase1.migrations.shared.v4.definition import (
    ACTIVE_MEMBERSHIP,
    STATUS,
    Tables,
    counted,
    indent,
)
from enrollments_phase1.migrations.shared.v4.headers import header
from enrollments_phase1.migrations.shared.v4.run import (
    execute_block,
    in_transaction,
    tables,
)

log = logging.getLogger("migrations")

SAMPLE = 10
MAX_BUCKETS = 65_536
MIN_BUCKET = 512
ONLINE_AGAIN = "alembic upgrade head again"


# The pairs of active memberships of the students whose id is ``within`` (a condition on
# an id, "{id} < middle"), with the memberships behind each.
def pairs_sql(t: Tables, within: str) -> str:
    return f"""SELECT gm.user_id AS student_id, g.course_id, count(*) AS memberships
FROM {t.group_members} AS gm
JOIN {t.groups} AS g ON g.id = gm.group_id
WHERE {ACTIVE_MEMBERSHIP} AND {within.format(id="gm.user_id")}
GROUP BY gm.user_id, g.course_id"""


# The counting statement's plan, pinned for it alone (set_config(..., true) before it, the
# values found put back after): a nested loop of index scans over millions of pairs is
# never right, whatever the estimate; JIT only costs; work_mem bounds each hash and sort.
COUNTING_SETTINGS = {
    "enable_nestloop": "off",
    "jit": "off",
    "work_mem": "64MB",
}


def _settings_sql(restore: bool = False) -> str:
    """``PERFORM set_config(...)`` of :data:`COUNTING_SETTINGS` for the transaction; with
    ``restore``, back to the values the block saved in ``settings_before``."""
    calls = ", ".join(
        f"pg_catalog.set_config('{name}', "
        + (f"settings_before[{i}]" if restore else f"'{value}'")
        + ", true)"
        for i, (name, value) in enumerate(COUNTING_SETTINGS.items(), start=1)
    )
    return f"PERFORM {calls};"


def _half_sql(t: Tables, within: str, lo: str, width: str) -> str:
    """The counts of the students whose id is ``within``: their pairs, users and
    enrollments alone (conditions on indexed columns: estimates from their histograms)."""
    return f"""SELECT k.status,
    CASE WHEN k.status = 'covered' THEN NULL ELSE (k.student_id - {lo}) / {width} END AS bucket,
    count(*) AS pairs, sum(k.memberships) AS memberships
FROM (
    SELECT p.student_id, p.memberships,
{indent(STATUS, "        ")} AS status
    FROM (
{indent(pairs_sql(t, within), "        ")}
    ) AS p
    JOIN {t.users} AS u ON u.id = p.student_id AND {within.format(id="u.id")}
    JOIN {t.courses} AS c ON c.id = p.course_id
    LEFT JOIN {t.course_enrollments} AS ce
        ON ce.course_id = p.course_id AND ce.student_id = p.student_id
        AND {within.format(id="ce.student_id")}
) AS k
GROUP BY 1, 2"""


# One row per (status, bucket): pairs, and the active memberships behind them. Covered
# pairs are not bucketed; bucket b holds student ids [lo + b * width, lo + (b + 1) * width).
# The students are counted in two halves of their ids (below middle, from middle on: every
# id in one), each whole in a process of its own (Parallel Append), then added up: every
# join by hash on its half. lo, width and middle are the parameters of the block's EXECUTE.
# (1.1.0 split by user_id & 1, an expression without statistics, estimated at 0.5% of its
# rows: a nested loop followed.)
def counts_sql(t: Tables, lo: str = "$1", width: str = "$2", middle: str = "$3") -> str:
    return f"""SELECT h.status, h.bucket,
    sum(h.pairs)::bigint AS pairs, sum(h.memberships)::bigint AS memberships
FROM (
{indent(_half_sql(t, "{id} < " + middle, lo, width), "    ")}
    UNION ALL
{indent(_half_sql(t, "{id} >= " + middle, lo, width), "    ")}
) AS h
GROUP BY 1, 2"""


def samples_sql(t: Tables, lo: str, hi: str, statuses: str, limit: str) -> str:
    """The first ``limit`` pairs of the given statuses among student ids [lo, hi), with
    names and the number of active memberships behind each (``groups``).

    The students' memberships are read through ``ix_member_user``; each lookup is a
    ``LATERAL ... OFFSET 0`` subquery, an index scan per pair whatever the statistics.
    """
    return f"""SELECT * FROM (
    SELECT p.student_id, p.course_id, p.groups, u.name AS student_name, u.email, u.role,
        c.name AS course_name,
{indent(STATUS, "        ")} AS status
    FROM (
        SELECT gm.user_id AS student_id, g.course_id, count(*) AS groups
        FROM {t.group_members} AS gm
        CROSS JOIN LATERAL (
            SELECT x.course_id FROM {t.groups} AS x WHERE x.id = gm.group_id OFFSET 0
        ) AS g
        WHERE {ACTIVE_MEMBERSHIP} AND gm.user_id >= {lo} AND gm.user_id < {hi}
        GROUP BY gm.user_id, g.course_id
    ) AS p
    CROSS JOIN LATERAL (
        SELECT x.name, x.email, x.role, x.school_id FROM {t.users} AS x
        WHERE x.id = p.student_id OFFSET 0
    ) AS u
    CROSS JOIN LATERAL (
        SELECT x.name, x.school_id FROM {t.courses} AS x WHERE x.id = p.course_id OFFSET 0
    ) AS c
    LEFT JOIN LATERAL (
        SELECT x.id, x.active FROM {t.course_enrollments} AS x
        WHERE x.course_id = p.course_id AND x.student_id = p.student_id OFFSET 0
    ) AS ce ON true
) AS s
WHERE s.status IN {statuses}
ORDER BY s.student_id, s.course_id
LIMIT {limit}"""


def gate_sql(t: Tables, revision: str, mode: str, script_again: str | None = None) -> str:
    """The gate as a DO block: raises below 100% (``mode`` abort), or warns (``warn``).
    Its hints say to run ``alembic upgrade head`` again, or in a script, the command that
    writes the script again from where the database stands (``script_again``)."""
    then = (
        f"write the script again from there ({script_again}) and run it"
        if script_again
        else ONLINE_AGAIN
    )
    again = then if script_again else f"run {ONLINE_AGAIN}"
    level = "EXCEPTION" if mode == "abort" else "WARNING"
    ending = (
        f"nothing of revision {revision} was applied"
        if mode == "abort"
        else "OVERRIDDEN by -x coverage_gate=warn: the upgrade goes on below 100%%"
    )
    return f"""-- Coverage gate before revision {revision}: every eligible (student, course) pair must
-- have an active course_enrollment, and the sync trigger must be installed to keep it so.
-- Below 100% this block raises and psql stops here: nothing after it runs.
DO $gate$
DECLARE
    pair record;
    lo bigint;
    hi bigint;
    middle bigint;
    width bigint;
    covered bigint := 0;
    inactive bigint := 0;
    missing bigint := 0;
    non_student bigint := 0;
    cross_school bigint := 0;
    eligible bigint;
    buckets bigint[] := '{{}}';
    b bigint;
    firsts text[] := '{{}}';
    settings_before text[];
BEGIN
    IF NOT ({sync.keeping_sql(t).replace("SELECT ", "", 1).replace(" AS keeping", "").replace(chr(10), chr(10) + "            ")}) THEN
        RAISE {level} 'coverage gate before revision {revision}: the sync trigger is not installed, so coverage would not hold; {ending}'
            USING HINT = '{again}: revision 0005 or 0006 installs it';
    END IF;
    -- buckets of student ids: at least {MIN_BUCKET} ids each, at most {MAX_BUCKETS:,} of them
    SELECT coalesce(min(id), 0), coalesce(max(id), 0) INTO lo, hi FROM {t.users};
    width := greatest({MIN_BUCKET}, ceil((hi - lo + 1) / {MAX_BUCKETS}.0))::bigint;
    middle := lo + (hi - lo + 1) / 2;
    -- the counting statement's plan: hash joins, no JIT, bounded memory; put back after
    settings_before := ARRAY[{", ".join(f"pg_catalog.current_setting('{n}')" for n in COUNTING_SETTINGS)}];
    {_settings_sql()}
    -- EXECUTE, not a FOR loop or a SELECT ... INTO: PostgreSQL runs those in one process
    -- (a loop's query is a cursor; an INTO asks for a row count), and this in parallel.
    -- $1, $2, $3: lo, width, middle (a one-off plan, made with their values)
    EXECUTE $counts$
        SELECT coalesce(sum(r.pairs) FILTER (WHERE r.status = 'covered'), 0),
               coalesce(sum(r.pairs) FILTER (WHERE r.status = 'inactive'), 0),
               coalesce(sum(r.pairs) FILTER (WHERE r.status = 'missing'), 0),
               coalesce(sum(r.pairs) FILTER (WHERE r.status = 'non_student'), 0),
               coalesce(sum(r.pairs) FILTER (WHERE r.status = 'cross_school'), 0),
               coalesce(array_agg(r.bucket) FILTER (WHERE r.status IN ('missing', 'inactive')), '{{}}')
        FROM (
{indent(counts_sql(t), "            ")}
        ) AS r
    $counts$
    INTO covered, inactive, missing, non_student, cross_school, buckets
    USING lo, width, middle;
    {_settings_sql(restore=True)}
    eligible := covered + inactive + missing;
    IF covered < eligible THEN
        FOR b IN SELECT DISTINCT x FROM unnest(buckets) AS x ORDER BY x LOOP
            FOR pair IN
{indent(samples_sql(t, "lo + b * width", "lo + (b + 1) * width", "('missing', 'inactive')", f"{SAMPLE} - cardinality(firsts)"), "                ")}
            LOOP
                firsts := firsts || format('(student %s %s <%s>, course %s %s, %s, %s group(s))',
                    pair.student_id, pair.student_name, pair.email, pair.course_id,
                    pair.course_name, pair.status, pair.groups);
            END LOOP;
            EXIT WHEN cardinality(firsts) >= {SAMPLE};
        END LOOP;
        RAISE {level} 'coverage gate before revision {revision}: coverage %: % of % eligible (student, course) pairs have an active enrollment; % missing, % inactive; {ending}',
            format('%s%%', to_char(floor(covered * 10000.0 / eligible) / 100, 'FM990.00')),
            {counted("covered")}, {counted("eligible")},
            {counted("missing")}, {counted("inactive")}
            USING DETAIL = 'first uncovered pairs: ' || array_to_string(firsts, ', '),
                  HINT = 'run enrollments backfill --commit, then {then}';
    ELSE
        RAISE NOTICE 'coverage gate before revision {revision} passed: % of % eligible pairs covered',
            {counted("covered")}, {counted("eligible")};
    END IF;
    IF non_student + cross_school > 0 THEN
        RAISE WARNING 'coverage gate: % non_student and % cross_school pairs (anomalies) are not enrolled; review them with enrollments audit',
            {counted("non_student")}, {counted("cross_school")};
    END IF;
END
$gate$"""


# --- running it ------------------------------------------------------------------------
class CoverageGateError(CommandError):
    """Coverage is below 100%: the upgrade stops before the revision that needs it."""


def _overridden(revision: str, mode: str) -> None:
    if mode == "warn":
        log.warning(
            "COVERAGE GATE OVERRIDDEN (-x coverage_gate=warn) before revision %s: if coverage is "
            "below 100%%, the upgrade goes on anyway",
            revision,
        )


def check_coverage(
    connection: Connection | None, revision: str, mode: str = "abort", t: Tables | None = None
) -> None:
    """The gate on its own: in a REPEATABLE READ READ ONLY transaction of its own when
    ``connection`` is outside one, else in the caller's (a test's)."""
    t = t or tables()
    _overridden(revision, mode)
    header("gate")
    with in_transaction(connection, isolation="REPEATABLE READ READ ONLY"):
        execute_block(connection, gate_sql(t, revision, mode), CoverageGateError)


def gate_in_revision(revision: str, mode: str, t: Tables | None = None) -> None:
    """The gate in the revision's own transaction, the one whose ``alembic_version``
    update follows it: below 100% that transaction rolls back, so the revision is never
    recorded, even by a script run without ``ON_ERROR_STOP``. Its counts come from one
    statement, hence one snapshot."""
    t = t or tables()
    _overridden(revision, mode)
    script = current_run().script
    if script is not None:  # the script from where the database stands: before this revision
        header("gate")
        execute_block(
            None, gate_sql(t, revision, mode, script.again_from_here()), CoverageGateError
        )
        return
    execute_block(op.get_bind(), gate_sql(t, revision, mode), CoverageGateError)


def require_full_coverage(revision: str) -> None:
    """The gate: call first in ``upgrade()`` of a revision that needs 100% coverage.

    Below 100% it raises :class:`CoverageGateError` (offline: the script's transaction for
    this revision rolls back there) and ``alembic_version`` stays at the previous
    revision. ``-x coverage_gate=warn`` lets it pass with a loud warning, for emergencies.
    """
    gate_in_revision(revision, MigrationSettings.current().coverage_gate)
