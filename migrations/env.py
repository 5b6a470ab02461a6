"""Alembic environment for the Phase 1 revisions: offline (``--sql``) and online.

Shaped like Alembic's own template; the plumbing lives in ``enrollments_phase1.migration_env``
(settings, the online session, the run in progress) and ``enrollments_phase1.offline_script``
(the psql script's guards).
"""

from logging.config import fileConfig

from alembic import context

from enrollments_phase1.migration_env import (
    MigrationSettings,
    after_each_revision,
    connected,
    in_revisions,
    is_writing_command,
    migration_session,
    offline_run,
    offline_schema,
    one_line_errors,
    online_connectable,
)
from enrollments_phase1.models import Base

config = context.config

if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata
settings = MigrationSettings.from_x_arguments(context.get_x_argument(as_dictionary=True))


def run_migrations_offline() -> None:
    """Write the migration as a psql script; needs no database.

    The ``named`` paramstyle keeps literal SQL as written: ``%`` is not doubled, so
    PL/pgSQL ``RAISE`` formats reach psql intact. The script guards itself: it stops on
    the first error, checks where the database stands before the first revision and that
    the version moved after each; every transaction takes the enrollments lock and sets
    the run's settings (``SET LOCAL``) first.
    """
    context.configure(
        dialect_name="postgresql",
        dialect_opts={"paramstyle": "named"},
        literal_binds=True,
        target_metadata=target_metadata,
        transaction_per_migration=True,
        on_version_apply=after_each_revision,
        version_table_schema=offline_schema(settings),
    )
    with offline_run(settings), context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migration on ``DATABASE_URL``, or on the connection a test hands in.

    Writing commands take the enrollments lock before ``context.configure()``, so a
    concurrent upgrade waits and then reads an up-to-date ``alembic_version``.
    """
    with (
        one_line_errors(),
        connected(online_connectable(config)) as connection,
        migration_session(connection, settings) as schemas,
    ):
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            transaction_per_migration=True,
            compare_type=True,
            compare_server_default=True,
            include_name=in_revisions,
            # Named where every statement runs with a pinned search_path (writing
            # commands); elsewhere it is on the search_path, where autogenerate expects it.
            version_table_schema=schemas.version if is_writing_command() else None,
            on_version_apply=after_each_revision,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
