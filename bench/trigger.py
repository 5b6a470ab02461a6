"""The sync trigger's cost: one membership insert, and a bulk insert of 100,000, each with
and without the trigger, on copies of the same generated database at head.

    python -m bench.trigger [--students 200000] [--singles 2000] [--bulk 100000]

Goals (issue 10): p99 of one insert at most 1 ms above the p99 without the trigger; the
bulk insert at most 2x the time without it. Each insert commits on its own (autocommit),
as the application's would; the latency is the client's round trip. The students the
inserts use are created in the template beforehand, so only the memberships are timed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass

import psycopg2

from bench.server import Server, build_template
from migrations.shared.v2 import sync


@dataclass
class TriggerCost:
    singles: int
    bulk_rows: int
    single_p50_ms: dict[str, float]
    single_p99_ms: dict[str, float]
    bulk_seconds: dict[str, float]

    @property
    def p99_added_ms(self) -> float:
        return self.single_p99_ms["with"] - self.single_p99_ms["without"]

    @property
    def bulk_ratio(self) -> float:
        return self.bulk_seconds["with"] / self.bulk_seconds["without"]


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


def _without_trigger(conn) -> None:
    cur = conn.cursor()
    for table in sync.TABLES:
        cur.execute(sync.drop_table_block(table))


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


def measure(server: Server, template: str, singles: int, bulk: int, runs: int = 3) -> TriggerCost:
    """Median of ``runs`` fresh copies per mode, without the trigger and with it."""
    p50, p99, bulk_seconds = {}, {}, {}
    for mode in ("without", "with"):
        single_p50, single_p99, bulks = [], [], []
        for run in range(runs):
            db = server.copy(template, f"bench_trigger_{mode}_{run}")
            conn = psycopg2.connect(server.libpq(db))
            conn.autocommit = True
            if mode == "without":
                _without_trigger(conn)
            cur = conn.cursor()
            cur.execute("VACUUM ANALYZE")
            latencies = sorted(_singles(conn, singles))
            single_p50.append(statistics.median(latencies) * 1000)
            single_p99.append(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000)
            started = time.perf_counter()  # students the single inserts did not use
            cur.execute(BULK.format(after=singles, until=singles + bulk))
            bulks.append(time.perf_counter() - started)
            assert cur.rowcount == bulk, cur.rowcount
            conn.close()
            server.drop(db)
        p50[mode] = statistics.median(single_p50)
        p99[mode] = statistics.median(single_p99)
        bulk_seconds[mode] = statistics.median(bulks)
    return TriggerCost(singles, bulk, p50, p99, bulk_seconds)


def prepare(server: Server, name: str, students: int, extra: int) -> None:
    """A generated database at head, with ``extra`` students not yet in any group."""
    build_template(server, name, students, revision="head")
    for statement in PREPARE:
        server.sql(statement.format(n=extra), name)
    server.sql("VACUUM ANALYZE", name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=200_000)
    parser.add_argument("--singles", type=int, default=2_000)
    parser.add_argument("--bulk", type=int, default=100_000)
    args = parser.parse_args()
    server = Server()
    try:
        prepare(server, "bench_trigger", args.students, args.singles + args.bulk)
        cost = measure(server, "bench_trigger", args.singles, args.bulk)
        server.drop("bench_trigger")
    finally:
        server.close()
    print(
        f"one insert: p50 {cost.single_p50_ms['without']:.2f}"
        f" -> {cost.single_p50_ms['with']:.2f} ms,"
        f" p99 {cost.single_p99_ms['without']:.2f} -> {cost.single_p99_ms['with']:.2f} ms"
        f" (+{cost.p99_added_ms:.2f} ms); bulk of {cost.bulk_rows:,}:"
        f" {cost.bulk_seconds['without']:.2f} -> {cost.bulk_seconds['with']:.2f} s"
        f" ({cost.bulk_ratio:.2f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
