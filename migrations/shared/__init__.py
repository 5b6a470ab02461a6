"""The revisions' helpers, versioned by release (docs/migrations.md, "Released revisions").

A revision imports one version (``from enrollments_phase1.migrations.shared.v4 import
...``). A release that fixes a defect of released revisions copies the newest version to
the next, fixes it there and points the revisions it fixes at it (their pins move, each
with its reason in ``migrations/pinned/CHANGES.md``). The live tool (``app/``) is never
imported for SQL here; only plumbing (settings, connections, error messages) comes from it.
"""
