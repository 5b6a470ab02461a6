"""History is frozen: revisions and their helpers never run the live tool's SQL.

Revisions import their helpers from ``enrollments_phase1.migrations.shared.vN``; helper
versions take only plumbing from the rest of ``enrollments_phase1`` (settings, connections,
the lock, error messages), never the live definition or statements, which the live tool is
free to change.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import ROOT, alembic

MIGRATIONS = ROOT / "migrations"

PLUMBING = {
    "enrollments_phase1.migration_env",
    "enrollments_phase1.db",
    "enrollments_phase1.lock",
    "enrollments_phase1.errors",
    "enrollments_phase1.batching",
    "enrollments_phase1.names",
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_revisions_import_only_their_helpers():
    for path in sorted((MIGRATIONS / "versions").glob("*.py")):
        for module in imported_modules(path):
            top = module.split(".")[0]
            assert top in {"__future__", "collections", "typing", "alembic", "sqlalchemy"} or (
                module.startswith("enrollments_phase1.migrations.shared.v")
            ), f"{path.name} imports {module}"


def test_helper_versions_take_only_plumbing_from_the_live_tool():
    for path in sorted((MIGRATIONS / "shared").rglob("*.py")):
        for module in imported_modules(path):
            live = module == "enrollments_phase1" or module.startswith("enrollments_phase1.")
            if live and not module.startswith("enrollments_phase1.migrations"):
                assert module in PLUMBING, f"{path.relative_to(ROOT)} imports {module}"


def test_history_lists_every_revision_without_a_database():
    result = alembic(None, "history")
    assert result.returncode == 0, result.stderr
    assert "<base> -> 0001" in result.stdout
