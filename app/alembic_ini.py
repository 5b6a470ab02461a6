"""Where the installed Alembic configuration is: ``python -m enrollments_phase1.alembic_ini``.

The package carries its revisions and an ``alembic.ini`` whose ``script_location`` is the
package resource ``enrollments_phase1.migrations:``, so a deploy needs no checkout::

    export ALEMBIC_CONFIG="$(python -m enrollments_phase1.alembic_ini)"
    alembic upgrade head          # from any directory
"""

from __future__ import annotations

from pathlib import Path

ALEMBIC_INI = Path(__file__).resolve().parent / "alembic.ini"

if __name__ == "__main__":
    print(ALEMBIC_INI)
