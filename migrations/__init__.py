"""The migration history: revisions, the helpers they use, and their pinned SQL.

This directory (``migrations/`` in the repository, Alembic's script directory) is the
package ``enrollments_phase1.migrations`` (pyproject.toml maps it); imported under any other
name, a second copy of its modules would load beside the first: refused.

What a released revision runs changes only to fix a defect (docs/migrations.md,
``migrations/pinned/CHANGES.md``). The live tool is ``app/`` (``enrollments_phase1``).
"""

if __name__ != "enrollments_phase1.migrations":
    raise ImportError(
        f"this is the package enrollments_phase1.migrations (migrations/ in the checkout): "
        f"import it by that name, not as {__name__!r}"
    )
