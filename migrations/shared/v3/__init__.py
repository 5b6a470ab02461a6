"""Version 3 of the revision helpers (1.2): what every revision runs since 1.2. It changes
only to fix a defect of those revisions (their pins move, with the reason); a release that
does so copies it to v4 first (docs/migrations.md, "Released revisions").

What changed from v2, and why (each revision's docstring and migrations/pinned/CHANGES.md
say which defect it fixes):

- every statement names its tables with their schema and runs with ``search_path =
  pg_catalog, pg_temp``, set ``SET LOCAL`` in each transaction with the run's timeouts;
- the sync trigger's functions are safe ``SECURITY DEFINER`` functions, and its
  enrollments are written at commit (:mod:`.sync`);
- the enrollments lock is held by a lock session of the run (``enrollments_phase1.lock``) and checked
  first in every transaction; the offline script takes it in each of its transactions;
- heavy locks are asked for with a short ``lock_timeout``, retried with backoff and
  jitter, naming who holds them.

- :mod:`.run`: running literal SQL online, or writing it to the offline script;
- :mod:`.definition`: the definition of eligible pairs, as these revisions run it;
- :mod:`.sync`, :mod:`.backfill`, :mod:`.gate`, :mod:`.bookkeeping`, :mod:`.indexes`,
  :mod:`.legacy`: the pieces; :mod:`.steps`: what each revision runs.
"""
