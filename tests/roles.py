"""Roles as on a managed PostgreSQL, for the tests that stage what they may and may not do.

- **owner**: no SUPERUSER; owns the database (and so ``public``, on PostgreSQL 15 and
  later) and runs the migrations;
- **app**: the legacy application: SELECT, INSERT, UPDATE, DELETE on the legacy tables
  but ``course_enrollments``, on which it has no privilege at all;
- **reader**: SELECT on every table;
- **hostile**: LOGIN and whatever PUBLIC has (TEMP, and CREATE on ``public`` where
  :meth:`Roles.open_public` grants it, as every database created before PostgreSQL 15
  still does).

Role names are the test database's name plus a suffix, so that tests on a shared server
never meet; they are dropped with everything they own when the test ends.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg2
from sqlalchemy import create_engine
from sqlalchemy.engine import URL, Engine

from tests.helpers import FIXTURES, libpq_url, load_story, psql, upgrade

LEGACY_FOR_APP = ("schools", "users", "courses", "groups", "group_members")


@dataclass
class Roles:
    admin_url: URL  # the test database, as the server's admin
    prefix: str

    @property
    def owner(self) -> str:
        return f"{self.prefix}_owner"

    @property
    def app(self) -> str:
        return f"{self.prefix}_app"

    @property
    def reader(self) -> str:
        return f"{self.prefix}_reader"

    @property
    def hostile(self) -> str:
        return f"{self.prefix}_hostile"

    @property
    def all(self) -> tuple[str, ...]:
        return (self.owner, self.app, self.reader, self.hostile)

    def url(self, role: str) -> URL:
        return self.admin_url.set(username=role, password=None)

    def libpq(self, role: str) -> str:
        return libpq_url(self.url(role))

    def engine(self, role: str) -> Engine:
        return create_engine(self.url(role))

    def connect(self, role: str, **kwargs):
        """A psycopg2 session as ``role`` (autocommit off)."""
        return psycopg2.connect(self.libpq(role), **kwargs)

    def admin(self, *statements: str) -> None:
        conn = psycopg2.connect(libpq_url(self.admin_url))
        conn.autocommit = True
        try:
            for statement in statements:
                conn.cursor().execute(statement)
        finally:
            conn.close()

    def create(self) -> None:
        database = self.admin_url.database
        self.admin(
            *(f'CREATE ROLE "{role}" LOGIN NOSUPERUSER' for role in self.all),
            f'ALTER DATABASE "{database}" OWNER TO "{self.owner}"',
            # Before PostgreSQL 15, public belonged to the bootstrap superuser.
            f'ALTER SCHEMA public OWNER TO "{self.owner}"',
            "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        )

    def open_public(self) -> None:
        """``public`` writable by every role, as PostgreSQL before 15 made it."""
        self.admin("GRANT CREATE ON SCHEMA public TO PUBLIC")

    def grant_application(self, dual_write: bool = False) -> None:
        """The application's and the reader's grants, once the legacy tables exist (as
        their owner)."""
        statements = [
            f'GRANT SELECT, INSERT, UPDATE, DELETE ON {", ".join(LEGACY_FOR_APP)} TO "{self.app}"',
            f'GRANT USAGE ON {", ".join(f"{t}_id_seq" for t in LEGACY_FOR_APP)} TO "{self.app}"',
            f"GRANT SELECT ON {', '.join(LEGACY_FOR_APP)}, course_enrollments, alembic_version"
            f' TO "{self.reader}"',
        ]
        if dual_write:  # the Phase 1 application also writes course_enrollments
            statements.append(f'GRANT SELECT, INSERT, UPDATE ON course_enrollments TO "{self.app}"')
        conn = self.connect(self.owner)
        conn.autocommit = True
        try:
            for statement in statements:
                conn.cursor().execute(statement)
        finally:
            conn.close()

    def drop(self) -> None:
        roles = ", ".join(f'"{r}"' for r in self.all)
        try:
            self.admin(f"REASSIGN OWNED BY {roles} TO CURRENT_USER", f"DROP OWNED BY {roles}")
        finally:
            admin_db = self.admin_url.set(database="postgres")
            conn = psycopg2.connect(libpq_url(admin_db))
            conn.autocommit = True
            try:
                for role in self.all:
                    conn.cursor().execute(f'DROP ROLE IF EXISTS "{role}"')
            finally:
                conn.close()


def deploy(pg_server, roles: Roles, start: str) -> None:
    """The sample story migrated by the owner: ``fresh`` to head, or ``1.1.0``: release
    1.1.0's own script to 0006 (its head). The application's grants come after the tables
    exist."""
    owner = roles.url(roles.owner)
    engine = roles.engine(roles.owner)
    try:  # in-process: these tests are not about the console script (test_env.py is)
        upgrade(engine, "0001")
        load_story(engine)
        if start == "1.1.0":
            script = (FIXTURES / "release_1_1_0" / "upgrade_0001_0006.sql").read_text()
            applied = psql(pg_server, owner, script)
            assert applied.returncode == 0, applied.stderr
        else:
            upgrade(engine, "head")
    finally:
        engine.dispose()
    roles.grant_application()


def upgrade_head(roles: Roles) -> None:
    """``alembic upgrade head`` as the owner (in-process)."""
    engine = roles.engine(roles.owner)
    try:
        upgrade(engine, "head")
    finally:
        engine.dispose()
