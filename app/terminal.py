"""A progress line a person can read on a terminal, of any width from 40 columns up.

One line, redrawn in place: what, percent, a bar, done/total with thousands separators and
the unit, the rate and the ETA, then a note where there is room. It never wraps: the bar
shrinks first (to 10 cells), then the note goes, then the unit (below 6 cells), and only
then is the line cut, at a space. Log records written to the same terminal while the line
is shown clear it first and draw it again after, so nothing is drawn over. Ctrl-C, or any
failure, erases it; the message that follows starts at column 0 of a clean line.
"""

from __future__ import annotations

import logging
import os
import sys
import textwrap
import time
from typing import TextIO

MIN_BAR = 10  # cells of bar before a note is shown
MIN_UNIT_BAR = 6  # ... before the unit goes (80 columns keep it up to 100,000,000)
REDRAW_SECONDS = 0.1
CLEAR_LINE = "\r\x1b[K"


def is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # closed
        return False


def width_of(stream: TextIO) -> int:
    """The terminal's width now (it may have been resized), 80 when it cannot be asked."""
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (AttributeError, OSError, ValueError):
        return 80


def clear_line(stream: TextIO) -> None:
    """Start a clean line on a terminal: erases a progress line, or the ``^C`` echoed by the
    terminal, so that what follows starts at column 0."""
    if is_terminal(stream):
        stream.write(CLEAR_LINE)
        stream.flush()


def clock(seconds: float) -> str:
    """45s, 2m13s, 1h02m."""
    seconds = max(round(seconds), 0)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def progress_line(
    what: str,
    done: int,
    total: int,
    unit: str,
    seconds: float,
    width: int,
    note: str = "",
    bar_cells: str = "█",
) -> str:
    """The line, at most ``width - 2`` characters: a terminal never wraps it, not even when
    it echoes ``^C`` after it."""
    room = max(width - 2, 20)
    percent = 100.0 * done / total if total else 100.0
    rate = done / seconds if seconds > 0 else 0.0
    eta = clock((total - done) / rate) if rate > 0 else "?"
    head = f"{what} {percent:3.0f}% "
    count = f" {done:,}/{total:,}"
    tail = f" {rate:,.0f}/s ETA {eta}"
    for unit_part, note_part, least in (
        (f" {unit}", f"; {note}" if note else "", MIN_BAR),
        (f" {unit}", "", MIN_UNIT_BAR),
        ("", "", MIN_UNIT_BAR),
    ):
        fixed = len(head) + 2 + len(count) + len(unit_part) + len(tail) + len(note_part)
        if room - fixed >= least:
            cells = bar(percent, room - fixed, bar_cells)
            return f"{head}|{cells}|{count}{unit_part}{tail}{note_part}"
    fixed = len(head) + 2 + len(count) + len(tail)
    if room - fixed >= 3:  # narrow: a short bar
        return f"{head}|{bar(percent, room - fixed, bar_cells)}|{count}{tail}"
    line = f"{head.rstrip()}{count}{tail}"  # narrower still: no bar, whole words only
    return line if len(line) <= room else line[: line.rfind(" ", 0, room + 1)]


def bar(percent: float, cells: int, full: str) -> str:
    filled = round(cells * min(max(percent, 0.0), 100.0) / 100.0)
    return full * filled + " " * (cells - filled)


class ProgressLine:
    """The line on ``stream``, a terminal; see the module's docstring."""

    def __init__(self, what: str, unit: str, stream: TextIO) -> None:
        self.what = what
        self.unit = unit
        self.stream = stream
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        self.cells = "█" if encoding in ("utf8", "utf8sig") else "#"
        self.shown = False
        self.last_draw = 0.0
        self.started = time.monotonic()
        self.state: tuple[int, int, str] = (0, 0, "")
        self.hooked: list[logging.Handler] = []
        self._hook_handlers()

    def update(self, done: int, total: int, note: str, force: bool = False) -> None:
        self.state = (done, total, note)
        now = time.monotonic()
        if force or now - self.last_draw >= REDRAW_SECONDS:
            self.last_draw = now
            self.draw()

    def draw(self) -> None:
        done, total, note = self.state
        seconds = time.monotonic() - self.started  # the rate falls while a batch waits
        line = progress_line(
            self.what, done, total, self.unit, seconds, width_of(self.stream), note, self.cells
        )
        self.stream.write(CLEAR_LINE + line)
        self.stream.flush()
        self.shown = True

    def erase(self) -> None:
        if self.shown:
            self.stream.write(CLEAR_LINE)
            self.stream.flush()
            self.shown = False

    def close(self) -> None:
        """Erase the line and stop; what follows (the summary, or an error) starts clean."""
        self.erase()
        for handler in self.hooked:
            handler.__dict__.pop("emit", None)
        self.hooked = []

    def _hook_handlers(self) -> None:
        """Log records to this terminal erase the line first and draw it again after."""
        loggers = [logging.getLogger()] + [
            logger
            for logger in logging.Logger.manager.loggerDict.values()
            if isinstance(logger, logging.Logger)
        ]
        seen: set[int] = set()
        for logger in loggers:
            for handler in logger.handlers:
                if id(handler) in seen or not isinstance(handler, logging.StreamHandler):
                    continue
                seen.add(id(handler))
                if not _same_terminal(handler.stream, self.stream):
                    continue
                handler.emit = self._around(handler.emit)  # type: ignore[method-assign]
                self.hooked.append(handler)

    def _around(self, emit):
        def emit_clear(record: logging.LogRecord) -> None:
            was_shown = self.shown
            self.erase()
            emit(record)
            if was_shown:
                self.draw()

        return emit_clear


def _same_terminal(a: TextIO, b: TextIO) -> bool:
    if a is b:
        return True
    try:
        return os.path.samestat(os.fstat(a.fileno()), os.fstat(b.fileno()))
    except (AttributeError, OSError, ValueError):
        return False


def interrupted_line() -> None:
    """Before the one-line message after Ctrl-C: the terminal echoed ``^C`` where the cursor
    was; start a clean line on whichever of stdout and stderr is a terminal."""
    for stream in (sys.stderr, sys.stdout):
        clear_line(stream)


def fit(text: str, stream: TextIO) -> str:
    """``text`` as a terminal shows it without cutting a word: each line longer than the
    terminal is broken at spaces, its continuations indented. Anything but a terminal (a
    file, a pipe, a CI log) gets ``text`` as it is, one line per message."""
    if not is_terminal(stream):
        return text
    width = max(width_of(stream), 40)
    return "\n".join(
        textwrap.fill(
            line,
            width=width,
            subsequent_indent="    ",
            break_long_words=False,
            break_on_hyphens=False,
        )
        if len(line) > width
        else line
        for line in text.splitlines()
    )


def say(text: str, stream: TextIO | None = None) -> None:
    """Print a message line (an error, a command's last word) fitted to the terminal."""
    stream = stream or sys.stderr
    print(fit(text, stream), file=stream)


class FittedFormatter(logging.Formatter):
    """Log records fitted to the terminal standard error is (see :func:`fit`): at 80
    columns a timestamped line of 1.2.0 wrapped mid-word. Named in both alembic.ini."""

    def format(self, record: logging.LogRecord) -> str:
        return fit(super().format(record), sys.stderr)
