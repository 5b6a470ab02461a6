"""Render docs/migrations.md from the revision scripts: ``python -m app.revision_list``.

tests/test_docs.py fails when the committed file differs from what this renders.
"""

from __future__ import annotations

import sys
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

ROOT = Path(__file__).resolve().parent.parent


def _body(doc: str) -> str:
    """The docstring after the header of Alembic's template (message, ids, date)."""
    lines = (doc or "").strip().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Create Date:"):
            return "\n".join(lines[i + 1 :]).strip()
    return ""


def render() -> str:
    script = ScriptDirectory.from_config(Config(str(ROOT / "alembic.ini")))
    revisions = list(reversed(list(script.walk_revisions())))
    out = [
        "# Revisions",
        "",
        "Generated from `migrations/versions/` by `python -m app.revision_list > "
        "docs/migrations.md`; a test fails when this file is stale.",
        "",
        "| revision | revises | what |",
        "|---|---|---|",
    ]
    for rev in revisions:
        out.append(f"| `{rev.revision}` | {rev.down_revision or '(base)'} | {rev.doc} |")
    for rev in revisions:
        out += ["", f"## {rev.revision}: {rev.doc}", "", f"File: `{Path(rev.path).name}`"]
        body = _body(rev.module.__doc__ or "")
        if body:
            out += ["", body]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
