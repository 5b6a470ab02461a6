"""Every setting of a run, once: its name, its default, how a value is read and checked.

The ``enrollments`` commands take them as options (``--lock-timeout``), Alembic as ``-x``
options (``-x lock_timeout=...``), and the batch loop (:mod:`enrollments_phase1.batching`)
starts from their defaults: all three read :data:`SETTINGS`, so that no default or check
is written twice. Output options of one command (``--json``, ``--limit``, ``--by``) are the
command's own (:mod:`enrollments_phase1.cli`).

A reader takes the text the user wrote and returns the value, or raises
:class:`SettingError` with what is wrong in words; each front end says it its own way
(``enrollments backfill: error: argument --lock-timeout: ...``, ``FAILED: -x lock_timeout:
...``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from enrollments_phase1.db import KEEP, duration_problem


class SettingError(ValueError):
    """A value a setting does not take; ``str()`` says why (no option name in it)."""


# --- readers -----------------------------------------------------------------------------
def duration(value: str) -> str:
    """A PostgreSQL duration (``500ms``, ``1.5s``, ``10 min``, ``0``), as written."""
    problem = duration_problem(value)
    if problem:
        raise SettingError(problem)
    return value.strip()


def timeout(value: str) -> str:
    """A duration PostgreSQL takes as a timeout (whole milliseconds, at most about 24 days),
    or ``keep``: set nothing, the role's or the database's setting stays."""
    if value.strip() == KEEP:
        return KEEP
    problem = duration_problem(value, timeout=True)
    if problem:
        raise SettingError(problem)
    return value.strip()


def integer(low: int, high: int) -> Callable[[str], int]:
    def read(value: str) -> int:
        if not value.strip().isdigit() or not low <= int(value) <= high:
            raise SettingError(f"must be an integer from {low:,} to {high:,}, not {value!r}")
        return int(value)

    return read


YES = ("yes", "true", "on", "1")
NO = ("no", "false", "off", "0")


def yes_no(value: str) -> bool:
    if value.strip().lower() in YES + NO:
        return value.strip().lower() in YES
    raise SettingError(f"must be yes or no, not {value!r}")


def one_of(*choices: str) -> Callable[[str], str]:
    def read(value: str) -> str:
        if value not in choices:
            raise SettingError(f"must be one of {', '.join(choices)}, not {value!r}")
        return value

    return read


def schema_name(value: str) -> str:
    if not value or len(value.encode()) > 63 or "\x00" in value:
        raise SettingError(f"{value!r} is not a schema name")
    return value


# --- the table ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    """One setting. ``name`` is its ``-x`` name (``x=False``: no ``-x`` option);
    ``commands`` the ``enrollments`` commands that take it as ``flag``; ``default`` what a
    run uses when it is not given (None: unset), ``command_defaults`` where a command's
    differs."""

    name: str
    read: Callable[[str], Any]
    default: str | None
    metavar: str
    help: str
    x: bool = True
    commands: tuple[str, ...] = ()
    flag_name: str | None = None
    command_defaults: Mapping[str, str] = field(default_factory=dict)

    @property
    def flag(self) -> str:
        return f"--{(self.flag_name or self.name).replace('_', '-')}"

    def default_for(self, command: str | None = None) -> str | None:
        """The default of ``enrollments COMMAND`` (None: Alembic's ``-x``)."""
        return self.command_defaults.get(command or "", self.default)

    def value(self, given: str | None, command: str | None = None) -> Any:
        """The value of a run: what was given, read, else the default, read."""
        raw = given if given is not None else self.default_for(command)
        return None if raw is None else self.read(raw)


MAX_BATCH = 1_000_000

SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting(
            "lock_timeout",
            timeout,
            "500ms",
            "DURATION",
            "how long one attempt of a statement waits for a lock; a step or batch that "
            "gives up is retried with backoff and jitter until the lock patience, so nobody "
            "queues long behind a lock request of ours (keep: the role's setting)",
            commands=("audit", "backfill"),
            command_defaults={"audit": "5s"},  # the audit only reads
        ),
        Setting(
            "lock_patience",
            duration,
            "10min",
            "DURATION",
            "how long a step or batch keeps retrying for its locks, and a run waits for the "
            "enrollments lock, before it stops",
            commands=("backfill",),
        ),
        Setting(
            "statement_timeout",
            timeout,
            "0",
            "DURATION",
            "a cap on each statement (0: none; keep: the role's setting)",
            commands=("audit", "backfill"),
            # An index build may take hours; a command's statements are batches and counts.
            command_defaults={"audit": "15min", "backfill": "15min"},
        ),
        Setting(
            "backfill_batch_size",
            integer(1, MAX_BATCH),
            None,
            "N",
            "a fixed number of pairs per batch of the backfill (of records, for its undo), "
            "instead of sizes that follow a 100 ms target",
            commands=("backfill",),
            flag_name="batch_size",
        ),
        Setting(
            "backfill_one_statement",
            yes_no,
            "no",
            "yes|no",
            "the backfill in one statement, one transaction, instead of batches",
            commands=("backfill",),
            flag_name="one_statement",
        ),
        Setting(
            "max_replica_lag",
            duration,
            "10s",
            "DURATION",
            "before each batch, wait while a standby is further behind (0: do not wait); "
            "given explicitly, a lag the role cannot read stops the run",
            commands=("backfill",),
        ),
        Setting(
            "hold_on_vacuum",
            yes_no,
            "yes",
            "yes|no",
            "before each batch, wait while a VACUUM or autovacuum works on course_enrollments "
            "or group_members",
            commands=("backfill",),
        ),
        Setting(
            "max_xmin_age",
            duration,
            "1h",
            "DURATION",
            "before each batch, wait while a transaction or snapshot of this database older "
            "than this holds back the xmin horizon (0: do not wait)",
            commands=("backfill",),
        ),
        Setting(
            "max_archive_backlog",
            integer(0, 1_000_000),
            "100",
            "N",
            "before each batch, wait while more than N WAL files wait to be archived, where "
            "archiving is on (0: do not wait)",
            commands=("backfill",),
        ),
        Setting(
            "pause_patience",
            duration,
            "1h",
            "DURATION",
            "how long a batched run waits while paused (enrollments pause) before it stops, "
            "resumable, exit 75",
            commands=("backfill",),
        ),
        Setting(
            "coverage_gate",
            one_of("abort", "warn"),
            "abort",
            "abort|warn",
            "what the coverage gate does below 100%: warn is for emergencies, logged loudly",
        ),
        Setting(
            "drop_legacy_schema",
            yes_no,
            "no",
            "yes|no",
            "let downgrade base drop legacy tables that hold rows",
        ),
        Setting(
            "legacy_schema",
            schema_name,
            None,
            "NAME",
            "the schema of the legacy tables (online: found through the URL's search_path; "
            "offline: public)",
        ),
        Setting(
            "undo_referenced",
            one_of("keep", "refuse"),
            "keep",
            "keep|refuse",
            "what the undo does with a recorded enrollment another table references",
        ),
        Setting(
            "undo_after_move",
            one_of("refuse", "values"),
            "refuse",
            "refuse|values",
            "what the undo does when the database was moved since the backfill (a dump and "
            "restore, logical replication, a table rewrite): refuse keeps the record and "
            "changes nothing; values undoes what is still active for its pair",
        ),
    )
}

X_OPTIONS = tuple(name for name, s in SETTINGS.items() if s.x)


def for_command(command: str) -> list[Setting]:
    """The settings ``enrollments COMMAND`` takes as options, in the table's order."""
    return [s for s in SETTINGS.values() if command in s.commands]
