"""Released revisions never change by accident: their offline SQL is pinned."""

import os
import shutil
import subprocess
import sys

from enrollments_phase1.migrations import pins
from tests.helpers import ROOT


def test_every_revision_writes_its_pinned_sql():
    assert pins.problems(pins.revision_sql()) == []


def test_every_pin_digest_has_a_reason():
    reasons = pins.digests_with_reasons()
    for pin in pins.revision_sql():
        assert pin.digest in reasons.get(pin.revision, set()), pin.revision


def test_the_pin_fails_when_a_helper_changes_its_sql(tmp_path):
    """The same definition rewritten (``'student' = u.role``) is still a change."""
    fragment, rewritten = "u.role {ops.eq} 'student'", "'student' {ops.eq} u.role"
    tree = tmp_path / "tree"
    package = tree / "enrollments_phase1"  # app/ and migrations/ as installed
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "app", package, ignore=ignore)
    shutil.copytree(ROOT / "migrations", package / "migrations", ignore=ignore)
    helpers = [
        p for p in (package / "migrations" / "shared").rglob("*.py") if fragment in p.read_text()
    ]
    assert helpers, "no helper holds the definition"
    for path in helpers:
        path.write_text(path.read_text().replace(fragment, rewritten))
    result = subprocess.run(
        [sys.executable, "-m", "enrollments_phase1.migrations.pins"],
        cwd=tree,  # the copy of the package comes first on sys.path
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "0004: its SQL changed" in result.stderr
    assert "0005: its SQL changed" in result.stderr
