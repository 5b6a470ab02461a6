"""Database URL, engine and the translation of driver errors into one-line messages."""

from __future__ import annotations

import logging
import os
import re
import time

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from app.errors import (
    ConfigError,
    DatabaseUnavailableError,
    EnrollmentsError,
    PermissionDeniedError,
    RetryableError,
    SchemaError,
)

log = logging.getLogger(__name__)

URL_ENV = "DATABASE_URL"
LOCK_POLL_SECONDS = 0.5
NO_URL_MESSAGE = (
    f"no database URL: set {URL_ENV} (for example postgresql://user:password@host:5432/dbname)"
)


# A PostgreSQL duration as SET lock_timeout takes it: 0, 500ms, 5s, 2min, ...
DURATION = re.compile(r"^\d+\s*(us|ms|s|min|h|d)?$")


def is_duration(value: str) -> bool:
    """Whether ``value`` is a duration we pass to PostgreSQL (checked: it is quoted in SQL)."""
    return bool(DURATION.match(value.strip()))


def parse_url(raw: str) -> URL:
    """Parse and check a PostgreSQL URL; ``postgresql://`` means psycopg2."""
    try:
        url = make_url(raw.strip())
    except (ArgumentError, ValueError) as exc:
        raise ConfigError(f"malformed database URL: {exc}") from None
    if url.get_backend_name() != "postgresql":
        raise ConfigError(
            f"unsupported database URL scheme {url.drivername!r}: expected postgresql://"
        )
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg2")
    if url.drivername != "postgresql+psycopg2":
        raise ConfigError(
            f"unsupported driver {url.drivername!r}: use postgresql:// or postgresql+psycopg2://"
        )
    return url


def resolve_url(explicit: str | None = None, via_cli: bool = False) -> URL:
    """The URL given on the command line, else ``DATABASE_URL``; never a silent default."""
    raw = explicit if explicit else os.environ.get(URL_ENV, "")
    if not raw.strip():
        hint = " or pass --database-url" if explicit is not None or via_cli else ""
        raise ConfigError(NO_URL_MESSAGE + hint)
    return parse_url(raw)


def make_engine(url: URL, application_name: str = "enrollments") -> Engine:
    """An engine that fails fast when the server is unreachable."""
    return create_engine(
        url,
        pool_pre_ping=False,
        connect_args={"connect_timeout": 10, "application_name": application_name},
    )


def _first_line(message: str) -> str:
    for line in str(message).splitlines():
        line = line.strip()
        if line:
            return re.sub(r"^(FATAL|ERROR):\s+", "", line)
    return "unknown error"


def connect_error(exc: BaseException, url: URL) -> EnrollmentsError:
    """An error raised while connecting: the server, the role or the database is wrong."""
    detail = _first_line(str(getattr(exc, "orig", exc)))
    return DatabaseUnavailableError(
        f"cannot connect to {url.render_as_string(hide_password=True)}: {detail}"
    )


def translate_db_error(exc: BaseException) -> EnrollmentsError:
    """Map an error raised while working to an :class:`EnrollmentsError`, one line."""
    if isinstance(exc, EnrollmentsError):
        return exc
    orig = getattr(exc, "orig", exc)
    pgcode = getattr(orig, "pgcode", None) or ""
    detail = _first_line(str(orig))
    if pgcode == "55P03":
        return RetryableError(
            f"gave up waiting for a lock (lock_timeout): {detail}; another transaction "
            "holds it; the statement that waited wrote nothing; run again later"
        )
    if pgcode == "57014":
        return RetryableError(
            f"statement timeout: {detail}; the statement wrote nothing; "
            "raise --statement-timeout or use --batch-size"
        )
    if pgcode in ("40P01", "40001"):
        return RetryableError(
            f"{detail} (a concurrent writer); the transaction was rolled back; run again"
        )
    if pgcode in ("42501", "25006"):
        return PermissionDeniedError(f"permission denied: {detail}")
    if pgcode.startswith("42"):
        return SchemaError(f"schema not as expected: {detail}; is the database migrated?")
    if (
        pgcode.startswith("08")
        or pgcode.startswith("57P")
        or (isinstance(exc, DBAPIError) and exc.connection_invalidated)
    ):
        return RetryableError(f"lost the connection to the database: {detail}; run again")
    return EnrollmentsError(f"database error: {detail}")


def wait_for_advisory_lock(connection: Connection, key: int, holder: str) -> None:
    """Take session advisory lock ``key``, waiting while ``holder`` has it.

    Polled in short transactions (``connection`` must not be in one): a session blocked
    inside a transaction holds a snapshot, and a concurrent CREATE INDEX CONCURRENTLY
    waits for every such snapshot, which would deadlock.
    """
    try_lock = text("SELECT pg_try_advisory_lock(:key)")
    logged = False
    while True:
        with connection.begin():
            if connection.execute(try_lock, {"key": key}).scalar_one():
                return
        if not logged:
            log.info("%s is running elsewhere; waiting for it to finish", holder)
            logged = True
        time.sleep(LOCK_POLL_SECONDS)


def release_advisory_lock(connection: Connection, key: int) -> None:
    """Release ``key``; quietly, since the connection may be the thing that failed."""
    try:
        if connection.in_transaction():
            connection.rollback()
        with connection.begin():
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
    except Exception:
        log.debug("advisory lock %d not released: the connection is gone", key)
