"""Versioned helpers for the revisions, as GitLab versions ``Gitlab::Database::Migration``.

A revision imports one version (``from migrations.shared.v3 import ...``). A version used by
a released revision is never edited: a change of behaviour is a new version beside it, and
new revisions use the new one. ``app/`` (the live tool) is never imported for SQL here;
only plumbing (settings, connections, error messages) comes from it.
"""
