"""Batches that stay short on a busy database: sized, paced, retried. Plumbing, no SQL of
the data it changes.

The caller gives a *step*: one statement that processes the slice of rows after a key,
at most N rows, commits nothing itself and says how far it got. This module runs steps one
transaction each, the way GitLab runs batched background migrations:

- **sized toward a target duration** (default 100 ms: an application write that meets a
  batch's row lock waits for about one batch, and the bench's writer goal is 100 ms at
  most): the size follows a moving average of recent durations, by at most x1.5 up or
  x0.5 down a step, within [min, max];
- **paced on the database's health**: before each batch, the replication lag of every
  standby in ``pg_stat_replication``, in bytes and in time; while the worst is above the
  bound, it waits and says why (see :class:`ReplicaLag`);
- **retried**: a batch that fails on a deadlock, a serialization failure, a lock timeout
  or a unique violation (the backfill's plain INSERT meeting an enrollment the application
  created meanwhile)
  is rolled back and retried with exponential backoff and jitter, a bounded number of
  times; one cut by ``statement_timeout`` is split in half and retried;
- **resumable**: the step records its own checkpoint in its transaction, so a cut run goes
  on from its last committed batch;
- **visible**: a progress line on a terminal, a timestamped log line every few seconds
  otherwise, with done/total, rate and ETA.

A batch that fails on a lock timeout, a deadlock or a serialization failure is retried
with backoff and jitter until the run's patience is spent (as pgroll retries its DDL): the
run's ``lock_timeout`` is short, so that nobody queues long behind a batch's locks.
"""

from __future__ import annotations

import contextlib
import logging
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from enrollments_phase1.db import duration_seconds, interrupted, run_prelude, stop_if_interrupted
from enrollments_phase1.errors import PermissionDeniedError
from enrollments_phase1.health import Hold
from enrollments_phase1.names import Tables
from enrollments_phase1.settings import SETTINGS
from enrollments_phase1.steering import Steering
from enrollments_phase1.terminal import ProgressLine, clock, is_terminal

log = logging.getLogger(__name__)

RETRYABLE = {
    "40P01": "deadlock",
    "40001": "serialization failure",
    "55P03": "lock timeout",
    # the backfill inserts without ON CONFLICT: a pair the application enrolled after the
    # batch's snapshot; the retry finds its enrollment
    "23505": "unique violation (an enrollment created meanwhile)",
}
STATEMENT_TIMEOUT = "57014"
LAG_POLL_SECONDS = 1.0


def _default_seconds(setting: str) -> float:
    return duration_seconds(SETTINGS[setting].default or "0")


@dataclass(frozen=True)
class BatchSettings:
    """How batches are sized and paced (the user's settings' defaults: SETTINGS)."""

    fixed_size: int | None = None  # a fixed size; None: adaptive
    start_size: int = 1_000
    min_size: int = 100
    max_size: int = 200_000
    target_seconds: float = 0.1
    max_replica_lag: float | None = _default_seconds("max_replica_lag")  # None or 0: no pacing
    lag_bound_explicit: bool = False  # asked for by the user: hidden lag stops the run
    lag_option: str = "--max-replica-lag"  # how the running tool spells the bound
    patience_seconds: float = _default_seconds("lock_patience")  # retrying for its locks
    pause_patience_seconds: float = _default_seconds("pause_patience")  # waiting while paused
    hold_on_vacuum: bool = True
    max_xmin_age: float = _default_seconds("max_xmin_age")  # 0: no bound
    max_archive_backlog: int = int(SETTINGS["max_archive_backlog"].default or 0)  # 0: none
    x_options: bool = False  # run by alembic: its settings are -x options

    def option(self, name: str) -> str:
        """How the running tool spells setting ``name``: ``-x name`` or ``--name``."""
        return f"-x {name}" if self.x_options else f"--{name.replace('_', '-')}"

    @property
    def pause_option(self) -> str:
        return self.option("pause_patience")

    backoff_seconds: float = 0.1

    @property
    def first_size(self) -> int:
        return self.fixed_size or self.start_size


@dataclass(frozen=True)
class StepResult:
    """What one batch did: how far it got (None: nothing left) and its counts."""

    last_key: int | None
    rows: int
    counts: dict[str, int] = field(default_factory=dict)


Step = Callable[[Connection, int, int], StepResult]


