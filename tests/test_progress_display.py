"""The progress display as a person sees it: the real command in a pseudo-terminal of 80
(and 120) columns, its output drawn by a terminal emulator (pyte), the screen read back."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import termios
import threading
import time

import psycopg2
import pyte
import pytest
from sqlalchemy import text

from bench.generate import generate
from enrollments_phase1.batching import Progress
from enrollments_phase1.terminal import progress_line
from tests.helpers import LATE_INACTIVE, ROOT, VENV_BIN, libpq_url, upgrade, url_string

BAR = re.compile(
    r"^backfill: pass 1 +(\d+)% \|(█*)( *)\| (\d{1,3}(?:,\d{3})*)/(\d{1,3}(?:,\d{3})*) pairs "
    r"[\d,]+/s ETA (\?|\d+s|\d+m\d\ds|\d+h\d\dm)(; .*)?$"
)
STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (INFO|WARNING) ")


class Terminal:
    """A command on a pseudo-terminal of ``columns`` x 24 that is its controlling terminal,
    as in a shell: Ctrl-C typed on it interrupts the command."""

    def __init__(self, args: list[str], url: str, columns: int) -> None:
        self.columns = columns
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        environ = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        environ.update(DATABASE_URL=url, TERM="xterm", COLUMNS=str(columns))

        def controlling_terminal() -> None:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(
            [str(VENV_BIN / args[0]), *args[1:]],
            cwd=ROOT,
            env=environ,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            preexec_fn=controlling_terminal,
        )
        os.close(slave)
        self.master = master
        self.raw = bytearray()
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # the command exited: the slave side is closed
                return
            if not chunk:
                return
            with self.lock:
                self.raw.extend(chunk)

    def screen(self) -> list[str]:
        """The screen as drawn now, each line as shown (trailing blanks dropped)."""
        screen = pyte.Screen(self.columns, 200)
        stream = pyte.ByteStream(screen)
        with self.lock:
            stream.feed(bytes(self.raw))
        return [line.rstrip() for line in screen.display if line.strip()]

    def lines(self) -> list[str]:
        """What was written, line by line, as a log reader would see it (a line redrawn
        with a carriage return counts once, as drawn last)."""
        with self.lock:
            written = bytes(self.raw).decode(errors="replace")
        written = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", written)
        return [line.split("\r")[-1] for line in written.split("\r\n") if line.split("\r")[-1]]

    def messages(self) -> list[str]:
        """:meth:`lines` with each message whole again: a line the command broke at a space
        to fit the terminal goes on in lines indented by four spaces."""
        whole: list[str] = []
        for line in self.lines():
            if line.startswith("    ") and whole:
                whole[-1] += " " + line.strip()
            else:
                whole.append(line)
        return whole

    def wait_for(
        self, pattern: re.Pattern, last: re.Pattern | None = None, timeout: float = 60
    ) -> list[str]:
        """The screen once ``pattern`` is shown and, if given, ``last`` matches its last line
        (a log record is written between erasing the progress line and drawing it again: a
        screen read in between shows neither)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.screen()
            if any(pattern.search(line) for line in lines) and (
                last is None or (lines and last.match(lines[-1]))
            ):
                return lines
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"never shown {pattern.pattern!r}:\n" + "\n".join(lines))
            time.sleep(0.05)

    def type_ctrl_c(self) -> None:
        os.write(self.master, b"\x03")

    def finish(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=10)
        os.close(self.master)
        return code


@pytest.fixture
def at_0003_with_data(legacy):
    with legacy.begin() as conn:
        generate(conn, 1_500)
    upgrade(legacy, "0003")
    return legacy


