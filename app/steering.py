"""Pause and throttle a running backfill from anywhere: the orders are kept in the database.

``enrollment_backfill_control`` (one row, revision 0003) holds the pause (since when,
until when, by whom) and the throttle (a batch duration to aim at, a sleep between
batches, a rate in pairs or records a second). ``enrollments pause``, ``resume`` and
``throttle`` write it; every batched run (the command's backfill, the revisions' and the
undo) reads it by primary key before each batch, so an order takes effect before the next
batch, from any host and process, the backfill ``alembic upgrade head`` runs in a
pipeline included. Writing it takes INSERT and UPDATE on that table: its owner (the role
that runs the deploy), or a role the DBA grants them to.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy.engine import Connection

from enrollments_phase1.db import LITERAL, interrupted, stop_if_interrupted
from enrollments_phase1.errors import RetryableError
from enrollments_phase1.health import Health, Hold
from enrollments_phase1.lock import utc_clock
from enrollments_phase1.names import Tables, quote_literal

if TYPE_CHECKING:
    from enrollments_phase1.batching import BatchSettings

log = logging.getLogger(__name__)

TABLE = "enrollment_backfill_control"
POLL_SECONDS = 0.5
HEALTH_POLL_SECONDS = 1.0
REPORT_SECONDS = 5.0  # a paused or held run says so this often


@dataclass(frozen=True)
class Control:
    """The orders, as read at ``now`` (the server's clock)."""

    paused_at: datetime | None
    paused_until: datetime | None
    changed_by: str
    batch_time: float | None
    sleep: float | None
    max_rate: int | None
    now: datetime
    held_by: dict | None = None  # written by the run: the check holding it
    activity: dict | None = None  # written by the run: what it is (the undo's progress)

    @property
    def paused(self) -> bool:
        return self.paused_at is not None and (
            self.paused_until is None or self.paused_until > self.now
        )

    @property
    def throttled(self) -> bool:
        return any(v is not None for v in (self.batch_time, self.sleep, self.max_rate))

    def pause_words(self) -> str:
        until = (
            "until resumed (enrollments resume)"
            if self.paused_until is None
            else f"until {utc_clock(self.paused_until)} (or enrollments resume)"
        )
        return f"paused by {self.changed_by} at {utc_clock(self.paused_at)}, {until}"


def read_sql(t: Tables) -> str:
    return f"""SELECT c.paused_at, c.paused_until, c.changed_by,
    pg_catalog.date_part('epoch', c.batch_time) AS batch_time,
    pg_catalog.date_part('epoch', c.sleep) AS sleep, c.max_rate, pg_catalog.now() AS now,
    c.held_by, c.activity
FROM {getattr(t, TABLE)} AS c WHERE c.id"""


def exists_sql(t: Tables) -> str:
    return f"SELECT {t.regclass(TABLE)} IS NOT NULL"


def _control(orders: dict) -> Control:
    """The orders as :func:`read_sql` selects them, from their JSON (one statement of
    ``enrollments_phase1.health``)."""

    def when(value: str | None) -> datetime | None:
        return None if value is None else datetime.fromisoformat(value)

    return Control(
        when(orders["paused_at"]),
        when(orders["paused_until"]),
        orders["changed_by"],
        orders["batch_time"],
        orders["sleep"],
        orders["max_rate"],
        when(orders["now"]),  # type: ignore[arg-type]
        orders["held_by"],
        orders["activity"],
    )


def read(connection: Connection, t: Tables) -> Control | None:
    """The orders (None: none given yet)."""
    row = connection.exec_driver_sql(read_sql(t)).first()
    if row is None:
        return None
    return Control(
        row.paused_at,
        row.paused_until,
        row.changed_by,
        row.batch_time,
        row.sleep,
        row.max_rate,
        row.now,
        row.held_by,
        row.activity,
    )


def record_sql(t: Tables, column: str, value: dict | None) -> str:
    """What the run writes for ``enrollments status`` (``held_by``, ``activity``), in the
    one row, leaving the orders and who gave them as they are."""
    literal = "NULL" if value is None else f"{quote_literal(json.dumps(value))}::jsonb"
    return f"""INSERT INTO {getattr(t, TABLE)} AS c (id, {column}) VALUES (true, {literal})
ON CONFLICT (id) DO UPDATE SET {column} = EXCLUDED.{column}"""


def write_sql(t: Tables, assignments: dict[str, str]) -> str:
    """Upsert the one row: ``assignments`` (column: SQL expression), and who and when."""
    columns = {**assignments, "changed_by": "CURRENT_USER", "changed_at": "pg_catalog.now()"}
    names = ", ".join(columns)
    values = ", ".join(columns.values())
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns)
    return f"""INSERT INTO {getattr(t, TABLE)} AS c (id, {names}) VALUES (true, {values})
ON CONFLICT (id) DO UPDATE SET {updates}"""


