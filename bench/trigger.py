"""The sync trigger's cost to the application, on copies of one generated database:

- **one membership insert** (the client's round trip, each committing on its own);
- **a bulk insert** (one ``INSERT ... SELECT`` of ``--bulk`` memberships) and **many
  one-row inserts in one transaction** (``--many``), without the trigger and with it,
  beside their floor: the same memberships, then the enrollments the trigger creates for
  them inserted by hand (what any way of keeping coverage must write); with the backend's
  peak memory (its VmHWM, where the server runs on this machine);
- **the legacy application during the deploy**: a writer inserting memberships at
  ``--legacy-rate`` a second while ``alembic upgrade head`` runs from 0003 with an empty
  record (the backfill fills it from nothing), beside the same writer before the deploy and
  the same writes by hand during the same deploy (the control: each membership into a
  table no trigger watches, and its enrollment, in one transaction);
- **races**: the stagings of tests/test_sync_concurrency.py (bench/races.py), ``--rounds``
  each, without the trigger and with it: deadlocks, serialization failures, pairs left
  uncovered;
- **a mixed load**: writers on hot students, each transaction inserting, activating or
  moving one membership of a student and then writing that student's enrollments in
  ``course_id`` order, as the Phase 1 application does; without the trigger, with 1.1.0's
  (from 1.1.0's own script) and with this release's. Deadlocks, errors and latencies.

    python -m bench.trigger [--trigger-students 200000] [--singles 2000] [--bulk 1000000]
                            [--many 100000] [--legacy-rate 20] [--rounds 200]
                            [--writers 6] [--hot 50] [--mixed-seconds 60]

Goals (issues 17 and 26): one insert's p99 at most 1 ms above the p99 without the trigger;
the bulk insert and the many inserts each at most 1.5x their floor; the writer during the
deploy p99 at most 10 ms and max at most 100 ms; no deadlock or serialization failure the
application would not have without the trigger, in the races and under the mixed load,
and no pair left uncovered.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, field

import psycopg2

from bench.server import ROOT, Server, build_template, upgrade_database
from bench.writer import Writer
from enrollments_phase1.migrations.shared.v4 import sync

# New students, each with the group of its school it will join (bench_joins, not timed).
PREPARE = [
    """INSERT INTO users (school_id, email, name)
SELECT 1 + i % 20, 'trigger-bench-' || i || '@bench.example', 'Bench ' || i
FROM generate_series(1, {n}) AS i""",
    """CREATE TABLE bench_joins AS
