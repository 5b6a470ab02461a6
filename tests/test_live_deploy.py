"""A live deploy passes: ``alembic upgrade head`` while the application writes memberships,
from every revision a database can stand at, ends at 100% coverage with the sync trigger
installed. 1.0.0's states come from 1.0.0's own scripts (tests/fixtures/release_1_0_0)."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import create_engine, text

from bench.generate import generate
from enrollments_phase1.migrations.shared.v4 import sync
from enrollments_phase1.names import Tables
from tests.helpers import (
    HEAD,
    WAITING_ON_LOCK,
    Application,
    Background,
    alembic,
    at_release_1_0_0,
    enrollments,
    upgrade,
    wait_until,
)

STUDENTS = 600  # about 5,000 memberships


@pytest.fixture
def generated(legacy):
    with legacy.begin() as conn:
        generate(conn, STUDENTS)
    return legacy


def runs(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT source, started_at, finished_at FROM enrollment_backfill_runs ORDER BY id")
        ).all()


def assert_covered_and_kept(database_url, engine, app: Application) -> None:
    audit = enrollments(database_url, "audit", "--json")
    data = json.loads(audit.stdout)
    assert audit.returncode in (0, 1), audit.stdout + audit.stderr
    assert data["coverage_percent"] == 100.0 and data["missing"] == data["inactive"] == 0
    assert alembic(database_url, "current").stdout.strip() == f"{HEAD} (head)"
    with engine.connect() as conn:
        assert conn.execute(text(sync.installed_sql(Tables()))).scalar() is True
        # Students who left stay unenrolled: nothing resurrected them.
        for student, course in app.deactivated:
            active = conn.execute(
                text(
                    "SELECT active FROM course_enrollments WHERE student_id = :s AND course_id = :c"
                ),
                {"s": student, "c": course},
            ).scalar()
            assert active is not True, (student, course)
    assert app.errors == []


CANDIDATES_TABLE = "SELECT to_regclass('enrollment_backfill_candidates') IS NOT NULL"


def upgrade_while_writing(database_url, *x: str) -> tuple[Application, object]:
    """``alembic upgrade head`` while the application writes before, during and after it.

    During: as soon as the backfill's candidates table exists, a session holds ROW
    EXCLUSIVE on it, which only the backfill's ``TRUNCATE`` (the first step of a pass,
    after the run has started and the sync trigger is installed) waits for; the
    application commits more meanwhile, so some of its commits fall inside the backfill,
    whatever the machine's speed."""
    app = Application(database_url).start()
    try:
        while len(app.commits) < 5:  # the application is writing before the deploy starts
            app.stop_event.wait(0.01)
        run = Background(["alembic", *x, "upgrade", "head"], database_url)
        watcher = create_engine(database_url)
        try:
            with watcher.connect() as holder:
                deadline = time.monotonic() + 120
                while not holder.execute(text(CANDIDATES_TABLE)).scalar():
                    holder.rollback()
                    assert time.monotonic() < deadline, run.finish().stderr
                holder.execute(
                    text("LOCK TABLE enrollment_backfill_candidates IN ROW EXCLUSIVE MODE")
                )
                wait_until(watcher, WAITING_ON_LOCK, app="alembic")
                during = len(app.commits)
                while len(app.commits) < during + 5 and not app.errors:
                    app.stop_event.wait(0.01)
                holder.rollback()
        finally:
            watcher.dispose()
        result = run.finish(timeout=300)
        after = len(app.commits)  # and goes on writing after it: the trigger keeps up
        while len(app.commits) < after + 5 and not app.errors:
            app.stop_event.wait(0.01)
    finally:
        app.stop()
    return app, result


def test_from_0001_a_fresh_deploy(database_url, generated):
    app, result = upgrade_while_writing(database_url, "-x", "backfill_batch_size=100")
    assert result.returncode == 0, result.stdout + result.stderr
    assert_covered_and_kept(database_url, generated, app)
    (source, started, finished), *_ = runs(generated)
    assert source == "0004"
    assert app.commits_between(started, finished) > 0  # its writes overlapped the backfill
    assert len(app.deactivated) > 0


@pytest.mark.parametrize("revision", ["0003", "0004", "0005"])
def test_from_where_1_0_0_left_it(pg_server, database_url, generated, revision):
    at_release_1_0_0(pg_server, database_url, generated, revision)
    app, result = upgrade_while_writing(database_url, "-x", "backfill_batch_size=100")
    assert result.returncode == 0, result.stdout + result.stderr
    assert_covered_and_kept(database_url, generated, app)
    catch_up = {"0003": "0004", "0004": "0005", "0005": "0006"}[revision]
    backfills = [r for r in runs(generated) if r.source == catch_up]
    assert len(backfills) == 1
    assert app.commits_between(backfills[0].started_at, backfills[0].finished_at) > 0
    if revision != "0003":
        assert "the sync trigger is missing (1.0.0 migrated this database)" in result.stderr


def test_after_a_fresh_deploy_0006_has_nothing_to_do(database_url, generated):
    upgrade(generated, "0005")
    result = alembic(database_url, "upgrade", "head")
    assert result.returncode == 0, result.stderr
    assert (
        "revision 0006: the sync trigger is installed; coverage is kept (nothing to do: this "
        "revision repairs databases 1.0.0 left without it)" in result.stderr
    )
    for revision in ("0007", "0008"):  # 1.2.0 said "the sync trigger is hardened"
        assert (
            f"revision {revision}: the sync trigger is this version's already: nothing changed"
            in result.stderr
        )
    assert [r.source for r in runs(generated)] == ["0004"]


def test_0004_says_the_sync_trigger_is_installed(database_url, generated):
    upgrade(generated, "0003")
    result = alembic(database_url, "upgrade", "0004")
    assert result.returncode == 0, result.stderr
    installed = result.stderr.index("revision 0004: the sync trigger is installed: from now on")
    assert installed < result.stderr.index("backfill 0004: pass 1:")
