"""Database URL, engine and the translation of driver errors into one-line messages."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import select
import signal
import socket
import threading
import time
from collections.abc import Iterator

import psycopg2
import psycopg2.extensions
from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from enrollments_phase1.errors import (
    CLI_ADVICE,
    Advice,
    ConfigError,
    DatabaseUnavailableError,
    DataError,
    EnrollmentsError,
    PermissionDeniedError,
    RetryableError,
    SchemaError,
    UserInterruptError,
)
from enrollments_phase1.names import PINNED_SEARCH_PATH, quote_literal

log = logging.getLogger(__name__)

URL_ENV = "DATABASE_URL"
NO_URL_MESSAGE = (
    f"no database URL: set {URL_ENV} (for example postgresql://user:password@host:5432/dbname)"
)


# A PostgreSQL duration as SET lock_timeout takes it: a number, decimals allowed, with an
# optional unit (none means milliseconds), space between them allowed: 0, 500ms, 1.5s, 2 min.
DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(us|ms|s|min|h|d)?$")
UNIT_SECONDS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
KEEP = "keep"  # a timeout value that sets nothing: the role's or the database's stays


def is_duration(value: str) -> bool:
    """Whether ``value`` is a duration we pass to PostgreSQL (checked: it is quoted in SQL)."""
    return bool(DURATION.match(value.strip()))


MAX_TIMEOUT_MS = 2_147_483_647  # what PostgreSQL takes for lock_timeout, statement_timeout
NEGATIVE = re.compile(r"^-\s*\d")


def duration_problem(value: str, timeout: bool = False) -> str | None:
    """Why ``value`` is not a duration we may pass on, or None. For a ``timeout``
    (PostgreSQL counts those in whole milliseconds), also what it would reject or round to
    0, which means no limit at all."""
    value = value.strip()
    if NEGATIVE.match(value):
        return f"must not be negative, not {value!r}"
    if not is_duration(value):
        return (
            "must be a PostgreSQL duration such as 5s, 1.5s, 500ms, 10 min or 0 (none), "
            f"not {value!r}"
        )
    milliseconds = duration_seconds(value) * 1000
    if timeout and 0 < milliseconds < 1:
        return (
            f"{value!r} is under 1 ms, which PostgreSQL rounds to 0, no limit at all: give 1ms "
            "or more, or 0 for no limit"
        )
    if milliseconds > MAX_TIMEOUT_MS:
        return (
            f"{value!r} is more than PostgreSQL takes: at most {MAX_TIMEOUT_MS}ms (about "
            f"{MAX_TIMEOUT_MS / 86_400_000:.1f} days)"
        )
    return None


def duration_seconds(value: str) -> float:
    """A duration in seconds (a bare number is milliseconds, as PostgreSQL reads it)."""
    match = DURATION.match(value.strip())
    if match is None:
        raise ValueError(f"not a duration: {value!r}")
    return float(match.group(1)) * UNIT_SECONDS[match.group(2) or "ms"]


def run_settings(lock_timeout: str, statement_timeout: str) -> list[tuple[str, str]]:
    """(name, value) of what every transaction of a command or a migration sets: the
    pinned search_path (``enrollments_phase1.names``) and the timeouts (none for ``keep``:
    the role's or the database's setting stays)."""
    values = [("search_path", PINNED_SEARCH_PATH)]
    values += [
        (name, value)
        for name, value in (
            ("lock_timeout", lock_timeout),
            ("statement_timeout", statement_timeout),
        )
        if value != KEEP
    ]
    return values


def local_settings_sql(settings: list[tuple[str, str]]) -> list[str]:
    """``SET LOCAL`` of ``settings``: first in every transaction, gone when it ends."""
    return [
        f"SET LOCAL {name} = {value if name == 'search_path' else quote_literal(value)}"
        for name, value in settings
    ]


URL_CHARACTERS = (
    "if the user name or the password contains @ : / % # ? or a space, percent-encode it "
    "(@ is %40, : is %3A, / is %2F, % is %25, # is %23)"
)


BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _ambiguous(raw: str) -> bool:
    """Whether a user name or a password holds a character that must be percent-encoded:
    more than one ``@`` after the scheme, ``/ ? #`` or a space before the ``@``. Left to
    the parser, such a URL splits inside the password, and a piece of it ends up in the
    host, the user name or the database, which messages print."""
    _, _, rest = raw.partition("://")
    if rest.count("@") > 1:
        return True
    userinfo, at, _ = rest.partition("@")
    return bool(at) and any(c in userinfo for c in "/?# ")


def _what_is_wrong(raw: str) -> str:
    """Why a URL does not parse, without repeating any of it (it may hold a password)."""
    scheme, sep, rest = raw.partition("://")
    if not sep or not scheme:
        return "expected postgresql://user:password@host:port/database"
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0].rpartition("@")[2]
    port = authority.rpartition("]")[2] if authority.startswith("[") else authority
    if ":" in port and not port.partition(":")[2].isdigit():
        return "the port after the host is not a number (host:5432)"
    if any(c in rest.rpartition("@")[0] for c in "@:/%#? "):
        return URL_CHARACTERS
    return "expected postgresql://user:password@host:port/database"


def parse_url(raw: str) -> URL:
    """Parse and check a PostgreSQL URL; ``postgresql://`` and ``postgres://`` mean psycopg2.

    A malformed URL's message never repeats any part of it (it may hold a password).
    """
    raw = raw.strip()
    if raw.startswith("postgres://"):  # libpq's short form; SQLAlchemy does not take it
        raw = "postgresql://" + raw[len("postgres://") :]
    if BAD_PERCENT.search(raw):  # libpq rejects it too ("invalid percent-encoded token")
        raise ConfigError(
            "malformed database URL: a % that does not start a percent-encoded byte; "
            + URL_CHARACTERS
        )
    if _ambiguous(raw):
        raise ConfigError(f"malformed database URL: {URL_CHARACTERS}")
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):
        raise ConfigError(f"malformed database URL: {_what_is_wrong(raw)}") from None
    if url.get_backend_name() != "postgresql":
        raise ConfigError(
            f"unsupported database URL scheme {url.drivername!r}: expected postgresql://"
        )
    timeout = url.query.get("connect_timeout")
    if timeout is not None and not (isinstance(timeout, str) and timeout.strip().isdigit()):
        raise ConfigError(
            "malformed database URL: connect_timeout must be a whole number of seconds"
            f" (?connect_timeout=10), not {timeout!r}"
        )
    if url.drivername == "postgresql":
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


def connect_timeout(url: URL) -> float:
    """Seconds a connection may take: the URL's ``connect_timeout`` (libpq's parameter),
    else ``PGCONNECT_TIMEOUT``, else 10. Bounded (0 or less, or not a number: the default),
    as the same for Alembic and the commands."""
    raw = url.query.get("connect_timeout") or os.environ.get("PGCONNECT_TIMEOUT") or ""
    if isinstance(raw, tuple):
        raw = raw[-1]
    try:
        seconds = float(raw)
    except ValueError:
        return DEFAULT_CONNECT_TIMEOUT
    return seconds if seconds > 0 else DEFAULT_CONNECT_TIMEOUT


def make_engine(url: URL, application_name: str = "enrollments") -> Engine:
    """An engine that fails fast when the server is unreachable or never answers: each of
    its connections carries its own ``connect_timeout`` (whole seconds, as libpq takes it),
    which the wait callback below reads from the connection itself."""
    query = {k: v for k, v in url.query.items() if k != "connect_timeout"}
    return create_engine(
        url.set(query=query),
        pool_pre_ping=False,
        connect_args={
            "connect_timeout": max(1, round(connect_timeout(url))),
            "application_name": application_name,
        },
    )


def _first_line(message: str) -> str:
    for line in str(message).splitlines():
        line = line.strip()
        if line:
            return re.sub(r"^(FATAL|ERROR):\s+", "", line)
    return "unknown error"


STATEMENT_POOLING = (
    "the connection pooler runs in statement mode, which allows no transaction of more "
    "than one statement, and every step here is one: connect directly to the server (for "
    "example a DATABASE_URL for migrations on the server's own port) or through a pooler "
    "in transaction or session mode"
)


def _statement_pooling(detail: str) -> bool:
    return "statement pooling mode" in detail


def connect_error(exc: BaseException, url: URL) -> EnrollmentsError:
    """An error raised while connecting: the server, the role or the database is wrong."""
    detail = _first_line(str(getattr(exc, "orig", exc)))
    if _statement_pooling(detail):
        return ConfigError(f"{STATEMENT_POOLING} ({detail})")
    return DatabaseUnavailableError(
        f"cannot connect to {url.render_as_string(hide_password=True)}: {detail}"
    )


def _named(orig: BaseException, detail: str) -> str:
    """The error's message, with the table, column and constraint it names."""
    diag = getattr(orig, "diag", None)
    names = [
        f"{label} {value}"
        for label, value in (
            ("table", getattr(diag, "table_name", None)),
            ("column", getattr(diag, "column_name", None)),
            ("constraint", getattr(diag, "constraint_name", None)),
        )
        if value and value not in detail
    ]
    return f"{detail} ({', '.join(names)})" if names else detail