SELECT row_number() OVER (ORDER BY u.id) AS n, u.school_id, g.id AS group_id, u.id AS user_id
FROM users AS u
JOIN LATERAL (
    SELECT g.id FROM groups AS g WHERE g.school_id = u.school_id
    ORDER BY g.id OFFSET (u.id % 200) LIMIT 1
) AS g ON true
WHERE u.email LIKE 'trigger-bench-%'""",
]

BULK = """INSERT INTO group_members (school_id, group_id, user_id)
SELECT school_id, group_id, user_id FROM bench_joins WHERE n > {after} AND n <= {until}"""
# The floor's second half: the enrollments the trigger creates for BULK, by hand.
BULK_ENROLLMENTS = """INSERT INTO course_enrollments (course_id, student_id)
SELECT DISTINCT g.course_id, j.user_id FROM bench_joins AS j JOIN groups AS g ON g.id = j.group_id
WHERE j.n > {after} AND j.n <= {until} ORDER BY 1, 2"""

MIXED_MODES = ("without", "1.1.0", "with")


@dataclass
class TriggerCost:
    singles: int
    bulk_rows: int
    many_rows: int
    single_p50_ms: dict[str, float]
    single_p99_ms: dict[str, float]
    bulk_seconds: dict[str, float]  # without, with, floor
    many_seconds: dict[str, float]
    peak_mb: dict[str, float | None] = field(default_factory=dict)  # bulk/many, with/without
    deploy_writer: dict[str, dict[str, float]] = field(default_factory=dict)
    races: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    mixed: dict[str, dict[str, float]] = field(default_factory=dict)
    mixed_settings: dict[str, float] = field(default_factory=dict)

    @property
    def p99_added_ms(self) -> float:
        return self.single_p99_ms["with"] - self.single_p99_ms["without"]

    def as_json(self) -> dict:
        return asdict(self)


def drop_trigger(conn) -> None:
    """The legacy tables without the sync triggers (the application as it was)."""
    cur = conn.cursor()
    for trigger in sync.TRIGGERS:
        cur.execute(f"DROP TRIGGER IF EXISTS {trigger.name} ON {trigger.table}")


def _singles(conn, count: int) -> list[float]:
    cur = conn.cursor()
    cur.execute(
        "SELECT user_id, school_id, group_id FROM bench_joins WHERE n <= %s ORDER BY n", (count,)
    )
    latencies = []
    for user_id, school_id, group_id in cur.fetchall():
        started = time.perf_counter()
        cur.execute(
            "INSERT INTO group_members (school_id, group_id, user_id) VALUES (%s, %s, %s)",
            (school_id, group_id, user_id),
        )
        latencies.append(time.perf_counter() - started)
    return latencies


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def backend_peak_mb(conn) -> float | None:
    """The backend's peak resident memory (VmHWM), where its process is on this machine."""
    cur = conn.cursor()
    cur.execute("SELECT pg_backend_pid()")
    try:
        with open(f"/proc/{cur.fetchone()[0]}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _bulk(conn, after: int, until: int) -> float:
    """One INSERT ... SELECT of the prepared memberships (after, until], committed."""
    cur = conn.cursor()
    started = time.perf_counter()
    cur.execute(BULK.format(after=after, until=until))
    return time.perf_counter() - started


def _many(conn, after: int, until: int) -> float:
    """One-row inserts of the prepared memberships (after, until], one transaction."""
    cur = conn.cursor()
    cur.execute(
        "SELECT user_id, school_id, group_id FROM bench_joins WHERE n > %s AND n <= %s ORDER BY n",
        (after, until),
    )
    rows = cur.fetchall()
    started = time.perf_counter()
    cur.execute("BEGIN")
    for user_id, school_id, group_id in rows:
        cur.execute(
            "INSERT INTO group_members (school_id, group_id, user_id) VALUES (%s, %s, %s)",
            (school_id, group_id, user_id),
        )
    cur.execute("COMMIT")
    return time.perf_counter() - started


def _by_hand(conn, after: int, until: int) -> float:
    """The floor's second half: the enrollments the trigger would create, by hand."""
    cur = conn.cursor()
    started = time.perf_counter()
    cur.execute(BULK_ENROLLMENTS.format(after=after, until=until))
    return time.perf_counter() - started


def measure(
    server: Server, template: str, singles: int, bulk: int, many: int, runs: int = 3
) -> TriggerCost:
    """Median of ``runs`` fresh copies per mode, without the trigger and with it. Each copy
    takes the single inserts, then the bulk insert, then the many inserts, each on
    students the others did not use."""
    p50, p99 = {}, {}
    bulk_seconds: dict[str, float] = {}
    many_seconds: dict[str, float] = {}
    peaks: dict[str, float | None] = {}
    floors: dict[str, list[float]] = {"bulk": [], "many": []}
    for mode in ("without", "with"):
        single_p50, single_p99, bulks, manys = [], [], [], []
        for run in range(runs):
            db = server.copy(template, f"bench_trigger_{mode}_{run}")
            conn = psycopg2.connect(server.libpq(db))
            conn.autocommit = True
            if mode == "without":
                drop_trigger(conn)
            cur = conn.cursor()
            cur.execute("VACUUM ANALYZE")
            latencies = _singles(conn, singles)
            single_p50.append(statistics.median(latencies) * 1000)
            single_p99.append(_percentile(latencies, 0.99) * 1000)
            cur.execute("CHECKPOINT")
            bulks.append(_bulk(conn, singles, singles + bulk))
            if mode == "without":
                floors["bulk"].append(bulks[-1] + _by_hand(conn, singles, singles + bulk))
            peaks[f"bulk_{mode}"] = backend_peak_mb(conn)
            conn.close()
            conn = psycopg2.connect(server.libpq(db))  # a new backend for its own peak
            conn.autocommit = True
            conn.cursor().execute("CHECKPOINT")
            start = singles + bulk
            manys.append(_many(conn, start, start + many))
            if mode == "without":
                floors["many"].append(manys[-1] + _by_hand(conn, start, start + many))
            peaks[f"many_{mode}"] = backend_peak_mb(conn)
            conn.close()
            server.drop(db)
        p50[mode] = statistics.median(single_p50)
        p99[mode] = statistics.median(single_p99)
        bulk_seconds[mode] = statistics.median(bulks)
        many_seconds[mode] = statistics.median(manys)
    bulk_seconds["floor"] = statistics.median(floors["bulk"])
    many_seconds["floor"] = statistics.median(floors["many"])
    return TriggerCost(singles, bulk, many, p50, p99, bulk_seconds, many_seconds, peaks)


# --- the legacy application during the deploy ---------------------------------------------
# What the legacy application writes: a membership, nothing else.
INSERT_MEMBERSHIP = """INSERT INTO group_members (school_id, group_id, user_id)
VALUES (%(school)s, %(group)s, %(user)s)"""


# The control: the same commits written by hand, without the trigger: the membership into
# a table no trigger watches, and its enrollment, in one transaction (what the trigger
# writes for it; the backfill never meets these pairs).
CONTROL_TABLE = """CREATE TABLE bench_no_trigger
(id serial PRIMARY KEY, school_id integer, group_id integer, user_id integer)"""
INSERT_CONTROL = """INSERT INTO bench_no_trigger (school_id, group_id, user_id)
VALUES (%(school)s, %(group)s, %(user)s);
INSERT INTO course_enrollments (course_id, student_id, active)
SELECT g.course_id, %(user)s, true FROM groups AS g WHERE g.id = %(group)s
ON CONFLICT (course_id, student_id) DO NOTHING"""


def deploy_writer(server: Server, template_0003: str, rows: list, rate: float) -> dict:
    """The writer for 20 s before the deploy, then during ``alembic upgrade head`` from 0003
    (the record empty: the backfill fills it), on one copy; then, on another copy, the
    same writes by hand during the same deploy: each membership into a table no trigger
    watches, with its enrollment (the control: what the deploy's load costs the same
    commits without the trigger on this machine)."""
    from bench.server import BIN, env_for, measure

    rows = [{"user": u, "school": s, "group": g} for u, s, g in rows]
    half = len(rows) // 2
    results = {}
    for label, statement in (("during", INSERT_MEMBERSHIP), ("control", INSERT_CONTROL)):
        db = server.copy(template_0003, "bench_trigger_deploy")
        server.sql(CONTROL_TABLE, db)

        url = server.libpq(db)
        if label == "during":
            before = Writer(url, rate, rows=rows[:half], statement=statement)
            before.start()
            time.sleep(20)
            results["before"] = before.stop()
        during = Writer(url, rate, rows=rows[half:], statement=statement)
        during.start()
        upgraded = measure([str(BIN / "alembic"), "upgrade", "head"], env_for(server, db))
        results[label] = during.stop()
        results[label]["upgrade_seconds"] = upgraded.seconds
        if upgraded.returncode != 0:
            raise RuntimeError(f"the deploy failed: {upgraded.stdout}{upgraded.stderr}")
        server.drop(db)
    return results


# --- races --------------------------------------------------------------------------------
def races(server: Server, rounds: int) -> dict[str, dict[str, dict[str, int]]]:
    """Each staging of bench/races.py (READ COMMITTED and REPEATABLE READ, constraints
    deferred), ``rounds`` rounds, without the trigger and with it."""
    from bench import races as r

    stagings = {**r.KINDS, **r.NO_FAILURE_KINDS}
    results: dict[str, dict[str, dict[str, int]]] = {}
    for name, kind in stagings.items():
        for isolation in r.ISOLATIONS:
            row = results.setdefault(f"{name} ({isolation})", {})
            # Under REPEATABLE READ, the two halves of a pair conflict: a serialization
            # failure (retried) is the trigger's answer there, never a gap.
            row["failures_allowed"] = name in r.KINDS and isolation == "repeatable read"
            for mode in ("without", "with"):
                db = f"bench_race_{mode}"
                server.drop(db)
                server.sql(f"CREATE DATABASE {db}")
                upgrade_database(server, db, "0001")
                server.sql(r.BASE, db)
                upgrade_database(server, db, "head")
                if mode == "without":
                    conn = psycopg2.connect(server.libpq(db))
                    conn.autocommit = True
                    drop_trigger(conn)
                    conn.close()
                outcome = r.staged(server.libpq(db), kind, isolation, "deferred", rounds)
                server.drop(db)
                row[mode] = asdict(outcome)
            print(f"  race {name} ({isolation}): {row}", flush=True)
    return results


# --- the mixed load -------------------------------------------------------------------------
HOT_SQL = """SELECT u.id, array_agg(gm.id ORDER BY gm.id) AS memberships
FROM users AS u JOIN group_members AS gm ON gm.user_id = u.id
WHERE u.role = 'student' AND NOT u.archived AND u.email LIKE 'student%%'
GROUP BY u.id HAVING count(*) >= 6
ORDER BY u.id LIMIT %s"""

# Three kinds of membership write, for a membership of the student ...
TOGGLE = "UPDATE group_members SET active = NOT coalesce(active, false) WHERE id = %s"
# ... moved to the other of its course's first two groups (team 1 <-> 2; the joins below go
# to team 3, so no two writes can put a student twice in one group) ...
MOVE = """UPDATE group_members AS gm SET group_id = o.id
FROM groups AS g JOIN groups AS o ON o.course_id = g.course_id
    AND o.team_number = CASE g.team_number WHEN 1 THEN 2 WHEN 2 THEN 1 END
WHERE gm.id = %s AND g.id = gm.group_id
  AND NOT EXISTS (
      SELECT 1 FROM group_members AS x WHERE x.group_id = o.id AND x.user_id = gm.user_id
  )"""
# ... or a new membership in a group of one of three courses of the student's school.
JOIN = """INSERT INTO group_members (school_id, group_id, user_id)
SELECT u.school_id, g.id, u.id FROM users AS u
JOIN groups AS g ON g.school_id = u.school_id AND g.team_number = 3
WHERE u.id = %s ORDER BY g.id OFFSET (%s %% 3) * 7 LIMIT 1
ON CONFLICT (group_id, user_id) DO NOTHING"""
# Then the application writes the student's enrollments, in course_id order.
ENROLL = """INSERT INTO course_enrollments AS ce (course_id, student_id, active)
SELECT g.course_id, gm.user_id, bool_or(gm.active IS TRUE)
FROM group_members AS gm JOIN groups AS g ON g.id = gm.group_id
JOIN users AS u ON u.id = gm.user_id JOIN courses AS c ON c.id = g.course_id
WHERE gm.user_id = %s AND u.school_id = c.school_id
GROUP BY g.course_id, gm.user_id ORDER BY g.course_id
ON CONFLICT (course_id, student_id) DO UPDATE SET active = excluded.active
WHERE ce.active IS DISTINCT FROM excluded.active"""


@dataclass(eq=False)
class MixedWriter(threading.Thread):
    url: str
    hot: list[tuple[int, list[int]]]
    seed: int
    deadline: float
    latencies: list[float] = field(default_factory=list)
    deadlocks: int = 0
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        threading.Thread.__init__(self, daemon=True)

    def run(self) -> None:
        rng = random.Random(self.seed)
        conn = psycopg2.connect(self.url, application_name="bench mixed writer")
        cur = conn.cursor()
        while time.monotonic() < self.deadline:
            student, memberships = rng.choice(self.hot)
            kind = rng.random()
            started = time.perf_counter()
            try:
                if kind < 0.4:
                    cur.execute(TOGGLE, (rng.choice(memberships),))
                elif kind < 0.7:
                    cur.execute(MOVE, (rng.choice(memberships),))
                else:
                    cur.execute(JOIN, (student, rng.randrange(3)))
                cur.execute(ENROLL, (student,))
                conn.commit()
            except psycopg2.errors.DeadlockDetected:
                conn.rollback()
                self.deadlocks += 1
            except psycopg2.Error as exc:
                conn.rollback()
                self.errors.append(str(exc).splitlines()[0])
            self.latencies.append(time.perf_counter() - started)
        conn.close()


def mixed_load(server: Server, db: str, writers: int, hot: int, seconds: float) -> dict:
    conn = psycopg2.connect(server.libpq(db))
    cur = conn.cursor()
    cur.execute(HOT_SQL, (hot,))
    students = [(row[0], list(row[1])) for row in cur.fetchall()]
    conn.close()
    deadline = time.monotonic() + seconds
    threads = [
        MixedWriter(server.libpq(db), students, seed=i, deadline=deadline) for i in range(writers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies = [x for t in threads for x in t.latencies]
    errors = [e for t in threads for e in t.errors]
    return {
        "transactions": len(latencies),
        "deadlocks": sum(t.deadlocks for t in threads),
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
        "max_ms": max(latencies) * 1000,
    }


def measure_mixed(
    server: Server, template: str, template_110: str, writers: int, hot: int, seconds: float
) -> dict[str, dict]:
    """The mixed load on a copy per mode: 1.1.0's trigger comes from its own script."""
    results = {}
    for mode in MIXED_MODES:
        db = server.copy(template_110 if mode == "1.1.0" else template, f"bench_mixed_{mode[0]}")
        if mode == "without":
            conn = psycopg2.connect(server.libpq(db))
            conn.autocommit = True
            drop_trigger(conn)
            conn.close()
        results[mode] = mixed_load(server, db, writers, hot, seconds)
        server.drop(db)
        print(f"  mixed load {mode}: {results[mode]}", flush=True)
    return results


def prepare(server: Server, name: str, students: int, extra: int, revision: str = "head") -> None:
    """A generated database at ``revision``, with ``extra`` students not yet in any group."""
    build_template(server, name, students, revision=revision)
    for statement in PREPARE:
        server.sql(statement.format(n=extra), name)
    server.sql("VACUUM ANALYZE", name)


def prepare_110(server: Server, name: str, students: int) -> None:
    """A generated database brought to 0006 by release 1.1.0's own script (its trigger)."""
    import subprocess

    build_template(server, name, students, revision="0001")
    script = ROOT / "tests" / "fixtures" / "release_1_1_0" / "upgrade_0001_0006.sql"
    subprocess.run(
        [server.psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", server.libpq(name), "-f", script],
        check=True,
        capture_output=True,
    )
    server.sql("VACUUM ANALYZE", name)


def run(server: Server, args) -> TriggerCost:
    prepare(server, "bench_trigger", args.students, args.singles + args.bulk + args.many)
    cost = measure(server, "bench_trigger", args.singles, args.bulk, args.many)
    prepare(server, "bench_trigger_0003", args.students, 20_000, revision="0003")
    conn = psycopg2.connect(server.libpq("bench_trigger_0003"))
    cur = conn.cursor()
    cur.execute("SELECT user_id, school_id, group_id FROM bench_joins ORDER BY n")
    rows = cur.fetchall()
    conn.close()
    cost.deploy_writer = deploy_writer(server, "bench_trigger_0003", rows, args.legacy_rate)
    print(f"  the legacy writer and the deploy: {cost.deploy_writer}", flush=True)
    server.drop("bench_trigger_0003")
    cost.races = races(server, args.rounds)
    prepare_110(server, "bench_trigger_110", args.students)
    cost.mixed = measure_mixed(
        server, "bench_trigger", "bench_trigger_110", args.writers, args.hot, args.mixed_seconds
    )
    cost.mixed_settings = {
        "writers": args.writers,
        "hot": args.hot,
        "seconds": args.mixed_seconds,
        "students": args.students,
        "legacy_rate": args.legacy_rate,
        "rounds": args.rounds,
    }
    server.drop("bench_trigger")
    server.drop("bench_trigger_110")
    return cost


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trigger-students", dest="students", type=int, default=200_000)
    parser.add_argument("--singles", type=int, default=2_000)
    parser.add_argument("--bulk", type=int, default=1_000_000)
    parser.add_argument("--many", type=int, default=100_000)
    parser.add_argument("--legacy-rate", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--writers", type=int, default=6)
    parser.add_argument("--hot", type=int, default=50)
    parser.add_argument("--mixed-seconds", type=float, default=60.0)


def main() -> int:
    from bench import report
    from bench.notes import NOTES
    from bench.run import machine

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args()
    server = Server()
    try:
        label, machine_line = machine(server)
        cost = run(server, args)
    finally:
        server.close()
    figures = {**cost.as_json(), "students": args.students}
    print(f"wrote {report.save_separate('trigger', label, machine_line, figures)}")
    print(f"wrote {report.write(NOTES)}")
    for line in report.trigger_section(figures):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
