"""Version 4 of the revision helpers (1.3): what every revision runs since 1.3. It changes
only to fix a defect of those revisions (their pins move, with the reason); a release that
does so copies it to v5 first (docs/migrations.md, "Released revisions").

What changed from v3 (1.2), and why (each revision's docstring and
migrations/pinned/CHANGES.md say which defect it fixes):

- the sync trigger leaves no pair uncovered when two transactions each make half of it
  eligible (a guard table the second waits at or fails on), applies a transaction once at
  its end in one global order (no deadlock added), reads every table by key whatever the
  statistics, and enrolls the same pairs whether its constraints are deferred or immediate
  (:mod:`.sync`);
- the script's batches are sized with this version's own numbers (``ScriptBatches``), not
  the live tool's defaults.

What v3 brought, kept here: every statement names its tables with their schema and runs
with ``search_path = pg_catalog, pg_temp``; the sync trigger's functions are safe
``SECURITY DEFINER`` functions; the enrollments lock is held by a lock session of the run
and checked first in every transaction; heavy locks are asked for with a short
``lock_timeout``, retried with backoff and jitter, naming who holds them.

- :mod:`.run`: running literal SQL online, or writing it to the offline script;
- :mod:`.definition`: the definition of eligible pairs, as these revisions run it;
- :mod:`.sync`, :mod:`.backfill`, :mod:`.gate`, :mod:`.bookkeeping`, :mod:`.indexes`,
  :mod:`.legacy`: the pieces; :mod:`.steps`: what each revision runs.
"""
