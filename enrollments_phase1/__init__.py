"""Phase 1 of retiring ``group_members``: ``course_enrollments`` becomes the source of truth."""

__version__ = "1.2.0"
