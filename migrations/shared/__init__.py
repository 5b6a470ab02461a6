"""Versioned helpers for the revisions, as GitLab versions ``Gitlab::Database::Migration``.

A revision imports one version (``from enrollments_phase1.migrations.shared.v3 import
...``). A version used by a released revision is never edited: a change of behaviour is a
new version beside it, and new revisions use the new one. The live tool (the rest of
``enrollments_phase1``) is never imported for SQL here; only plumbing (settings,
connections, error messages) comes from it.
"""