class Steering:
    """What a batched run does with the orders: before each batch it waits while paused
    (saying so every few seconds, and stopping after ``patience`` seconds, resumable);
    after each batch it sleeps as the throttle asks."""

    def __init__(
        self,
        connection: Connection,
        t: Tables,
        settings: BatchSettings,
        say: Callable[[str], None],
        transaction,
        activity: dict | None = None,
    ) -> None:
        self.t = t
        self.patience = settings.pause_patience_seconds
        self.patience_option = settings.pause_option
        self.say = say
        self.transaction = transaction
        self.health = Health(
            t,
            settings.hold_on_vacuum,
            settings.max_xmin_age,
            settings.max_archive_backlog,
            settings.option,
            say,
        )
        self.activity = (
            None
            if activity is None
            else {**activity, "started_at": datetime.now(UTC).isoformat(), "done": 0}
        )
        self.recorded_at = time.monotonic()
        with transaction(connection):
            self.present = bool(connection.exec_driver_sql(exists_sql(t)).scalar_one())
            if self.present and self.activity is not None:
                connection.exec_driver_sql(
                    record_sql(t, "activity", self.activity), execution_options=LITERAL
                )
        self.control: Control | None = None
        self.throttle_said: tuple | None = None
        self.held: Hold | None = None
        self.pending: tuple | None = None  # the figures look() read for the next batch

    def progressed(self, connection: Connection, done: int) -> None:
        """After a batch: how far the run got, recorded every few seconds (a run with an
        ``activity``: the undo, whose record has no checkpoint of its own)."""
        if self.activity is None or not self.present:
            return
        if time.monotonic() - self.recorded_at < REPORT_SECONDS:
            return
        self.activity["done"] = done
        self.activity["at"] = datetime.now(UTC).isoformat()
        with self.transaction(connection):
            connection.exec_driver_sql(
                record_sql(self.t, "activity", self.activity), execution_options=LITERAL
            )
        self.recorded_at = time.monotonic()

    def finish(self, connection: Connection) -> None:
        """The run is over (done, failed or stopped): nothing holds it, it does nothing.
        Not after Ctrl-C (its connection may be gone, or queued in a pooler): what it
        recorded then predates the next run's lock, and ``enrollments status`` skips it."""
        if interrupted() or (self.activity is None and self.held is None):
            return
        if self.present:
            with self.transaction(connection):
                connection.exec_driver_sql(
                    record_sql(self.t, "activity", None), execution_options=LITERAL
                )
                connection.exec_driver_sql(
                    record_sql(self.t, "held_by", None), execution_options=LITERAL
                )

    def hold(self, connection: Connection, found: Hold | None) -> None:
        """Record what holds the run (None: nothing), for ``enrollments status``."""
        if found == self.held:
            return
        if self.present:
            with self.transaction(connection):
                connection.exec_driver_sql(
                    record_sql(self.t, "held_by", None if found is None else found.as_json()),
                    execution_options=LITERAL,
                )
        self.held = found

    def wait_while_unhealthy(self, connection: Connection) -> None:
        """Before a batch: wait while a health check holds the run, saying so."""
        said_at = 0.0
        while True:
            with self.transaction(connection):
                found = self.health.hold(connection)
            if found is None:
                if self.held is not None:
                    self.say(f"no longer held ({self.held.check}): going on")
                self.hold(connection, None)
                return
            self.hold(connection, found)
            now = time.monotonic()
            if now - said_at >= REPORT_SECONDS:
                self.say(f"held: {found.words}")
                said_at = now
            time.sleep(HEALTH_POLL_SECONDS)
            stop_if_interrupted()

    def before_batch(
        self, connection: Connection, wait_for_standbys: Callable[[], None]
    ) -> Control | None:
        """Before a batch: the orders and the health figures in one statement; then, only
        where one of them holds the run, wait (paused, a standby behind, a check failing),
        saying so. ``wait_for_standbys`` waits while a standby lags (there are some).

        The figures are those :meth:`look` read in the last batch's transaction, where it
        read them (no transaction of their own: the checks cost a batch one statement);
        else, before the first batch, they are read now."""
        if self.pending is not None:
            row, ready = self.pending
            self.pending = None
        else:
            with self.transaction(connection):
                row, ready = self.health.figures(
                    connection, read_sql(self.t) if self.present else None
                )
        control = None if row.orders is None else _control(row.orders)
        if control is not None and control.paused:
            control = self._wait_while_paused(connection)
        if row.standbys:
            wait_for_standbys()
        found = self.health.evaluate(row, ready)
        if found is not None:
            self.wait_while_unhealthy(connection)
        elif self.held is not None:
            self.say(f"no longer held ({self.held.check}): going on")
            self.hold(connection, None)
        self._say_throttle(control)
        self.control = control
        return control

    def look(self, connection: Connection) -> None:
        """At the end of a batch's transaction: read the figures for the next batch."""
        self.pending = self.health.figures(connection, read_sql(self.t) if self.present else None)

    def _wait_while_paused(self, connection: Connection) -> Control | None:
        """Wait while ``enrollments pause`` holds the run; the orders once it does not."""
        paused_since = time.monotonic()
        said_at = 0.0
        while True:
            with self.transaction(connection):
                control = read(connection, self.t)
            if control is None or not control.paused:
                self.say(
                    "the pause ended (its time was up): going on with the next batch"
                    if control is not None and control.paused_at is not None
                    else "resumed: going on with the next batch"
                )
                return control
            now = time.monotonic()
            if now - paused_since >= self.patience:
                raise RetryableError(
                    f"{control.pause_words()}: stopped after waiting {now - paused_since:.0f} s "
                    f"(pause patience, {self.patience_option}); run it again after "
                    "enrollments resume: it goes on from its last committed batch"
                )
            if now - said_at >= REPORT_SECONDS:
                self.say(f"{control.pause_words()}: waiting before the next batch")
                said_at = now
            time.sleep(POLL_SECONDS)
            stop_if_interrupted()

    def _say_throttle(self, control: Control | None) -> None:
        orders = (
            None
            if control is None or not control.throttled
            else (control.batch_time, control.sleep, control.max_rate)
        )
        if orders != self.throttle_said:
            if orders is None:
                self.say("no throttle: batches sized toward their target, back to back")
            else:
                self.say(f"throttled by {control.changed_by}: {throttle_words(control)}")
            self.throttle_said = orders

    def target_seconds(self, default: float) -> float:
        if self.control is not None and self.control.batch_time:
            return self.control.batch_time
        return default

    def after_batch(self, rows: int, seconds: float) -> None:
        """Sleep as the throttle asks: its sleep, and at least what keeps the rate."""
        control = self.control
        if control is None:
            return
        pause = control.sleep or 0.0
        if control.max_rate:
            pause = max(pause, rows / control.max_rate - seconds)
        deadline = time.monotonic() + pause
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, POLL_SECONDS))
            stop_if_interrupted()


def throttle_words(control: Control) -> str:
    parts = []
    if control.batch_time:
        parts.append(f"batches of about {control.batch_time * 1000:g} ms")
    if control.sleep:
        parts.append(f"{control.sleep * 1000:g} ms between batches")
    if control.max_rate:
        parts.append(f"at most {control.max_rate:,} a second")
    return ", ".join(parts) or "none"
