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

PREFACE = """## Released revisions: how they change

A released revision's SQL changes only to fix a defect, in place, and every database,
whatever release left it where, must reach a correct head. That is the practice of 1.1 and
1.2, stated as it is:

- **The SQL is pinned.** What every revision writes, upgrade and downgrade (its offline
  SQL, which is also what it runs online, statement for statement), is checked in as
  `migrations/pinned/NNNN.sql`. `tests/test_pins.py` fails when a revision writes anything
  else, and when a pin's digest has no row in `migrations/pinned/CHANGES.md`.
- **A defect is fixed in the revision that has it.** The fix changes that revision's SQL:
  the same commit rewrites its pin (`python -m enrollments_phase1.migrations.pins --write`)
  and adds a row to CHANGES.md saying which defect. A fresh deploy then never runs the
  defect. So one revision id can mean several things: 0004 is 1.0.0's, 1.1.0's and 1.2.0's,
  each in CHANGES.md.
- **Databases already past it get the fix from a new revision**, or from the fixed
  revisions converging: 0006 installs the sync trigger where 1.0.0 left it out, 0007
  hardens 1.1.0's, and each revision's helpers repair what an older release of the same
  revision left (the record table's columns, for instance).
- **Every released state is tested.** `tests/test_release_matrix.py` starts from each
  revision of each release (1.0.0, 1.1.0, 1.2.0), as that release's own script left it
  (`tests/fixtures/release_*/`, never regenerated), upgrades to head and requires the schema
  of a fresh deploy (a normalised `pg_dump --schema-only`: functions, triggers, grants,
  constraints, indexes), 100% coverage, and an exact `alembic downgrade 0003`. A release adds
  its scripts there.
- **Helpers are versioned by release.** A revision imports its helpers from one version,
  `migrations/shared/vN/`. A release that fixes released revisions copies the newest
  version to vN+1, fixes it there, points every revision it fixes at it, and removes what
  no revision uses any more (v1 was 1.0's, v2 1.1's, v3 1.2's, v4 is 1.3's); git keeps the old ones.
- **The pins are written with the default settings.** The script carries the run's `-x`
  settings (`lock_timeout`, `lock_patience`, `max_replica_lag`...), so changing one of their
  defaults (`app/settings.py`) moves the pins that print it: a change to those revisions,
  with its row. How the script sizes and retries its batches is the helper version's own
  (`ScriptBatches`), not the live tool's.
- **The live tool is free to change.** The rest of `app/` (the definition the commands use,
  `app/coverage.py`; their statements; plumbing: settings, connections, the lock, batching,
  names, error messages) holds no revision's SQL. The helpers take plumbing from it, which
  can change how a released revision runs (connects, retries, reports), never what SQL it
  runs.

## Changing the definition of an eligible pair

One edit in `app/`, plus one new revision:

1. Change the fragments in `app/coverage.py`; the commands use them at once.
2. Make the same change in the newest helper version, or in a new one (above) if a released
   revision uses it and the change is not a defect fix of that revision.
3. Add a revision (`alembic revision -m "..."`, written into `migrations/versions/`) that
   replaces the sync trigger's functions (`CREATE OR REPLACE`), runs a catch-up backfill
   and the coverage gate with the new definition.
4. `python -m enrollments_phase1.migrations.pins --write` pins it; its row in CHANGES.md
   says why.

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
