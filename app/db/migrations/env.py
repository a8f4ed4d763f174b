"""Alembic environment: runs migrations on the connection or URL that app.db.migrate passes."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from app.db.metadata import target_metadata
from app.db.session import create_db_engine


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate the database named by the Alembic config's ``sqlalchemy.url``."""
    engine = create_db_engine(context.config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


run_migrations_online()
