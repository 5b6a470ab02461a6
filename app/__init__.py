"""Phase 1 of retiring ``group_members``: ``course_enrollments`` becomes the source of truth.

This directory (``app/`` in the repository) is the package ``enrollments_phase1``, and
``migrations/`` is ``enrollments_phase1.migrations`` (pyproject.toml maps both). Imported
under any other name (``import app`` from the checkout's top level), a second copy of every
module and its state would load beside the first: refused.
"""

if __name__ != "enrollments_phase1":
    raise ImportError(
        f"this is the package enrollments_phase1 (app/ in the checkout): import it by that "
        f"name, not as {__name__!r}"
    )

__version__ = "1.3.0"
