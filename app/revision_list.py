"""Render docs/migrations.md from the revision scripts:
``python -m enrollments_phase1.revision_list``.

tests/test_docs.py fails when the committed file differs from what this renders.
"""

from __future__ import annotations

import sys
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

from enrollments_phase1.alembic_ini import ALEMBIC_INI

PREFACE = """## History and the live tool

- `migrations/` is history. A revision imports only its helpers, from
  one version, `migrations/shared/vN/`. A helper version used by a
  released revision is never edited: a change of behaviour is a new version beside it. The
  helpers take plumbing from the rest of `app/` (settings, connections, the
  lock, batching, names, error messages), which can change how a released revision runs,
  never the SQL it runs (see below).
- The SQL every revision writes, upgrade and downgrade, is pinned in
  `migrations/pinned/NNNN.sql`. `tests/test_pins.py` fails when a
  revision writes anything else, and when a pin's digest has no row with a reason in
  `migrations/pinned/CHANGES.md`. A released revision changes only to
  fix a defect: `python -m enrollments_phase1.migrations.pins --write`, and a row in
  CHANGES.md saying which defect, in the same commit.
- The rest of `app/` is the live tool, free to change: the definition the
  commands use (`app/coverage.py`), their statements, and plumbing the
  revisions share, none of which holds a revision's SQL.

## Changing the definition of an eligible pair

One edit in `app/`, plus one new revision with a new helper version:

1. Change the fragments in `app/coverage.py`; the commands use them at once.
2. Copy the newest helper version to `migrations/shared/vN+1/` and make
   the same change there. Never edit a version a released revision uses.
3. Add a revision (`alembic revision -m "..."`) that uses vN+1: it replaces the sync
   trigger's functions (`CREATE OR REPLACE`), runs a catch-up backfill and the coverage
   gate with the new definition.
4. `python -m enrollments_phase1.migrations.pins --write` pins the new revision; its row in
   CHANGES.md says why. The old revisions' pins do not move.

`tests/test_definition_agreement.py` fails until the newest revision's gate and
`app/coverage.py` agree.

"""


def _body(doc: str) -> str:
    """The docstring after the header of Alembic's template (message, ids, date)."""
    lines = (doc or "").strip().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Create Date:"):
            return "\n".join(lines[i + 1 :]).strip()
    return ""


def render() -> str:
    script = ScriptDirectory.from_config(Config(str(ALEMBIC_INI)))
    revisions = list(reversed(list(script.walk_revisions())))
    out = [
        "# Revisions",
        "",
        "Generated from `migrations/versions/` by "
        "`python -m enrollments_phase1.revision_list > docs/migrations.md`; a test fails when "
        "this file is stale.",
        "",
        PREFACE,
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
