"""The pinned SQL of every revision: what it writes offline, upgrade and downgrade.

A released revision must do the same in a year as today. Its offline SQL (the script
``alembic upgrade --sql`` writes, which is also what it runs online, statement for
statement) is checked in under ``migrations/pinned/``, one file per revision, and
``tests/test_pins.py`` fails when a revision writes anything else. A deliberate change,
allowed only to fix a defect, rewrites the pin in the same commit and adds a line for the
new digest with the reason to ``migrations/pinned/CHANGES.md``:

    python -m enrollments_phase1.migrations.pins --write     # rewrite the pins from the revisions
    python -m enrollments_phase1.migrations.pins             # check them (what the test does)
"""

from __future__ import annotations

import argparse
import hashlib
import io
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

ROOT = Path(__file__).resolve().parent.parent
PIN_DIR = Path(__file__).resolve().parent / "pinned"
CHANGES = PIN_DIR / "CHANGES.md"

# Where Alembic's own bookkeeping starts: the end of a revision's section.
VERSION_STATEMENT = re.compile(r"^(INSERT INTO|UPDATE|DELETE FROM) (\S+\.)?alembic_version\b")


@dataclass(frozen=True)
class RevisionSQL:
    """The offline SQL one revision writes, in both directions."""

    revision: str
    down_revision: str | None
    upgrade: str
    downgrade: str

    @property
    def text(self) -> str:
        """The pin file's body (without its header)."""
        down = self.down_revision or "base"
        return (
            f"-- ==== upgrade {down} -> {self.revision} ====\n\n{self.upgrade}\n\n"
            f"-- ==== downgrade {self.revision} -> {down} ====\n\n{self.downgrade}\n"
        )

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:12]


def _config(ini: Path, buffer: io.StringIO) -> Config:
    config = Config(str(ini), output_buffer=buffer)
    config.attributes["configure_logger"] = False
    return config


def section(script: str, revision: str) -> str:
    """The part of an offline script that one revision wrote.

    From Alembic's ``-- Running upgrade/downgrade`` comment to just before it records the
    new version; the environment's prologue and checks around it are not the revision's.
    """
    lines = script.splitlines()
    start = next(
        i
        for i, line in enumerate(lines)
        if line.startswith("-- Running ") and re.search(rf"\b{revision}\b", line)
    )
    end = next(i for i in range(start, len(lines)) if VERSION_STATEMENT.match(lines[i]))
    return "\n".join(lines[start:end]).strip()


def revision_sql(ini: Path = ROOT / "alembic.ini") -> list[RevisionSQL]:
    """Every revision's offline SQL, base first, as the scripts write it today."""
    script_dir = ScriptDirectory.from_config(Config(str(ini)))
    pins = []
    for rev in reversed(list(script_dir.walk_revisions())):
        down = rev.down_revision
        up_buffer, down_buffer = io.StringIO(), io.StringIO()
        start = f"{down}:" if down else ""
        command.upgrade(_config(ini, up_buffer), f"{start}{rev.revision}", sql=True)
        command.downgrade(_config(ini, down_buffer), f"{rev.revision}:{down or 'base'}", sql=True)
        pins.append(
            RevisionSQL(
                revision=rev.revision,
                down_revision=down,
                upgrade=section(up_buffer.getvalue(), rev.revision),
                downgrade=section(down_buffer.getvalue(), rev.revision),
            )
        )
    return pins


def pin_path(revision: str) -> Path:
    return PIN_DIR / f"{revision}.sql"


HEADER = """-- Pinned offline SQL of revision {revision}; digest {digest}.
-- Written by `python -m enrollments_phase1.migrations.pins --write`. tests/test_pins.py
-- fails when the revision writes anything else. A released revision changes only to fix a
-- defect: rewrite this file in the same commit and give the reason in
-- migrations/pinned/CHANGES.md.

"""


def pin_text(pin: RevisionSQL) -> str:
    return HEADER.format(revision=pin.revision, digest=pin.digest) + pin.text


def pinned_body(revision: str) -> str | None:
    """The pin file's body as checked in, or None when there is none."""
    path = pin_path(revision)
    if not path.exists():
        return None
    text = path.read_text()
    return text[text.index("-- ==== ") :] if "-- ==== " in text else text


def digests_with_reasons() -> dict[str, set[str]]:
    """Digests that CHANGES.md gives a reason for, by revision.

    A row of its table: ``| revision | digest | release | reason |``.
    """
    found: dict[str, set[str]] = {}
    if not CHANGES.exists():
        return found
    for line in CHANGES.read_text().splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and re.fullmatch(r"\d{4}", cells[0]) and cells[3]:
            found.setdefault(cells[0], set()).add(cells[1])
    return found


def problems(pins: list[RevisionSQL]) -> list[str]:
    """Why the checked-in pins do not match the revisions (empty when they do)."""
    out = []
    reasons = digests_with_reasons()
    for pin in pins:
        body = pinned_body(pin.revision)
        if body is None:
            out.append(f"{pin.revision}: no pin ({pin_path(pin.revision).name} missing)")
        elif body != pin.text:
            out.append(
                f"{pin.revision}: its SQL changed (digest now {pin.digest}). A released "
                "revision changes only to fix a defect: python -m "
                "enrollments_phase1.migrations.pins --write, and give the reason in "
                "migrations/pinned/CHANGES.md"
            )
        elif pin.digest not in reasons.get(pin.revision, set()):
            out.append(
                f"{pin.revision}: digest {pin.digest} has no line in migrations/pinned/CHANGES.md"
            )
    known = {pin.revision for pin in pins}
    out += [
        f"{path.name}: a pin for a revision that does not exist"
        for path in sorted(PIN_DIR.glob("*.sql"))
        if path.stem not in known
    ]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the pins")
    args = parser.parse_args(argv)
    pins = revision_sql()
    if args.write:
        PIN_DIR.mkdir(exist_ok=True)
        for pin in pins:
            pin_path(pin.revision).write_text(pin_text(pin))
            print(f"{pin.revision}: {pin.digest}")
        return 0
    found = problems(pins)
    for line in found:
        print(line, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
