"""Where the backfill stands, read from the database alone (``enrollments status``).

Everything comes from what any process can read: the newest row of
``enrollment_backfill_runs`` (its pass, checkpoint and counts, committed with each batch),
the pairs its batches wrote in the last minute (``enrollment_backfill_batches``: the
rate), the orders of ``enrollment_backfill_control`` and who holds the enrollments lock
(``pg_locks``). A run that is unfinished while nobody holds the lock was cut (a crash, a
kill): it resumes from its checkpoint with the command that started it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection

from enrollments_phase1 import lock, steering
from enrollments_phase1.backfill import SOURCE
from enrollments_phase1.names import Tables, quote_literal

RATE_WINDOW_SECONDS = 60
RESUME = {
    "command": "enrollments backfill --commit",
    "revision": "alembic upgrade head",
}


def run_sql(t: Tables) -> str:
    return f"""SELECT r.id, r.source, r.started_at, r.finished_at, r.pass, r.checkpoint,
    r.candidates, r.created, r.reactivated, r.batches,
    (SELECT coalesce(pg_catalog.sum(pg_catalog.cardinality(b.created)
                                    + pg_catalog.cardinality(b.reactivated)), 0)
     FROM {t.enrollment_backfill_batches} AS b
     WHERE b.run_id = r.id
       AND b.written_at > pg_catalog.now() - interval '{RATE_WINDOW_SECONDS} s') AS recent,
    least({RATE_WINDOW_SECONDS}, pg_catalog.date_part('epoch', pg_catalog.now() - r.started_at))
        AS window_seconds
FROM {t.enrollment_backfill_runs} AS r
ORDER BY r.id DESC
LIMIT 1"""


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


WAITING_SQL = f"""SELECT a.pid, a.application_name FROM pg_catalog.pg_stat_activity AS a
WHERE a.datname = pg_catalog.current_database() AND a.state = 'idle'
  AND a.query = {quote_literal(lock.WAITING_MARK)}
ORDER BY a.backend_start LIMIT 1"""


def read_status(connection: Connection, t: Tables) -> dict[str, Any]:
    """The status as the contract's JSON object (one read-only transaction)."""
    present = connection.exec_driver_sql(
        f"SELECT {t.regclass('enrollment_backfill_runs')} IS NOT NULL,"
        f" {t.regclass('enrollment_backfill_batches')} IS NOT NULL"
    ).one()
    run = connection.exec_driver_sql(run_sql(t)).first() if all(present) else None
    holder = connection.exec_driver_sql(lock.holder_sql(t)).first()
    waiting = connection.exec_driver_sql(WAITING_SQL).first()
    control = None
    if connection.exec_driver_sql(steering.exists_sql(t)).scalar_one():
        control = steering.read(connection, t)
    alive = holder is not None
    status: dict[str, Any] = {
        "state": "none",
        "run": None,
        "progress": None,
        "held_by": control.held_by if control is not None and alive else None,
        "lock_holder": None
        if holder is None
        else {
            "pid": holder.pid,
            "application_name": holder.application_name,
            "since": _iso(holder.since or holder.backend_start),
        },
        "pause": None
        if control is None or not control.paused
        else {"until": _iso(control.paused_until), "by": control.changed_by},
        "throttle": None
        if control is None or not control.throttled
        else {
            "batch_time_s": control.batch_time,
            "sleep_s": control.sleep,
            "max_rate": control.max_rate,
        },
    }
    who = (
        {}
        if holder is None
        else {
            "pid": holder.pid,
            "application_name": holder.application_name,
            "host": None if holder.client_addr is None else str(holder.client_addr),
        }
    )
    activity = control.activity if control is not None and alive else None
    if (
        activity is not None
        and holder.since is not None
        and datetime.fromisoformat(activity["started_at"]) < holder.since - timedelta(seconds=1)
    ):
        # recorded by a run cut short before the one holding the lock now (the lock's
        # time is kept in whole seconds, rounded)
        activity = None
    if activity is not None and activity.get("kind") == "undo":
        status["run"] = {
            "kind": "undo",
            "source": activity["what"],
            "started_at": activity["started_at"],
            "finished_at": None,
            **who,
        }
        status["progress"] = _progress(
            int(activity.get("done", 0)),
            int(activity["total"]),
            _rate(activity),
            created=None,
            reactivated=None,
        )
        status["state"] = _live_state(status)
        return status
    if run is not None:
        kind = "command" if run.source == SOURCE else "revision"
        finished = run.finished_at is not None
        status["run"] = {
            "id": run.id,
            "kind": kind,
            "source": run.source,
            "started_at": _iso(run.started_at),
            "finished_at": _iso(run.finished_at),
            "pass": run._mapping["pass"],
            **({} if finished else who),
        }
        rate = float(run.recent) / run.window_seconds if run.window_seconds else 0.0
        status["progress"] = _progress(
            int(run.checkpoint or 0),
            int(run.candidates) if run.candidates is not None else None,
            None if finished else rate,
            created=int(run.created),
            reactivated=int(run.reactivated),
            batches=int(run.batches),
        )
        if finished:
            status["state"] = "finished"
        elif not alive:
            status["state"] = "cut"
            status["resume"] = RESUME[kind]
        else:
            status["state"] = _live_state(status)
    if waiting is not None and status["state"] in ("none", "finished", "cut"):
        status["state"] = "waiting_lock"
        status["waiting"] = {"pid": waiting.pid, "application_name": waiting.application_name}
    return status


