"""The offline upgrade script passes squawk with the rules of .squawk.toml."""

import subprocess

from tests.helpers import ROOT, VENV_BIN, alembic


def test_upgrade_script_passes_squawk(tmp_path):
    result = alembic(None, "upgrade", "head", "--sql")
    assert result.returncode == 0, result.stderr
    script = tmp_path / "upgrade_head.sql"
    script.write_text(result.stdout)
    lint = subprocess.run(
        [str(VENV_BIN / "squawk"), "-c", str(ROOT / ".squawk.toml"), str(script)],
        capture_output=True,
        text=True,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "Found 0 issues" in lint.stdout + lint.stderr