# The lock session is idle in transaction for the whole run, by design (it sets
# idle_in_transaction_session_timeout = 0 for its transaction): whatever ends such sessions
# ends the run's lock.
LOST_LOCK_WHY = (
    "The lock session stays idle in transaction for the whole run, by design; something that "
    "ends such sessions ended it: a connection pooler's idle_transaction_timeout (PgBouncer), "
    "a job or a person running pg_terminate_backend on sessions idle in transaction. Exempt "
    "this role or database from it (PgBouncer: idle_transaction_timeout = 0)"
)


def translate_db_error(exc: BaseException, advice: Advice = CLI_ADVICE) -> EnrollmentsError:
    """Map an error raised while working to an :class:`EnrollmentsError`, one line.

    ``advice`` names the settings of the tool that is running (its flags, or Alembic's
    ``-x`` options), so that what the message tells the user to change exists.
    """
    if isinstance(exc, EnrollmentsError):
        return exc
    orig = getattr(exc, "orig", exc)
    pgcode = getattr(orig, "pgcode", None) or ""
    detail = _first_line(str(orig))
    if _statement_pooling(detail):
        return ConfigError(f"{STATEMENT_POOLING} ({detail})")
    if interrupted():  # whatever ended the statement (the cancel, or a timeout racing it)
        return UserInterruptError(
            "interrupted: the running statement was cancelled on the server and its "
            "transaction rolled back"
        )
    if pgcode == "55000" and detail.startswith("lost the enrollments lock"):
        return RetryableError(
            f"{detail}. {LOST_LOCK_WHY}; {advice.rerun}: it goes on from where it stopped"
        )
    if pgcode == "55P03":
        return RetryableError(
            f"gave up waiting for a lock (lock_timeout): {detail}; another transaction "
            f"holds it and this one was rolled back; {advice.rerun} later, or raise "
            f"{advice.lock_timeout} or {advice.lock_patience}"
        )
    if pgcode == "57014":
        return RetryableError(
            f"statement timeout: {detail}; the transaction was rolled back; raise "
            f"{advice.statement_timeout} (0: none)"
        )
    if pgcode in ("40P01", "40001"):
        return RetryableError(
            f"{detail} (a concurrent writer); the transaction was rolled back; {advice.rerun}"
        )
    if pgcode in ("42501", "25006"):
        return PermissionDeniedError(f"permission denied: {detail}")
    if pgcode.startswith("23") or pgcode in ("2200H", "22003", "22P02"):
        return DataError(f"the data or the schema is not as expected: {_named(orig, detail)}")
    if pgcode.startswith("42"):
        return SchemaError(f"schema not as expected: {detail}")
    if (
        pgcode.startswith("08")
        or pgcode.startswith("57P")
        or (isinstance(exc, DBAPIError) and exc.connection_invalidated)
    ):
        return RetryableError(f"lost the connection to the database: {detail}; {advice.rerun}")
    return EnrollmentsError(f"database error: {detail}")


