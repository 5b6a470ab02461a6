"""The application during a deploy: ``rate`` transactions a second, latency and errors per
transaction. By default each upserts one (student, course) pair that is a gap when the
writer starts, so that it races the backfill for the very rows the backfill creates or
reactivates (the Phase 1 application, writing its enrollments); given ``rows`` and a
``statement``, it writes those instead (``bench.trigger``: the legacy application, writing
memberships).
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

import psycopg2

GAPS = """SELECT g.course_id, gm.user_id
FROM group_members AS gm
JOIN groups AS g ON g.id = gm.group_id
JOIN users AS u ON u.id = gm.user_id
JOIN courses AS c ON c.id = g.course_id
WHERE gm.active AND u.role = 'student' AND u.school_id = c.school_id
  AND NOT EXISTS (SELECT 1 FROM course_enrollments AS ce
                  WHERE ce.course_id = g.course_id AND ce.student_id = gm.user_id AND ce.active)
  AND gm.id % 97 = 0
LIMIT 20000"""

UPSERT = """INSERT INTO course_enrollments AS ce (course_id, student_id) VALUES (%s, %s)
ON CONFLICT (course_id, student_id) DO UPDATE SET active = true WHERE NOT ce.active"""


@dataclass(eq=False)
class Writer(threading.Thread):
    url: str
    rate: float = 50.0
    rows: list[tuple] | None = None  # None: the gaps (GAPS), upserted (UPSERT)
    statement: str = UPSERT
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        threading.Thread.__init__(self, daemon=True)
        self.stop_event = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        conn = psycopg2.connect(self.url, application_name="bench writer")
        cur = conn.cursor()
        cur.execute("SET statement_timeout = '30s'")
        rows = self.rows
        if rows is None:
            cur.execute(GAPS)
            rows = cur.fetchall()
            random.Random(7).shuffle(rows)
        conn.commit()
        self.ready.set()
        next_at = time.monotonic()
        for row in rows:
            if self.stop_event.is_set():
                break
            started = time.monotonic()
            try:
                cur.execute(self.statement, row)
                conn.commit()
            except psycopg2.Error as exc:
                conn.rollback()
                self.errors.append(str(exc).splitlines()[0])
            self.latencies.append(time.monotonic() - started)
            next_at += 1 / self.rate
            time.sleep(max(0.0, next_at - time.monotonic()))
        conn.close()

    def stop(self) -> dict[str, float]:
        self.stop_event.set()
        self.join()
        lat = sorted(self.latencies) or [0.0]
        return {
            "transactions": len(self.latencies),
            "p50_ms": lat[len(lat) // 2] * 1000,
            "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
            "max_ms": lat[-1] * 1000,
            "errors": len(self.errors),
        }
