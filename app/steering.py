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

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.engine import Connection

from enrollments_phase1.db import stop_if_interrupted
from enrollments_phase1.errors import RetryableError
from enrollments_phase1.names import Tables

log = logging.getLogger(__name__)

TABLE = "enrollment_backfill_control"
POLL_SECONDS = 0.5
REPORT_SECONDS = 5.0  # a paused run says so this often


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
            else f"until {clock(self.paused_until)} (or enrollments resume)"
        )
        return f"paused by {self.changed_by} at {clock(self.paused_at)}, {until}"


def clock(value: datetime | None) -> str:
    if value is None:
        return "an unknown time"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def read_sql(t: Tables) -> str:
    return f"""SELECT c.paused_at, c.paused_until, c.changed_by,
    pg_catalog.date_part('epoch', c.batch_time) AS batch_time,
    pg_catalog.date_part('epoch', c.sleep) AS sleep, c.max_rate, pg_catalog.now() AS now
FROM {getattr(t, TABLE)} AS c WHERE c.id"""


def exists_sql(t: Tables) -> str:
    return f"SELECT {t.regclass(TABLE)} IS NOT NULL"


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
    )


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
        patience: float,
        patience_option: str,
        say: Callable[[str], None],
        transaction,
    ) -> None:
        self.t = t
        self.patience = patience
        self.patience_option = patience_option
        self.say = say
        self.transaction = transaction
        with transaction(connection):
            self.present = bool(connection.exec_driver_sql(exists_sql(t)).scalar_one())
        self.control: Control | None = None
        self.throttle_said: tuple | None = None

    def before_batch(self, connection: Connection) -> Control | None:
        """The orders for the next batch, once no pause holds it."""
        if not self.present:
            return None
        paused_since = None
        said_at = 0.0
        while True:
            with self.transaction(connection):
                control = read(connection, self.t)
            if control is None or not control.paused:
                if paused_since is not None:
                    self.say(
                        "the pause ended (its time was up): going on with the next batch"
                        if control is not None and control.paused_at is not None
                        else "resumed: going on with the next batch"
                    )
                self._say_throttle(control)
                self.control = control
                return control
            now = time.monotonic()
            if paused_since is None:
                paused_since = now
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
