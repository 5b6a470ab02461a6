"""enrollments_phase1.schema: the revisions it knows are the scripts' revisions."""

from alembic.config import Config
from alembic.script import ScriptDirectory

from enrollments_phase1.names import Tables
from enrollments_phase1.schema import KNOWN_REVISIONS, check_schema
from tests.helpers import ROOT


def test_known_revisions_are_the_scripts():
    script = ScriptDirectory.from_config(Config(str(ROOT / "alembic.ini")))
    assert set(KNOWN_REVISIONS) == {rev.revision for rev in script.walk_revisions()}


def test_a_legacy_database_never_stamped_is_accepted(legacy):
    with legacy.begin() as conn:
        conn.exec_driver_sql("DROP TABLE alembic_version")
    with legacy.connect() as conn:
        assert check_schema(conn, Tables("public")) is None


def test_the_current_revision_is_returned(legacy):
    with legacy.connect() as conn:
        assert check_schema(conn, Tables("public")) == "0001"
