"""The sync trigger adds no deadlock to an application that writes ``group_members`` and
then the student's enrollments in ``course_id`` order.

Zoë has an inactive membership and an inactive enrollment in Mathématiques (course 1)
and in Physics (course 2). Two application transactions each activate one of her
memberships, then update her enrollments, course 1 then course 2, and commit:

- T1 activates Physics; T2 activates Mathématiques;
- T1 updates course 1; T2 updates course 1 (waits for T1); T1 updates course 2, commits;
  T2 updates course 2, commits.

Without the trigger this never deadlocks. 1.1.0's trigger reactivated each enrollment
inside the membership's statement: T1 held course 2 and T2 held course 1 before their
ordered updates, and one of them died with ``40P01 deadlock detected``. Each step here
waits on pg_stat_activity or on the other session's progress, never on a sleep.
"""

from __future__ import annotations

import threading
import time

import psycopg2
import pytest
from sqlalchemy import text

from tests.helpers import libpq_url
from tests.roles import deploy, upgrade_head

ACTIVATE = "UPDATE group_members SET active = true WHERE group_id = %s AND user_id = 2"
ENROLL = "UPDATE course_enrollments SET active = true WHERE course_id = %s AND student_id = 2"
WAITING = (
    "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = %s"
    " AND wait_event_type = 'Lock' AND datname = current_database())"
)


def zoe_left_both(engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE group_members SET active = false WHERE user_id = 2"))
        conn.execute(text("UPDATE course_enrollments SET active = false WHERE student_id = 2"))


class Session(threading.Thread):
    """One application transaction, step by step; ``done`` holds the steps it finished."""

    def __init__(self, url: str, name: str, steps) -> None:
        super().__init__(daemon=True, name=name)
        self.url, self.app_name, self.steps = url, name, steps
        self.done: list[str] = []
        self.error: Exception | None = None
        self.progress = threading.Condition()

    def run(self) -> None:
        conn = psycopg2.connect(self.url, application_name=self.app_name)
        try:
            cur = conn.cursor()
            for label, action in self.steps:
                action(cur)
                with self.progress:
                    self.done.append(label)
                    self.progress.notify_all()
            conn.commit()
            with self.progress:
                self.done.append("committed")
                self.progress.notify_all()
        except psycopg2.Error as exc:
            self.error = exc
            conn.rollback()
        finally:
            conn.close()
            with self.progress:
                self.progress.notify_all()


def until(watcher, condition, timeout: float = 30) -> None:
    """Poll the server (pg_stat_activity) and the sessions until ``condition`` holds."""
    deadline = time.monotonic() + timeout
    while not condition(watcher):
        if time.monotonic() > deadline:
            raise AssertionError("the sessions never got there")
        time.sleep(0.02)


def waiting(watcher, name: str) -> bool:
    cur = watcher.cursor()
    cur.execute(WAITING, (name,))
    return cur.fetchone()[0]


@pytest.mark.parametrize("start", ["fresh", "1.1.0"])
def test_ordered_writes_meet_no_deadlock_from_the_trigger(pg_server, roles, engine, start):
    deploy(pg_server, roles, start)
    upgrade_head(roles)
    roles.grant_application(dual_write=True)
    zoe_left_both(engine)
    url = roles.libpq(roles.app)
    watcher = psycopg2.connect(libpq_url(roles.admin_url))
    watcher.autocommit = True
    go = {k: threading.Event() for k in ("t2 activate", "t2 enroll", "t1 course 2")}

    def wait_for(event: str):
        return lambda cur: go[event].wait(30)

    t1 = Session(url, "t1", [
        ("activate", lambda cur: cur.execute(ACTIVATE, (3,))),  # Physics A: course 2
        ("wait t2", wait_for("t2 activate")),
        ("course 1", lambda cur: cur.execute(ENROLL, (1,))),
        ("wait", wait_for("t1 course 2")),
        ("course 2", lambda cur: cur.execute(ENROLL, (2,))),
    ])  # fmt: skip
    t2 = Session(url, "t2", [
        ("activate", lambda cur: cur.execute(ACTIVATE, (1,))),  # Math A: course 1
        ("wait", wait_for("t2 enroll")),
        ("course 1", lambda cur: cur.execute(ENROLL, (1,))),
        ("course 2", lambda cur: cur.execute(ENROLL, (2,))),
    ])  # fmt: skip
    try:
        t1.start()
        until(watcher, lambda w: "activate" in t1.done)
        t2.start()
        until(watcher, lambda w: "activate" in t2.done)
        go["t2 activate"].set()
        # T1 has updated course 1, or waits for it (1.1.0: T2's trigger holds it).
        until(watcher, lambda w: "course 1" in t1.done or waiting(w, "t1"))
        go["t2 enroll"].set()
        # T2 waits for T1's course 1 (or, on 1.1.0, went past it holding it already).
        until(watcher, lambda w: waiting(w, "t2") or "course 1" in t2.done or t2.error)
        go["t1 course 2"].set()
        t1.join(30)
        t2.join(30)
    finally:
        for event in go.values():
            event.set()
        watcher.close()
    assert (t1.error, t2.error) == (None, None)
    assert t1.done[-1] == t2.done[-1] == "committed"
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT course_id, active FROM course_enrollments WHERE student_id = 2"
                 " ORDER BY 1")
        ).all()  # fmt: skip
    assert [tuple(r) for r in rows] == [(1, True), (2, True)]
