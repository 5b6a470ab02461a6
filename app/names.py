"""Where the tables are, and how every statement names them. Plumbing shared by the
commands and the revisions' helpers.

Every statement names its tables with their schema, and runs with ``search_path =
pg_catalog, pg_temp`` (:data:`PINNED_SEARCH_PATH`): no table, operator or function planted
in a writable schema, and no temporary table, can stand in for ours or for a built-in. The
schema is found once, when a command starts, through the connection's own search_path
(the URL's): where ``group_members`` is (:func:`resolve_schemas`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Connection

PINNED_SEARCH_PATH = "pg_catalog, pg_temp"
LEGACY_TABLES = ("schools", "users", "courses", "groups", "group_members", "course_enrollments")


def quote_ident(name: str) -> str:
    """A SQL identifier, always double-quoted (a schema name may be anything)."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class Tables:
    """The schema-qualified names of the tables a statement uses: ``Tables("s").users``
    is ``"s".users``."""

    schema: str = "public"

    def __getattr__(self, table: str) -> str:
        if table.startswith("_"):
            raise AttributeError(table)
        return f"{quote_ident(self.schema)}.{table}"

    @property
    def literal(self) -> str:
        """The schema as a SQL string literal (for catalog lookups)."""
        return quote_literal(self.schema)

    def regclass(self, table: str) -> str:
        """``to_regclass`` of the qualified table (NULL when it does not exist)."""
        return f"pg_catalog.to_regclass({quote_literal(getattr(self, table))})"


@dataclass(frozen=True)
class Schemas:
    """Where a command finds the legacy tables and ``alembic_version``."""

    legacy: str | None  # None: no legacy table on the search_path
    spread: tuple[str, ...]  # every schema holding one of the legacy tables found
    version: str | None
    creation: str | None  # where new tables would go (current_schema())
    search_path: str


RESOLVE_SQL = f"""SELECT
    (SELECT n.nspname FROM pg_catalog.pg_class AS c
     JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
     WHERE c.oid = pg_catalog.to_regclass('group_members')) AS legacy,
    ARRAY(SELECT DISTINCT n.nspname::text FROM pg_catalog.pg_class AS c
          JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
          WHERE c.oid IN (SELECT pg_catalog.to_regclass(t) FROM pg_catalog.unnest(ARRAY[
              {", ".join(quote_literal(t) for t in LEGACY_TABLES)}]) AS t)
          ORDER BY 1) AS spread,
    (SELECT n.nspname FROM pg_catalog.pg_class AS c
     JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
     WHERE c.oid = pg_catalog.to_regclass('alembic_version')) AS version,
    pg_catalog.current_schema() AS creation,
    pg_catalog.current_setting('search_path') AS search_path"""


def resolve_schemas(connection: Connection) -> Schemas:
    """Where the legacy tables and ``alembic_version`` are, through the connection's own
    search_path, before anything pins it."""
    row = connection.exec_driver_sql(RESOLVE_SQL).one()
    return Schemas(
        legacy=row.legacy,
        spread=tuple(row.spread),
        version=row.version,
        creation=row.creation,
        search_path=row.search_path,
    )
