"""What the figures of docs/benchmarks.md mean, and why a goal was missed: written by hand
after a run (bench/report.py puts it under the tables)."""

NOTES = """
## How to read it

- Each command runs as a separate process on its own copy of the same generated database
  (`CREATE DATABASE ... TEMPLATE`); seconds are wall time of the whole process (Python's
  start included, about 0.3 s), peak MB its maximum resident set (from `wait4`). The
  read-only steps (the audit, its floor, the dry run) are the median of 3 runs on a warm
  cache; the writing steps run once each, on a fresh copy.
- The backfill ratios use the command's own figure for its write phase (`seconds` in its
  JSON); the whole command also reads the audit's counts after it (the next table).
- The floors are in `bench/floors.py`; the bench checks that A3's counts equal the audit's.
"""
