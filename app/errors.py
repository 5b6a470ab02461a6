"""Errors that end a command with a one-line message and a distinct exit code.

Exit codes follow ``sysexits.h`` so that none collides with the audit's 0, 1 and 2.
"""

from __future__ import annotations

from dataclasses import dataclass

EX_USAGE = 64  # bad arguments
EX_SCHEMA = 65  # the database is reachable but its schema or data is not as expected
EX_UNAVAILABLE = 69  # cannot connect: host, password, database
EX_SOFTWARE = 70  # a bug: an unexpected exception
EX_TEMPFAIL = 75  # lock or statement timeout, connection lost: run it again
EX_NOPERM = 77  # the role may not do this
EX_CONFIG = 78  # no or malformed database URL
EX_INTERRUPTED = 130  # Ctrl-C


class EnrollmentsError(Exception):
    """An error the user can act on; ``str()`` is the one-line message."""

    exit_code = EX_SOFTWARE


class UsageError(EnrollmentsError):
    exit_code = EX_USAGE


class ConfigError(EnrollmentsError):
    exit_code = EX_CONFIG


class DatabaseUnavailableError(EnrollmentsError):
    exit_code = EX_UNAVAILABLE


class SchemaError(EnrollmentsError):
    exit_code = EX_SCHEMA


class DataError(EnrollmentsError):
    """The data or the schema breaks an assumption: a constraint, a type, a sequence."""

    exit_code = EX_SCHEMA


class RetryableError(EnrollmentsError):
    """A timeout or a lost connection: nothing half-written, running again finishes."""

    exit_code = EX_TEMPFAIL


class PermissionDeniedError(EnrollmentsError):
    exit_code = EX_NOPERM


class UserInterruptError(EnrollmentsError):
    """Ctrl-C: the running statement was cancelled on the server and rolled back."""

    exit_code = EX_INTERRUPTED


@dataclass(frozen=True)
class Advice:
    """How a tool names its own settings in advice: its flags, or Alembic's ``-x`` options."""

    lock_timeout: str
    lock_patience: str
    statement_timeout: str
    rerun: str


CLI_ADVICE = Advice(
    lock_timeout="--lock-timeout",
    lock_patience="--lock-patience",
    statement_timeout="--statement-timeout",
    rerun="run the command again",
)
ALEMBIC_ADVICE = Advice(
    lock_timeout="-x lock_timeout=DURATION",
    lock_patience="-x lock_patience=DURATION",
    statement_timeout="-x statement_timeout=DURATION",
    rerun="run the alembic command again",
)
