"""The command's backfill (``enrollments backfill --commit``) and the revisions' (0004's data
step) write the same rows: on the same data, with the same batch size, the same
enrollments (ids included) and the same record of what was created and what reactivated.
Since 1.3 both run the newest helper version's statements; this keeps it so."""

from __future__ import annotations

from sqlalchemy import create_engine, text

from tests.helpers import RECORDED_SQL, cli, upgrade

ROWS = "SELECT id, course_id, student_id, active FROM course_enrollments ORDER BY id"
RECORD = f"SELECT action, course_id, student_id FROM ({RECORDED_SQL}) AS r ORDER BY 1, 2, 3"


def contents(url) -> tuple[list, list]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return (
                [tuple(r) for r in conn.execute(text(ROWS))],
                [tuple(r) for r in conn.execute(text(RECORD))],
            )
    finally:
        engine.dispose()


def test_the_command_and_the_revision_write_the_same_rows(pg_server, legacy_template, capsys):
    by_command = pg_server.create_database(template=legacy_template)
    by_revision = pg_server.create_database(template=legacy_template)
    engines = [create_engine(by_command), create_engine(by_revision)]
    try:
        for engine in engines:
            upgrade(engine, "0003")
        code, _, err = cli(
            capsys,
            "backfill",
            "--commit",
            "--batch-size",
            "97",
            "--database-url",
            by_command.render_as_string(hide_password=False),
        )
        assert code == 0, err
        upgrade(engines[1], "0004", "backfill_batch_size=97")
        for engine in engines:
            engine.dispose()

        rows, record = contents(by_command)
        assert (rows, record) == contents(by_revision)
        actions = [r[0] for r in record]
        assert actions.count("created") > 50 and actions.count("reactivated") > 10
    finally:
        for engine in engines:
            engine.dispose()
        pg_server.drop_database(by_command)
        pg_server.drop_database(by_revision)