# --- sizing ----------------------------------------------------------------------------
@dataclass
class Sizer:
    """The next batch size from the durations so far (an exponential moving average)."""

    settings: BatchSettings
    size: int = 0
    average: float | None = None

    def __post_init__(self) -> None:
        self.size = self.settings.first_size

    def record(self, seconds: float, rows: int, target: float | None = None) -> None:
        """After a batch of ``rows`` that took ``seconds``: the next size, toward ``target``
        seconds (the settings' unless a throttle asks for another)."""
        if self.settings.fixed_size or rows < self.size:  # fixed, or a short last slice
            return
        self.average = seconds if self.average is None else 0.6 * self.average + 0.4 * seconds
        target = target or self.settings.target_seconds
        factor = min(1.5, max(0.5, target / max(self.average, 1e-6)))
        self.size = int(
            min(self.settings.max_size, max(self.settings.min_size, self.size * factor))
        )

    def split(self) -> bool:
        """Halve after a statement timeout; False when it cannot get smaller."""
        if self.size <= 1:
            return False
        self.size = max(1, self.size // 2)
        self.average = None
        return True


# --- the database's health ---------------------------------------------------------------
LAG_SQL = """SELECT coalesce(application_name, '') AS name,
    coalesce(client_addr::text, 'local') AS addr,
    pg_current_wal_lsn() AS current_lsn,
    replay_lsn,
    pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint AS bytes,
    extract(epoch FROM replay_lag)::float8 AS replay_lag,
    current_user AS role
FROM pg_stat_replication"""


class ReplicaLagHiddenError(PermissionDeniedError):
    """The standbys' lag columns are hidden from this role, and a bound was asked for."""


@dataclass
class Standby:
    name: str
    bytes: int
    seconds: float

    def __str__(self) -> str:
        return f"standby {self.name} is {self.bytes / 2**20:,.1f} MB / {self.seconds:.1f} s behind"


@dataclass
class ReplicaLag:
    """How far each standby is behind, in bytes and in time.

    ``replay_lag`` alone is stale when replay stops (a paused or stuck standby reports the
    lag it had): so this also keeps the primary's WAL position at each check and
    counts a standby as behind by at least the time since the primary first wrote past its
    ``replay_lsn``.
    """

    samples: list[tuple[float, int]] = field(default_factory=list)  # (monotonic, lsn)
    hidden: int = 0  # standbys whose lag this role cannot read, at the last check
    role: str = ""
    told: bool = False  # the run has said once that it cannot see them

    def measure(self, connection: Connection) -> list[Standby]:
        now = time.monotonic()
        rows = connection.exec_driver_sql(LAG_SQL).all()
        current = None
        standbys = []
        self.hidden = 0
        for row in rows:
            current = _lsn(row.current_lsn)
            self.role = row.role
            if row.replay_lsn is None:  # without pg_monitor the lag columns are hidden
                self.hidden += 1
                continue
            replay = _lsn(row.replay_lsn)
            behind_since = next((t for t, lsn in self.samples if lsn > replay), None)
            seconds = max(row.replay_lag or 0.0, now - behind_since if behind_since else 0.0)
            standbys.append(Standby(f"{row.name}@{row.addr}", int(row.bytes or 0), seconds))
        if current is not None:
            self.samples.append((now, current))
            self.samples = self.samples[-10_000:]
        return standbys


def _lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def wait_for_replicas(
    connection: Connection,
    lag: ReplicaLag,
    settings: BatchSettings,
    say: Callable[[str], None],
    on_hold: Callable[[Connection, Hold | None], None] | None = None,
) -> None:
    """Before a batch: wait while a standby is further behind than the bound (``on_hold``
    records it, and its end, for ``enrollments status``).

    A standby whose lag this role cannot read (the columns of ``pg_stat_replication`` are
    hidden without ``pg_monitor``) is never silently passed over: the run says so once,
    naming the grant; and where the bound was asked for explicitly, it stops.
    """
    bound = settings.max_replica_lag
    if not bound:
        return
    said_at = None
    while True:
        with transaction(connection):
            standbys = lag.measure(connection)
        if lag.hidden:
            hidden = (
                f"cannot read the replication lag of {lag.hidden} standby(s): role "
                f"{lag.role} may not see the lag columns of pg_stat_replication"
            )
            if settings.lag_bound_explicit:
                raise ReplicaLagHiddenError(
                    f"{hidden}, so it cannot keep the asked bound of {bound:g} s; GRANT "
                    f"pg_monitor TO {lag.role}, or run with {settings.lag_option}"
                    f"{'=' if settings.lag_option.startswith('-x') else ' '}0"
                )
            if not lag.told:
                say(f"{hidden}: the backfill does not pace on them; GRANT pg_monitor TO {lag.role}")
                lag.told = True
        worst = max(standbys, key=lambda s: s.seconds, default=None)
        if worst is None or worst.seconds <= bound:
            if said_at is not None:
                say(f"replicas caught up ({worst or 'no standby'}): going on")
                if on_hold is not None:
                    on_hold(connection, None)
            return
        if on_hold is not None:
            on_hold(
                connection,
                Hold("replica_lag", round(worst.seconds, 1), bound, f"{worst}, above the bound"),
            )
        now = time.monotonic()
        if said_at is None or now - said_at >= 10:
            say(f"waiting: {worst}, above the bound of {bound:g} s ({settings.lag_option})")
            said_at = now
        time.sleep(LAG_POLL_SECONDS)
        stop_if_interrupted()


# --- transactions and retries ------------------------------------------------------------
@contextlib.contextmanager
def transaction(connection: Connection) -> Iterator[None]:
    """One transaction on ``connection``, also inside Alembic's autocommit block, with
    the connection's prelude first (``enrollments_phase1.db.set_transaction_prelude``).

    In AUTOCOMMIT (Alembic's ``autocommit_block`` keeps its own SQLAlchemy transaction
    object open) the transaction is driven with plain BEGIN/COMMIT.
    """
    if connection.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        connection.exec_driver_sql("BEGIN")
        try:
            run_prelude(connection)
            yield
        except BaseException:
            with contextlib.suppress(Exception):
                connection.exec_driver_sql("ROLLBACK")
            raise
        connection.exec_driver_sql("COMMIT")
        return
    if connection.in_transaction():  # the caller's transaction: a savepoint per try
        with connection.begin_nested():
            yield
        return
    with connection.begin():
        yield


def _pgcode(exc: BaseException) -> str:
    return getattr(getattr(exc, "orig", None), "pgcode", None) or ""


MAX_BACKOFF_SECONDS = 5.0


def backoff(settings: BatchSettings, attempt: int) -> float:
    """Exponential backoff with full jitter: up to base * 2^attempt seconds, at most 5 s."""
    return random.uniform(0, min(MAX_BACKOFF_SECONDS, settings.backoff_seconds * 2**attempt))


# --- progress ----------------------------------------------------------------------------
_latest: Progress | None = None  # the run's latest progress, for the words after Ctrl-C


def progress_so_far() -> str:
    """Where the latest progress of this run stood ("backfill: 1,200/5,000 pairs done"), or
    "" when none was shown: what Ctrl-C's message says of how far the run got."""
    if _latest is None:
        return ""
    return f"{_latest.what}: {_latest.done:,}/{_latest.total:,} {_latest.unit} done"


class Progress:
    """done/total, rate and ETA: a progress line on a terminal
    (:mod:`enrollments_phase1.terminal`), a timestamped log line every few seconds
    otherwise. The total follows the table: it grows when more rows turn up than counted.
    ``unit`` names what is counted (memberships, records)."""

    def __init__(
        self, what: str, total: int, unit: str = "rows", stream=None, interval: float = 5.0
    ) -> None:
        self.what = what
        self.unit = unit
        self.total = max(total, 0)
        self.done = 0
        self.note = ""
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.started = time.monotonic()
        self.last_log = self.started
        self.screen: ProgressLine | None = None
        global _latest
        _latest = self
        if is_terminal(self.stream):
            self.screen = ProgressLine(what, unit, self.stream)
            self._show(force=True)

    def _show(self, force: bool = False) -> None:
        if self.screen is not None:
            self.screen.update(self.done, self.total, self.note, force)

    def advance(self, rows: int, note: str = "") -> None:
        self.done += rows
        self.total = max(self.total, self.done)
        self.note = note or self.note
        if self.screen is not None:
            self._show()
            return
        now = time.monotonic()
        if now - self.last_log >= self.interval:
            self.last_log = now
            log.info("%s", self.line())

    def line(self, finished: bool = False) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        left = max(self.total - self.done, 0)
        eta = clock(left / rate) if rate > 0 else "unknown"
        percent = 100.0 * self.done / self.total if self.total else 100.0
        text = f"{self.what}: {self.done:,}/{self.total:,} {self.unit} ({percent:.0f}%), " + (
            f"done in {clock(elapsed)} ({rate:,.0f}/s)"
            if finished
            else f"{rate:,.0f} {self.unit}/s, ETA {eta}"
        )
        return f"{text}; {self.note}" if self.note else text

    def say(self, message: str, level: int = logging.INFO) -> None:
        """A line above the progress line (which log records to the terminal keep clear)."""
        log.log(level, "%s", message)

    def abort(self) -> None:
        """Stopped by a failure or Ctrl-C: the progress line goes, the error follows on a
        clean line."""
        if self.screen is not None:
            self.screen.close()
            self.screen = None

    def close(self, note: str = "") -> None:
        self.total = self.done
        self.note = note or self.note
        self.abort()
        log.info("%s", self.line(finished=True))


# --- the loop ------------------------------------------------------------------------------
@dataclass
class Totals:
    batches: int = 0
    rows: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    longest: float = 0.0  # the longest batch's transaction, seconds

    def add(self, result: StepResult) -> None:
        self.batches += 1
        self.rows += result.rows
        for key, value in result.counts.items():
            self.counts[key] = self.counts.get(key, 0) + value


def run_batches(
    connection: Connection,
    step: Step,
    start_after: int,
    settings: BatchSettings,
    progress: Progress | None = None,
    steered: Tables | None = None,
    activity: dict | None = None,
) -> Totals:
    """Run ``step`` batch after batch from key ``start_after`` until it finds no rows.

    ``connection`` is outside any transaction (or in the caller's, where a savepoint stands
    in for each batch's transaction). What was committed stays when it fails. With
    ``steered`` (the schema of the backfill's tables), the pause and the throttle of
    ``enrollments pause``/``throttle`` apply before and after each batch, the health checks
    hold it (:mod:`enrollments_phase1.steering`), and ``activity`` (what the run is, for
    ``enrollments status``) is recorded while it runs.
    """
    sizer = Sizer(settings)
    lag = ReplicaLag()
    totals = Totals()
    after = start_after
    say = progress.say if progress is not None else log.info
    steering = (
        None
        if steered is None
        else Steering(connection, steered, settings, say, transaction, activity)
    )
    try:
        while True:
            stop_if_interrupted()
            if steering is None:
                wait_for_replicas(connection, lag, settings, say)
            else:
                steering.before_batch(
                    connection,
                    lambda: wait_for_replicas(connection, lag, settings, say, steering.hold),
                )
            result, seconds = _one_batch(
                connection, step, after, sizer, settings, say, steering and steering.look
            )
            if result.rows == 0 or result.last_key is None:
                return totals
            totals.add(result)
            totals.longest = max(totals.longest, seconds)
            target = None if steering is None else steering.target_seconds(0)
            sizer.record(seconds, result.rows, target or None)
            after = result.last_key
            if progress is not None:
                counts = ", ".join(f"{v:,} {k}" for k, v in totals.counts.items())
                progress.advance(result.rows, counts)
            log.debug(
                "batch %d: %d rows up to %d in %.3f s", totals.batches, result.rows, after, seconds
            )
            if steering is not None:
                steering.progressed(connection, totals.rows)
                steering.after_batch(result.rows, seconds)
    except BaseException:
        if progress is not None:
            progress.abort()
        raise
    finally:
        if steering is not None:
            with contextlib.suppress(SQLAlchemyError):  # the connection may be what failed
                steering.finish(connection)


def _one_batch(
    connection: Connection,
    step: Step,
    after: int,
    sizer: Sizer,
    settings: BatchSettings,
    say: Callable[[str], None],
    look: Callable[[Connection], None] | None = None,
) -> tuple[StepResult, float]:
    """One batch in a transaction of its own, retried on what passes (a deadlock, a lock
    timeout, a unique violation), split on a statement timeout; ``look`` runs last in its
    transaction (the figures for the next batch's checks)."""
    attempt = 0
    first_failure = None
    while True:
        started = time.monotonic()
        try:
            with transaction(connection):
                result = step(connection, after, sizer.size)
                if look is not None:
                    look(connection)
            return result, time.monotonic() - started
        except DBAPIError as exc:
            code = _pgcode(exc)
            if interrupted():
                raise
            if code == STATEMENT_TIMEOUT and sizer.split():
                say(f"a batch hit statement_timeout: split, retrying with {sizer.size:,} rows")
                continue
            if code not in RETRYABLE:
                raise
            now = time.monotonic()
            first_failure = first_failure or now
            attempt += 1
            if now - first_failure >= settings.patience_seconds:
                log.warning(
                    "a batch failed on a %s %d times over %.0f s: giving up (patience %.0f s)",
                    RETRYABLE[code],
                    attempt,
                    now - first_failure,
                    settings.patience_seconds,
                )
                raise
            pause = backoff(settings, attempt)
            log.warning(
                "a batch failed on a %s (attempt %d): rolled back, retrying in %.1f s",
                RETRYABLE[code],
                attempt,
                pause,
            )
            time.sleep(pause)
            stop_if_interrupted()