# --- Ctrl-C and connecting --------------------------------------------------------------
# psycopg2 waits for the server inside libpq, where Python cannot raise KeyboardInterrupt.
# With this wait callback it waits in select() instead; Ctrl-C there sends a cancel request
# to the server (the statement stops and its transaction rolls back) and the error that
# comes back is reported as an interruption, exit 130.
#
# A wait callback makes libpq connect asynchronously, and then libpq's connect_timeout no
# longer applies: so the callback bounds the connect phase itself (the connection's own
# connect_timeout, from its DSN, seconds from the first wait), or a server that accepts the
# connection and never answers would hang every command.
#
# Through a connection pooler, a query may wait in the pooler's queue for a server
# connection: a cancel request never reaches it (the server does not know the query yet).
# So after Ctrl-C the callback waits CANCEL_GRACE_SECONDS for the server's answer, and a
# second Ctrl-C or the end of that grace closes the connection instead. The same closing
# bounds a query run inside answered_within().
_interrupted = False
DEFAULT_CONNECT_TIMEOUT = 10.0
CANCEL_GRACE_SECONDS = 3.0
CONNECTING = {psycopg2.extensions.STATUS_SETUP, 20}  # 20: psycopg2's "connecting"
_answer_by: tuple[float, str] | None = None  # (monotonic deadline, the error's message)
CLOSED_AFTER_CANCEL = (
    "the server did not answer the cancel request within {seconds:g} s (the query may be "
    "queued in a connection pooler, waiting for a server connection): the connection was "
    "closed instead"
)


