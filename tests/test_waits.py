"""Every wait ends: a server that accepts the connection and never answers, and a lock the
application holds. Nobody queues long behind a lock request of the migration.

1.1.0 hung forever on a silent server (its interrupt handling made libpq connect
asynchronously, where connect_timeout no longer applied), and while it waited 5 s at a
time for a table lock the application's writes queued behind its request: 6 stalls of 5 s.
"""

from __future__ import annotations

import re
import socket
import threading
import time

import psycopg2
import pytest

from enrollments_phase1.errors import EX_UNAVAILABLE
from tests.helpers import Background, alembic, enrollments, libpq_url, upgrade, wait_until


@pytest.fixture
def silent_server():
    """A TCP port that accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"postgresql://nobody@127.0.0.1:{listener.getsockname()[1]}/school"
    finally:
        listener.close()
        for conn in accepted:
            conn.close()


def timed(run):
    started = time.monotonic()
    result = run()
    return result, time.monotonic() - started


@pytest.mark.parametrize(
    ("command", "env"),
    [
        (["enrollments", "audit"], {}),  # the default: 10 s
        (["alembic", "upgrade", "head"], {}),
        (["enrollments", "backfill", "--commit"], {"PGCONNECT_TIMEOUT": "2"}),
        (["alembic", "current"], {"PGCONNECT_TIMEOUT": "2"}),
    ],
    ids=["audit", "upgrade", "backfill", "current"],
)
def test_a_server_that_never_answers_ends_every_command(silent_server, command, env):
    from tests.helpers import run_command

    result, seconds = timed(lambda: run_command(command, silent_server, **env))
    output = (result.stdout + result.stderr).strip().splitlines()
    limit = float(env.get("PGCONNECT_TIMEOUT", 10))
    assert limit <= seconds < limit + 10, seconds
    assert len(output) == 1, output
    assert f"the server did not answer within {limit:g} s of connecting" in output[0]
    if command[0] == "alembic":
        assert output[0].startswith("FAILED: cannot connect")
        assert result.returncode != 0
    else:
        assert result.returncode == EX_UNAVAILABLE


def test_the_url_sets_the_connect_timeout(silent_server):
    result, seconds = timed(lambda: enrollments(silent_server + "?connect_timeout=1", "audit"))
    assert result.returncode == EX_UNAVAILABLE
    assert 1 <= seconds < 8, seconds
    assert "within 1 s of connecting" in result.stderr


# --- the application never queues long behind a lock request of the migration ------------
class Inserts(threading.Thread):
    """The application: a membership insert every 50 ms, each timed, until stopped."""

    def __init__(self, url) -> None:
        super().__init__(daemon=True)
        self.url = libpq_url(url)
        self.stop_event = threading.Event()
        self.latencies: list[float] = []

    def run(self) -> None:
        conn = psycopg2.connect(self.url, application_name="application")
        cur = conn.cursor()
        i = 0
        while not self.stop_event.wait(0.05):
            i += 1
            started = time.monotonic()
            cur.execute(
                "INSERT INTO users (school_id, email, name) VALUES (1, %s, 'New') RETURNING id",
                (f"new{i}@x",),
            )
            user = cur.fetchone()[0]
            cur.execute(
                "INSERT INTO group_members (school_id, group_id, user_id) VALUES (1, 3, %s)",
                (user,),
            )
            conn.commit()
            self.latencies.append(time.monotonic() - started)
        conn.close()


def test_the_application_never_queues_long_behind_the_trigger_install(database_url, story):
    """An idle transaction holds a row lock on group_members: installing the sync trigger
    (SHARE ROW EXCLUSIVE) asks for 500 ms at a time and lets go, naming who holds the
    table; the application's inserts, one every 50 ms, never wait 1 s; the upgrade
    completes once the idle transaction ends."""
    upgrade(story, "0003")
    idle = psycopg2.connect(libpq_url(database_url), application_name="idle report")
    idle.cursor().execute("UPDATE group_members SET role_in_team = 'x' WHERE id = 1")
    app = Inserts(database_url)
    app.start()
    try:
        run = Background(["alembic", "upgrade", "head"], database_url)
        for attempt in (1, 2, 3):
            line = run.wait_for(f"(attempt {attempt}); held by")
        assert "idle report, idle in transaction, transaction open for " in line
        idle_pid = idle.get_backend_pid()
        assert f"pid {idle_pid} (" in line
        idle.rollback()
        result = run.finish(timeout=120)
    finally:
        idle.close()
        app.stop_event.set()
        app.join(10)
    assert result.returncode == 0, result.stdout + result.stderr
    ordered = sorted(app.latencies)
    print(  # the figures, for the record (pytest -s)
        f"application inserts while the migration waited: {len(ordered)}, p50 "
        f"{ordered[len(ordered) // 2] * 1000:.1f} ms, p99 "
        f"{ordered[int(len(ordered) * 0.99)] * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms"
    )
    assert ordered and ordered[-1] < 1.0, ordered[-1]
    wait_until(
        story,
        "SELECT count(*) = 5 FROM pg_trigger WHERE tgname LIKE 'course_enrollments_sync_on_%'",
    )


def test_the_trigger_install_gives_up_after_its_patience(database_url, story):
    upgrade(story, "0003")
    idle = psycopg2.connect(libpq_url(database_url), application_name="idle report")
    idle.cursor().execute("UPDATE group_members SET role_in_team = 'x' WHERE id = 1")
    try:
        result = alembic(database_url, "-x", "lock_patience=2s", "upgrade", "head")
    finally:
        idle.rollback()
        idle.close()
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
    assert result.returncode != 0
    assert len(failed) == 1
    assert "installing the sync triggers: gave up after" in failed[0]
    assert "(lock_patience 2s); the tables are held by pid" in failed[0]
    assert "idle report, idle in transaction" in failed[0]
    # Each retry is a WARNING that counts attempts, with no bound it does not keep; the
    # last word is the one FAILED line, not another "retrying".
    retries = [line for line in result.stderr.splitlines() if "a lock was not granted" in line]
    assert retries and all(" WARNI [migrations] " in line for line in retries)
    assert all(re.search(r"\(attempt \d+\); held by .*; retrying$", line) for line in retries)
    assert alembic(database_url, "current").stdout.strip() == "0003"
