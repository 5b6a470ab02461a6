"""The repository's top level is the design card's (migrations/, app/, tests/, alembic.ini,
pyproject.toml, docs/), and each file of app/ and migrations/ loads under one name only:
``enrollments_phase1`` (pyproject.toml maps both directories to it)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from tests.helpers import ROOT


def test_the_top_level_is_the_design_cards():
    for name in ("migrations", "app", "tests", "docs"):
        assert (ROOT / name).is_dir(), name
    for name in ("alembic.ini", "pyproject.toml"):
        assert (ROOT / name).is_file(), name
    assert (ROOT / "migrations" / "env.py").is_file()
    assert (ROOT / "migrations" / "versions").is_dir()


def test_alembic_writes_new_revisions_into_the_checkouts_migrations_versions():
    """``alembic revision`` writes into ScriptDirectory.versions: in a checkout (installed
    editable, as the README does it) that is migrations/versions/ here."""
    script = ScriptDirectory.from_config(Config(str(ROOT / "alembic.ini")))
    assert script.versions == str(ROOT / "migrations" / "versions")
    assert script.dir == str(ROOT / "migrations")


@pytest.mark.parametrize("name", ["app", "app.db", "migrations", "migrations.shared.v4.gate"])
def test_no_file_loads_under_a_second_name(name):
    """From the checkout's top level, ``import app`` would load app/db.py a second time, as
    app.db beside enrollments_phase1.db, with its own copy of every module's state."""
    result = subprocess.run(
        [sys.executable, "-c", f"import {name}"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "ImportError: this is the package enrollments_phase1" in result.stderr
    assert f"not as {name.split('.')[0]!r}" in result.stderr