@contextlib.contextmanager
def answered_within(seconds: float, message: str) -> Iterator[None]:
    """Statements run inside must be answered within ``seconds``; else their connection is
    closed and psycopg2.OperationalError(``message``) raised."""
    global _answer_by
    _answer_by = (time.monotonic() + seconds, message)
    try:
        yield
    finally:
        _answer_by = None


def _connect_seconds(conn) -> float:
    """The connect_timeout this connection was opened with (make_engine sets one)."""
    try:
        seconds = float(psycopg2.extensions.parse_dsn(conn.dsn).get("connect_timeout", ""))
    except (ValueError, psycopg2.ProgrammingError):
        return DEFAULT_CONNECT_TIMEOUT
    return seconds if seconds > 0 else DEFAULT_CONNECT_TIMEOUT


def _select(conn, state: int, timeout: float | None) -> bool:
    """Wait until ``conn`` can go on; False when ``timeout`` passed first."""
    if state == psycopg2.extensions.POLL_READ:
        ready = select.select([conn.fileno()], [], [], timeout)
        return bool(ready[0])
    if state == psycopg2.extensions.POLL_WRITE:
        ready = select.select([], [conn.fileno()], [], timeout)
        return bool(ready[1])
    raise conn.OperationalError(f"bad state from poll: {state}")


def _close(conn) -> None:
    """Close ``conn`` from inside its wait: while a query runs psycopg2 holds the
    connection's lock (``close()`` would wait for itself), so shut its socket down; libpq
    then finds it closed."""
    if conn.status in CONNECTING:
        conn.close()
        return
    with contextlib.suppress(OSError):
        socket.socket(fileno=os.dup(conn.fileno())).shutdown(socket.SHUT_RDWR)


def _wait_cancelling_on_interrupt(conn) -> None:
    global _interrupted
    # psycopg2 calls this once per wait, the whole connect included: the deadline lives
    # here (keyed on nothing that a later connection could reuse).
    deadline = seconds = None
    cancelled_at: float | None = None
    while True:
        try:
            state = conn.poll()
            if state == psycopg2.extensions.POLL_OK:
                return
            timeout, why = None, ""
            if conn.status in CONNECTING:
                seconds = seconds or _connect_seconds(conn)
                deadline = deadline or time.monotonic() + seconds
                timeout = max(0.0, deadline - time.monotonic())
                why = (
                    f"timeout expired: the server did not answer within {seconds:g} s of "
                    "connecting (connect_timeout)"
                )
            grace = cancelled_at and cancelled_at + CANCEL_GRACE_SECONDS
            for until, message in (
                (grace, CLOSED_AFTER_CANCEL.format(seconds=CANCEL_GRACE_SECONDS)),
                _answer_by or (None, ""),
            ):
                if until is not None and (timeout is None or until - time.monotonic() < timeout):
                    timeout = max(0.0, until - time.monotonic())
                    why = message
            if not _select(conn, state, timeout):
                _close(conn)
                raise psycopg2.OperationalError(why)
        except KeyboardInterrupt:
            _interrupted = True
            if conn.status in CONNECTING:  # nothing runs on the server yet
                raise
            if cancelled_at is not None:  # a second Ctrl-C: do not wait any longer
                _close(conn)
                raise psycopg2.OperationalError(
                    "interrupted twice: the connection was closed without waiting"
                ) from None
            try:
                conn.cancel()
            except psycopg2.Error:  # not connected yet: nothing runs on the server
                raise KeyboardInterrupt from None
            cancelled_at = time.monotonic()


def _note_interrupt(signum: int, frame: object) -> None:
    """SIGINT: remember it, then raise as Python does. Remembered here, not only in the wait
    callback: a Ctrl-C that lands while psycopg2 runs C code outside the callback surfaces
    as a driver error of its own (an empty message), which must still read as Ctrl-C."""
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def install_interrupt_handling() -> None:
    """Make Ctrl-C cancel the running statement on the server (see above)."""
    psycopg2.extensions.set_wait_callback(_wait_cancelling_on_interrupt)
    main = threading.current_thread() is threading.main_thread()
    if main and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _note_interrupt)


def interrupted() -> bool:
    """Whether Ctrl-C was pressed while a statement ran."""
    return _interrupted


