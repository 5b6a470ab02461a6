"""The backfill revision (0004) and its downgrade, with pytest-alembic's data steps."""

import pytest
from pytest_alembic import Config
from sqlalchemy import text

from enrollments_phase1 import sample_data
from tests.helpers import ROOT, alembic, enrollments_rows, load_story, record_size, recorded


@pytest.fixture
def alembic_config() -> Config:
    """No automatic data here: each test inserts the legacy rows where it wants them."""
    return Config(config_options={"file": str(ROOT / "alembic.ini")})


def full_table(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                text("SELECT id, course_id, student_id, active FROM course_enrollments ORDER BY id")
            )
        ]


def insert_story(alembic_runner) -> None:
    for table in sample_data.LEGACY_TABLES:
        rows = sample_data.STORY.get(table)
        if rows:
            alembic_runner.insert_into(table, rows)


def test_backfill_revision_closes_the_gaps(alembic_runner, alembic_engine):
    alembic_runner.migrate_up_before("0004")
    insert_story(alembic_runner)
    alembic_runner.migrate_up_one()

    assert enrollments_rows(alembic_engine) == sample_data.STORY_ENROLLMENTS_AFTER
    assert recorded(alembic_engine, "0004") == [
        ("created", 2, 1),
        ("created", 2, 3),
        ("created", 4, 5),
        ("reactivated", 1, 2),
        ("reactivated", 3, 6),
    ]


def test_upgrade_head_then_downgrade_and_again_gives_the_same_end_state(
    alembic_runner, alembic_engine
):
    alembic_runner.migrate_up_to("0001")
    insert_story(alembic_runner)
    alembic_runner.migrate_up_to("head")
    first = enrollments_rows(alembic_engine)
    assert first == sample_data.STORY_ENROLLMENTS_AFTER

    alembic_runner.migrate_down_to("0001")
    alembic_runner.migrate_up_to("head")
    assert enrollments_rows(alembic_engine) == first


def test_downgrade_restores_course_enrollments_exactly(alembic_runner, alembic_engine):
    alembic_runner.migrate_up_to("0001")
    insert_story(alembic_runner)
    alembic_runner.migrate_up_to("0003")
    before = full_table(alembic_engine)

    alembic_runner.migrate_up_one()
    assert full_table(alembic_engine) != before
    alembic_runner.migrate_down_one()

    assert full_table(alembic_engine) == before
    assert record_size(alembic_engine) == 0


def test_downgrade_leaves_rows_changed_since_alone(database_url, engine):
    assert alembic(database_url, "upgrade", "0001").returncode == 0
    load_story(engine)
    assert alembic(database_url, "upgrade", "0004").returncode == 0
    # The application deactivates one enrollment the backfill created (Ada, Physics).
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE course_enrollments SET active = false"
                " WHERE course_id = 2 AND student_id = 1"
            )
        )

    result = alembic(database_url, "downgrade", "0003")

    assert result.returncode == 0, result.stderr
    assert "kept 1 recorded enrollments as they are: 1 changed since the backfill" in (
        result.stderr
    )
    rows = enrollments_rows(engine)
    assert (2, 1, False) in rows  # left as the application set it
    assert (2, 3, True) not in rows and (4, 5, True) not in rows  # deleted
    assert (1, 2, False) in rows and (3, 6, False) in rows  # deactivated again


def test_batched_backfill_revision_equals_single_statement(pg_server, database_url, engine):
    from sqlalchemy import create_engine

    other = pg_server.create_database()
    other_engine = create_engine(other)
    try:
        for url, eng in ((database_url, engine), (other, other_engine)):
            assert alembic(url, "upgrade", "0001").returncode == 0
            load_story(eng)
        single = alembic(database_url, "upgrade", "head")
        batched = alembic(other, "-x", "backfill_batch_size=2", "upgrade", "head")
        assert single.returncode == 0 and batched.returncode == 0, batched.stderr
        assert "3 enrollments created, 2 reactivated (3 batches over 5 pairs, 1 pass)" in (
            batched.stderr
        )
        assert enrollments_rows(other_engine) == enrollments_rows(engine)
    finally:
        other_engine.dispose()
        pg_server.drop_database(other)
