"""Run a command and record its peak memory: ``python -m bench.peak OUT CMD...``.

A process forked from the bench would inherit the bench's resident set in its
``ru_maxrss``; this small launcher forks from a fresh interpreter instead, waits for the
command with ``wait4`` and writes the command's peak RSS in KiB to OUT.
"""

import os
import sys


def main() -> int:
    out, command = sys.argv[1], sys.argv[2:]
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(command[0], command)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    with open(out, "w") as f:
        f.write(str(usage.ru_maxrss))
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main())