@pytest.mark.parametrize("columns", [80, 120])
def test_the_backfill_on_a_terminal_then_ctrl_c(database_url, at_0003_with_data, columns):
    # A row two thirds into the walk is held: the backfill shows its line, then waits on
    # that row, retrying, until Ctrl-C.
    with at_0003_with_data.connect() as conn:
        held = conn.execute(text(LATE_INACTIVE)).scalar_one()
    holder = psycopg2.connect(libpq_url(database_url))
    holder.cursor().execute("SELECT 1 FROM course_enrollments WHERE id = %s FOR UPDATE", (held,))
    try:
        command = ["enrollments", "backfill", "--commit", "--batch-size", "200"]
        terminal = Terminal(command, url_string(database_url), columns)
        during = terminal.wait_for(
            re.compile(r"WARNING enrollments_phase1\.batching: a batch failed"), last=BAR
        )
        terminal.type_ctrl_c()
        code = terminal.finish()
    finally:
        holder.rollback()
        holder.close()

    # While it ran: one progress line, the last on the screen, whole, below the warnings.
    bars = [line for line in during if BAR.match(line)]
    assert len(bars) == 1, "\n".join(during)
    assert during[-1] == bars[0]
    shown = BAR.match(bars[0])
    assert len(bars[0]) <= columns - 2
    assert len(shown.group(2)) + len(shown.group(3)) >= 10  # a bar one can see
    assert int(shown.group(1)) > 0 and len(shown.group(2)) > 0
    with at_0003_with_data.connect() as conn:
        candidates = conn.execute(text("SELECT candidates FROM enrollment_backfill_runs")).scalar()
    assert shown.group(5) == f"{candidates:,}" and candidates >= 1_000
    if columns >= 120:
        assert re.search(r"; [\d,]+ created, [\d,]+ reactivated$", bars[0])
    # Every line fits the terminal, broken at spaces (1.2.0's wrapped mid-word at 80).
    assert all(len(line) <= columns for line in terminal.lines()), "\n".join(terminal.lines())
    logged = terminal.messages()
    assert any(len(line) > columns for line in logged)  # a message that had to be broken
    assert all(STAMP.match(line) for line in logged if not line.startswith("enrollments"))

    # After Ctrl-C: the bar is gone, no ^C, the message starts a clean line, nothing after.
    after = terminal.screen()
    assert code == 130
    assert not any("^C" in line for line in after)
    assert not any(BAR.match(line) for line in after), "\n".join(after)
    message = [i for i, line in enumerate(after) if line.startswith("enrollments backfill:")]
    assert len(message) == 1, "\n".join(after)
    assert after[message[0]].startswith("enrollments backfill: interrupted: ")
    # ... and says how far the run got and what a re-run does (1.2.0 said neither).
    said = [line for line in logged if line.startswith("enrollments backfill: interrupted")]
    assert len(said) == 1
    assert re.search(
        r"\(backfill: pass 1: [\d,]+/[\d,]+ pairs done\); run it again: it goes on from its "
        r"last committed batch$",
        said[0],
    ), said[0]


def test_the_whole_run_on_a_terminal_ends_on_its_summary(database_url, at_0003_with_data):
    terminal = Terminal(["enrollments", "backfill", "--commit"], url_string(database_url), 80)
    code = terminal.finish()
    after = terminal.screen()
    assert code == 0
    assert not any(BAR.match(line) for line in after), "\n".join(after)
    assert all(len(line) <= 80 for line in terminal.lines()), "\n".join(terminal.lines())
    summary = [
        line
        for line in terminal.messages()
        if " INFO enrollments_phase1.batching: backfill: pass 1" in line
    ]
    assert len(summary) == 1
    assert re.search(r"backfill: pass 1: ([\d,]+)/\1 pairs \(100%\), done in \d+s", summary[0])


@pytest.mark.parametrize("columns", [40, 60, 80, 100, 200])
def test_the_line_never_wraps_and_drops_the_note_first(columns):
    line = progress_line(
        "backfill", 12_345_678, 100_000_000, "memberships", 60.0, columns, "9 created"
    )
    assert len(line) <= columns - 2
    assert line.startswith("backfill  12% ")
    if columns >= 80:
        assert "12,345,678/100,000,000 memberships 205,761/s ETA 7m06s" in line
        assert re.search(r"\|█{1,} {5,}\|", line)
    if columns >= 100:
        assert line.endswith("; 9 created")
    if columns <= 80:
        assert "created" not in line


def test_plain_output_is_a_timestamped_line_every_few_seconds(caplog):
    progress = Progress("backfill", 10, unit="memberships", interval=0.0)
    with caplog.at_level("INFO", logger="enrollments_phase1.batching"):
        progress.advance(15, "3 created")  # the application inserted 5 meanwhile
        progress.close("3 created, 1 reactivated")
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0].startswith("backfill: 15/15 memberships (100%), ")
    assert re.search(r"\(100%\), done in 0s \([\d,]+/s\); 3 created, 1 reactivated$", lines[-1])
    assert "15/10" not in "".join(lines) and "150%" not in "".join(lines)


def test_alembic_on_an_80_column_terminal_breaks_its_lines_at_spaces(database_url, story):
    terminal = Terminal(["alembic", "upgrade", "head"], url_string(database_url), 80)
    assert terminal.finish() == 0
    lines = terminal.lines()
    assert all(len(line) <= 80 for line in lines), "\n".join(lines)
    messages = terminal.messages()
    alembic_stamp = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (INFO |WARNI) \[")
    assert all(alembic_stamp.match(line) for line in messages), "\n".join(messages)
    broken = [m for m in messages if len(m) > 80]
    assert broken  # the superuser warning at least
    words = " ".join(lines).split()
    assert all(w in words for m in broken for w in m.split())  # no word was cut
