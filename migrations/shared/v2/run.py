"""Running a revision's SQL: executed online, written to the psql script offline."""

from __future__ import annotations

from alembic import context, op
from sqlalchemy.engine import Connection


def is_offline() -> bool:
    return context.is_offline_mode()


def execute_sql(connection: Connection, sql: str) -> int:
    """Run literal SQL exactly as written (no parameter parsing); return its rowcount."""
    result = connection.exec_driver_sql(sql, execution_options={"no_parameters": True})
    return max(result.rowcount, 0)


def run_sql(sql: str) -> int | None:
    """Execute literal SQL: written to the script offline, run (rowcount back) online."""
    if is_offline():
        op.execute(sql)
        return None
    return execute_sql(op.get_bind(), sql)


def write_raw(text: str) -> None:
    """Offline only: write ``text`` to the script as is (psql meta-commands, no ``;``)."""
    op.get_context().impl.static_output(text)


def can_autocommit() -> bool:
    """False when the caller runs the migration inside a transaction of its own.

    (A test that wraps the upgrade in a transaction, for instance.) Then nothing can run
    outside a transaction, and the helpers fall back to their transactional form, saying so.
    """
    return is_offline() or not getattr(op.get_context(), "_in_external_transaction", False)
