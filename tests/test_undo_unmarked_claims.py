"""Pairs the application made its own where no claim could be marked keep their enrollment on
rollback.

The sync trigger marks a claim when the application writes a membership of a backfilled
pair. 1.1.0's trigger marked none, and between a backfill run ahead of time at 0003 and the
deploy there is no trigger at all: 1.2.0's undo then deleted such a pair's enrollment, with
no warning. The undo now also takes an active membership of the pair written after the
record (a newer ``xmin``) as the application's.
"""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

from tests.helpers import FIXTURES, HEAD, downgrade, enrollments, psql, upgrade, url_string

PICK_CREATED = """
SELECT gm.id AS membership, e.course_id, e.student_id
FROM course_enrollments AS e
JOIN groups AS g ON g.course_id = e.course_id
JOIN group_members AS gm ON gm.group_id = g.id AND gm.user_id = e.student_id AND gm.active
WHERE e.id = (SELECT min(x.id) FROM ({created}) AS x(id))
ORDER BY gm.id LIMIT 1"""

CREATED_BY = {
    "1.1.0": "SELECT enrollment_id FROM enrollment_backfill_changes WHERE action = 'created'",
    "ahead": "SELECT u FROM enrollment_backfill_batches, unnest(created) AS u",
}


def pairs(engine) -> set[tuple]:
    with engine.connect() as conn:
        return {
            tuple(r)
            for r in conn.execute(
                text("SELECT course_id, student_id, active FROM course_enrollments")
            )
        }


def leaves_and_comes_back(engine, membership: int) -> None:
    for active in (False, True):
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE group_members SET active = :a WHERE id = :m"),
                {"a": active, "m": membership},
            )


@pytest.mark.parametrize("history", ["1.1.0", "ahead"])
def test_a_pair_made_its_own_without_a_claim_keeps_its_enrollment(
    pg_server, legacy_template, history
):
    url = pg_server.create_database(template=legacy_template)
    engine = create_engine(url)
    try:
        before = pairs(engine)
        if history == "1.1.0":  # what 1.1.0's own script left at its head
            script = (FIXTURES / "release_1_1_0" / "upgrade_0001_0006.sql").read_text()
            applied = psql(pg_server, url, script)
            assert applied.returncode == 0, applied.stderr
        else:  # the command ahead of the deploy, at 0003
            upgrade(engine, "0003")
            ran = enrollments(url_string(url), "backfill", "--commit")
            assert ran.returncode == 0, ran.stdout + ran.stderr
        with engine.connect() as conn:
            pick = conn.execute(text(PICK_CREATED.format(created=CREATED_BY[history]))).one()
        leaves_and_comes_back(engine, pick.membership)

        upgrade(engine, HEAD)
        downgrade(engine, "0003")

        after = pairs(engine)
        own = (pick.course_id, pick.student_id, True)
        assert own in after
        assert after - {own} == before
    finally:
        engine.dispose()
        pg_server.drop_database(url)