def _live_state(status: dict[str, Any]) -> str:
    if status["pause"] is not None:
        return "paused"
    if status["held_by"] is not None:
        return "held"
    return "running"


def _rate(activity: dict) -> float | None:
    if "at" not in activity:
        return None
    seconds = (
        datetime.fromisoformat(activity["at"]) - datetime.fromisoformat(activity["started_at"])
    ).total_seconds()
    return activity["done"] / seconds if seconds > 0 else None


def _progress(
    done: int,
    total: int | None,
    rate: float | None,
    created: int | None,
    reactivated: int | None,
    batches: int | None = None,
) -> dict[str, Any]:
    return {
        "done": done,
        "total": total,
        "created": created,
        "reactivated": reactivated,
        "batches": batches,
        "rate_per_s": None if rate is None else round(rate, 1),
        "eta_s": round((total - done) / rate) if rate and total is not None else None,
    }


def render_status(status: dict[str, Any]) -> str:
    """One screen a person reads at a glance."""
    lines = [f"Backfill: {status['state']}"]
    run = status["run"]
    if run is not None:
        lines.append(
            f"  run {run['id']} ({run['kind']}: {run['source']}), started {run['started_at']}"
            + (f", finished {run['finished_at']}" if run["finished_at"] else "")
        )
    progress = status["progress"]
    if progress is not None and run["kind"] == "undo":
        lines.append(f"  {progress['done']:,} of {progress['total']:,} records undone")
    elif progress is not None:
        total = f"{progress['total']:,}" if progress["total"] is not None else "?"
        lines.append(
            f"  pass {run['pass']}: {progress['done']:,} of {total} pairs; "
            f"{progress['created']:,} created, {progress['reactivated']:,} reactivated "
            f"in {progress['batches']:,} batches"
        )
    if progress is not None and progress["rate_per_s"] is not None:
        eta = f", about {progress['eta_s']:,} s left" if progress["eta_s"] is not None else ""
        lines.append(f"  rate {progress['rate_per_s']:,} a second{eta}")
    if status["held_by"] is not None:
        h = status["held_by"]
        lines.append(f"  held by the {h['check']} check: {h['figure']} (bound {h['threshold']})")
    if status.get("waiting"):
        w = status["waiting"]
        lines.append(f"  pid {w['pid']} ({w['application_name']}) waits for the enrollments lock")
    if status["lock_holder"] is not None:
        h = status["lock_holder"]
        lines.append(
            f"  enrollments lock held by pid {h['pid']} ({h['application_name']}) "
            f"since {h['since']}"
        )
    if status["pause"] is not None:
        until = status["pause"]["until"] or "enrollments resume"
        lines.append(f"  paused by {status['pause']['by']} until {until}")
    if status["throttle"] is not None:
        t = status["throttle"]
        parts = [
            f"batches of {t['batch_time_s']:g} s" if t["batch_time_s"] else "",
            f"{t['sleep_s']:g} s between batches" if t["sleep_s"] else "",
            f"at most {t['max_rate']:,}/s" if t["max_rate"] else "",
        ]
        lines.append("  throttle: " + ", ".join(p for p in parts if p))
    if status.get("resume"):
        lines.append(f"  cut short: {status['resume']} goes on from its checkpoint")
    return "\n".join(lines)