def stop_if_interrupted() -> None:
    """Between two steps (batches, revisions): stop if Ctrl-C came while the last one ran.

    Its cancel request may reach the server after the statement finished, which then
    succeeds: without this check the run would go on as if nothing had been pressed."""
    if _interrupted:
        raise KeyboardInterrupt


# --- connection poolers ------------------------------------------------------------------
POOLED = "enrollments.behind_pooler"


def behind_pooler(connection: Connection) -> bool:
    """Whether a connection pooler (PgBouncer, ...) stands between us and the server.

    The backend pid the server announces at connect (libpq's key data) is the one that
    answers ``pg_backend_pid()`` on a direct connection, always; a pooler announces a key
    of its own (measured with PgBouncer 1.18 in every pool mode). Asked once per connection.
    """
    found = connection.info.get(POOLED)
    if found is None:
        announced = connection.connection.dbapi_connection.info.backend_pid
        actual = connection.exec_driver_sql("SELECT pg_catalog.pg_backend_pid()").scalar_one()
        found = connection.info[POOLED] = announced != actual
    return found


POOL_PROBE_SECONDS = 5.0
POOL_PROBE_TIMEOUT = "no server connection answered in time"


def check_pool_room(connection: Connection, needed: int, who: str, uses: str) -> None:
    """Through a pooler, once the lock session holds its server connection: ``needed``
    server connections answer at once (the lock session's, ``connection``'s and more for
    the run's watchers), each within POOL_PROBE_SECONDS; else stop before anything starts,
    naming the pool size to set. With a pool of 1 every query of the run queued behind the
    lock session for ever (or until PgBouncer's query_wait_timeout, on every re-run)."""
    held: list[Connection] = []
    got = 1  # the lock session's
    try:
        with answered_within(POOL_PROBE_SECONDS, POOL_PROBE_TIMEOUT):
            while got < needed:
                probe = connection if got == 1 else connection.engine.connect()
                if probe is not connection:
                    held.append(probe)
                probe.exec_driver_sql("SELECT 1")  # in a transaction: it keeps its connection
                got += 1
    except DBAPIError as exc:
        if POOL_PROBE_TIMEOUT not in str(exc.orig):
            raise
        raise ConfigError(
            f"{who}: the connection pooler gives this run {got} server connection"
            f"{'' if got == 1 else 's'} at once (the next one waited {POOL_PROBE_SECONDS:g} s "
            f"in its queue), and it needs {needed}: {uses}. Set this database's pool to at "
            f"least {needed} plus what the application holds at once (PgBouncer: "
            "default_pool_size, or pool_size in [databases]), or connect directly; nothing "
            "was changed"
        ) from None
    finally:
        for probe in held:
            with contextlib.suppress(Exception):
                probe.close()
        with contextlib.suppress(Exception):
            connection.rollback()


POOLER_NOTE = (
    "connected through a connection pooler (the server's process id differs from the one "
    "announced at connect): every setting is SET LOCAL and the enrollments lock is held in "
    "a transaction of its own, so nothing is left on a pooled server connection"
)


# --- every transaction of a run --------------------------------------------------------
PRELUDE = "enrollments.transaction_prelude"


def set_transaction_prelude(connection: Connection, statements: list[str]) -> None:
    """Run ``statements`` first in every transaction ``connection`` begins from now on.

    The settings of a run (the pinned ``search_path``, ``lock_timeout``,
    ``statement_timeout``) are ``SET LOCAL``: they end with the transaction, so that
    through a connection pooler none of them is left on a server connection another
    client gets next. The prelude may also check that the run still holds its lock.
    """
    first = not connection.info.get(PRELUDE)
    connection.info[PRELUDE] = ";\n".join(statements)
    if first and not event.contains(connection, "begin", _on_begin):
        event.listen(connection, "begin", _on_begin)


def clear_transaction_prelude(connection: Connection) -> None:
    connection.info.pop(PRELUDE, None)


# SQL run as written (no parameter parsing): its % are format()'s and LIKE's, not psycopg2's.
LITERAL = {"no_parameters": True}


def run_prelude(connection: Connection) -> None:
    """The prelude, in a transaction just begun with a plain ``BEGIN`` (autocommit mode)."""
    prelude = connection.info.get(PRELUDE)
    if prelude:
        connection.exec_driver_sql(prelude, execution_options={"no_parameters": True})


def _on_begin(connection: Connection) -> None:
    if connection.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        return  # no transaction on the server: a BEGIN of ours will run it (run_prelude)
    run_prelude(connection)
