"""The migration history: revisions, the versioned helpers they use, and their pinned SQL.

Code here is history: once a revision is released, what it runs never changes except to
fix a defect (see ``migrations/pinned/CHANGES.md``). The live tool is ``app/``.
"""
