"""History is frozen: revisions and their helpers never run the live tool's SQL.

Revisions import their helpers from ``migrations.shared.vN``; helper versions take only
plumbing from ``app`` (settings, connections, the lock, error messages), never the live
definition or statements, which ``app`` is free to change.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import ROOT, alembic

PLUMBING = {
    "app.migration_env",
    "app.db",
    "app.lock",
    "app.errors",
    "app.batching",
    "app.names",
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
    for path in sorted((ROOT / "migrations" / "versions").glob("*.py")):
        for module in imported_modules(path):
            top = module.split(".")[0]
            assert top in {"__future__", "collections", "typing", "alembic", "sqlalchemy"} or (
                module.startswith("migrations.shared.v")
            ), f"{path.name} imports {module}"


def test_helper_versions_take_only_plumbing_from_app():
    for path in sorted((ROOT / "migrations" / "shared").rglob("*.py")):
        for module in imported_modules(path):
            if module == "app" or module.startswith("app."):
                assert module in PLUMBING, f"{path.relative_to(ROOT)} imports {module}"


def test_history_lists_every_revision_without_a_database():
    result = alembic(None, "history")
    assert result.returncode == 0, result.stderr
    assert "<base> -> 0001" in result.stdout
