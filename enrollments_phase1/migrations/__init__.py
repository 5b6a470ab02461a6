"""The migration history: revisions, the versioned helpers they use, and their pinned SQL.

Code here is history: once a revision is released, what it runs never changes except to
fix a defect (see ``enrollments_phase1/migrations/pinned/CHANGES.md``). The live tool is
the rest of ``enrollments_phase1/``.
"""
