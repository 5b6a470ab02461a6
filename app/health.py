"""The database's health, measured before each batch: what holds a batched run.

Each check holds the run while its condition lasts (:class:`Hold` names it, its figure and
its bound); the run says so and waits (``enrollments_phase1.steering``):

- ``vacuum``: a VACUUM or an autovacuum working on ``course_enrollments`` or
  ``group_members`` (``pg_stat_progress_vacuum``). The backfill would compete with it for
  the same pages and add dead rows behind it (``--hold-on-vacuum``, on by default);
- ``xmin``: a transaction or snapshot of this database (or a prepared transaction) older
  than the bound: while it lasts no VACUUM can remove the rows the backfill leaves dead
  (``--max-xmin-age``);
- ``archive``: more WAL files waiting to be archived than the bound, where archiving is
  on: the backfill writes WAL faster than a slow archive takes it (``--max-archive-backlog``).

The standbys' lag is measured in ``enrollments_phase1.batching`` (``--max-replica-lag``).
A figure the role may not see (another role's session without ``pg_read_all_stats``; the
archive status directory without ``pg_monitor``) is never taken as healthy: the run says
once that it cannot make that check, naming the grant.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.engine import Connection

from enrollments_phase1.db import LITERAL
from enrollments_phase1.lock import DATABASE_SQL
from enrollments_phase1.names import Tables


@dataclass(frozen=True)
class Hold:
    """A check that holds the run: ``figure`` against ``threshold`` (as JSON numbers or
    text), and the words that say it."""

    check: str
    figure: object
    threshold: object
    words: str

    def as_json(self) -> dict:
        return {"check": self.check, "figure": self.figure, "threshold": self.threshold}


# pg_stat_progress_vacuum's phases, as the view names them (its param1).
VACUUM_PHASES = (
    "initializing",
    "scanning heap",
    "vacuuming indexes",
    "vacuuming heap",
    "cleaning up indexes",
    "truncating heap",
    "performing final cleanup",
)


def figures_sql(t: Tables, control: str | None) -> str:
    """One statement for everything looked at before a batch: the orders (``control``,
    the orders' select list, when their table exists), the vacuums of this database, its
    oldest transaction and prepared transaction, whether archiving is on and countable,
    and how many standbys there are. One round trip, and the statistics functions the
    views are made of, not the views: a plan of a few nodes, made in well under a
    millisecond, at every batch."""
    orders = f"(SELECT pg_catalog.row_to_json(o) FROM ({control}) AS o)" if control else "NULL"
    return f"""WITH here AS (SELECT {DATABASE_SQL} AS oid),
sessions AS (
    SELECT a.pid, a.application_name, a.state, a.query, a.xact_start, a.backend_type,
           a.backend_xmin IS NOT NULL OR a.backend_xid IS NOT NULL AS holds_xmin
    FROM pg_catalog.pg_stat_get_activity(NULL) AS a
    WHERE (a.datid = (SELECT here.oid FROM here) OR a.backend_type = 'walsender')
      AND a.pid <> pg_catalog.pg_backend_pid()
)
SELECT {orders} AS orders,
    (SELECT pg_catalog.json_agg(pg_catalog.json_build_object('pid', v.pid,
         'relid', v.relid::regclass::text, 'phase', v.param1, 'hidden', v.relid IS NULL,
         'kind', CASE WHEN (SELECT s.backend_type FROM sessions AS s WHERE s.pid = v.pid)
                           = 'autovacuum worker' THEN 'autovacuum' ELSE 'VACUUM' END)
         ORDER BY v.pid)
     FROM pg_catalog.pg_stat_get_progress_info('VACUUM') AS v
     WHERE v.datid = (SELECT here.oid FROM here)
       AND (v.relid IS NULL OR v.relid IN ({t.regclass("course_enrollments")},
                                           {t.regclass("group_members")}))) AS vacuums,
    (SELECT pg_catalog.format('pid %s (%s, %s, transaction open since %s)', s.pid,
         coalesce(nullif(s.application_name, ''), 'no application_name'), s.state,
         pg_catalog.to_char(s.xact_start, 'HH24:MI:SS'))
     FROM sessions AS s WHERE s.holds_xmin AND s.xact_start IS NOT NULL
     ORDER BY s.xact_start LIMIT 1) AS oldest,
    (SELECT pg_catalog.date_part('epoch', pg_catalog.now() - pg_catalog.min(s.xact_start))
     FROM sessions AS s WHERE s.holds_xmin) AS age,
    (SELECT pg_catalog.count(*) FROM sessions AS s
     WHERE s.query = '<insufficient privilege>' AND s.backend_type = 'client backend') AS hidden,
    (SELECT pg_catalog.format('prepared transaction %s', pg_catalog.quote_literal(x.gid))
     FROM pg_catalog.pg_prepared_xact() AS x
     WHERE x.dbid = (SELECT here.oid FROM here) ORDER BY x.prepared LIMIT 1) AS prepared,
    (SELECT pg_catalog.date_part('epoch', pg_catalog.now() - pg_catalog.min(x.prepared))
     FROM pg_catalog.pg_prepared_xact() AS x WHERE x.dbid = (SELECT here.oid FROM here))
        AS prepared_age,
    pg_catalog.current_setting('archive_mode') IN ('on', 'always') AS archive_on,
    pg_catalog.has_function_privilege('pg_catalog.pg_ls_archive_statusdir()', 'EXECUTE')
        AS archive_visible,
    (SELECT pg_catalog.count(*) FROM pg_catalog.pg_stat_get_wal_senders() AS w) AS standbys,
    current_user AS role"""


READY_SQL = """SELECT pg_catalog.count(*) FROM pg_catalog.pg_ls_archive_statusdir() AS s
WHERE s.name LIKE '%.ready'"""


class Health:
    """The checks a run makes before each batch, with what it said it cannot see."""

    def __init__(
        self,
        t: Tables,
        hold_on_vacuum: bool,
        max_xmin_age: float,
        max_archive_backlog: int,
        option: Callable[[str], str],
        say: Callable[[str], None],
    ) -> None:
        self.t = t
        self.hold_on_vacuum = hold_on_vacuum
        self.max_xmin_age = max_xmin_age
        self.max_archive_backlog = max_archive_backlog
        self.option = option
        self.say = say
        self.told: set[str] = set()

    def _cannot(self, check: str, words: str) -> None:
        if check not in self.told:
            self.say(words)
            self.told.add(check)

    def figures(self, connection: Connection, control: str | None = None):
        """The figures before a batch (one statement; and one more, the archive's count,
        where archiving is on and the role may count)."""
        row = connection.exec_driver_sql(
            figures_sql(self.t, control), execution_options=LITERAL
        ).one()
        ready = None
        if self.max_archive_backlog and row.archive_on and row.archive_visible:
            ready = int(
                connection.exec_driver_sql(READY_SQL, execution_options=LITERAL).scalar_one()
            )
        return row, ready

    def hold(self, connection: Connection) -> Hold | None:
        """The first check that holds the run now, or None (in the caller's transaction)."""
        return self.evaluate(*self.figures(connection))

    def evaluate(self, row, ready: int | None) -> Hold | None:
        """The first check the figures fail, or None."""
        for found in (self._vacuum(row), self._xmin(row), self._archive(row, ready)):
            if found is not None:
                return found
        return None

    def _vacuum(self, row) -> Hold | None:
        if not self.hold_on_vacuum or not row.vacuums:
            return None
        seen = [v for v in row.vacuums if not v["hidden"]]
        if len(seen) < len(row.vacuums):
            self._cannot(
                "vacuum",
                f"cannot see which table {len(row.vacuums) - len(seen)} vacuum(s) of this "
                "database work on: this role may not read their progress; the run does not "
                f"wait for them (GRANT pg_read_all_stats, or pg_monitor, TO {row.role})",
            )
        if not seen:
            return None
        v = seen[0]
        phase = VACUUM_PHASES[v["phase"]] if 0 <= v["phase"] < len(VACUUM_PHASES) else "working"
        relname = v["relid"].rsplit(".", 1)[-1]
        off = self.option("hold_on_vacuum")
        off = f"{off}=no" if off.startswith("-x") else "--no-hold-on-vacuum"
        return Hold(
            "vacuum",
            f"{v['kind']} of {relname}",
            "none",
            f"{v['kind']} of {relname} (pid {v['pid']}, {phase}) is running ({off} does not "
            "wait for it)",
        )

    def _xmin(self, row) -> Hold | None:
        if not self.max_xmin_age:
            return None
        if row.hidden:
            self._cannot(
                "xmin",
                f"cannot see how old {row.hidden} session(s) of this database are: role "
                f"{row.role} may not read their activity; the xmin check leaves them out "
                f"(GRANT pg_read_all_stats, or pg_monitor, TO {row.role})",
            )
        candidates = [(a, w) for a, w in ((row.age, row.oldest), (row.prepared_age, row.prepared))]
        age, who = max(((a, w) for a, w in candidates if a is not None), default=(None, None))
        if age is None or age <= self.max_xmin_age:
            return None
        return Hold(
            "xmin",
            round(age),
            round(self.max_xmin_age),
            f"{who} holds back the xmin horizon for {age:.0f} s, above the bound of "
            f"{self.max_xmin_age:g} s ({self.option('max_xmin_age')}): no VACUUM could "
            "remove the rows the backfill leaves dead",
        )

    def _archive(self, row, ready: int | None) -> Hold | None:
        if not self.max_archive_backlog or not row.archive_on:
            return None
        if not row.archive_visible:
            self._cannot(
                "archive",
                f"cannot count the WAL files waiting to be archived: role {row.role} may not "
                f"call pg_ls_archive_statusdir(); the run does not check the archive (GRANT "
                f"pg_monitor TO {row.role})",
            )
            return None
        if ready is None or ready <= self.max_archive_backlog:
            return None
        return Hold(
            "archive",
            ready,
            self.max_archive_backlog,
            f"{ready} WAL files wait to be archived, above the bound of "
            f"{self.max_archive_backlog} ({self.option('max_archive_backlog')})",
        )
