"""Migrations: they apply on SQLite and PostgreSQL and produce exactly the models' schema."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from app.db.metadata import target_metadata
from app.db.migrate import current_revision, downgrade, upgrade
from app.db.session import create_db_engine


def test_upgrade_to_head_matches_the_models(database_url):
    upgrade(database_url)

    engine = create_db_engine(database_url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, target_metadata)
    engine.dispose()
    assert differences == [], f"models and migrations disagree: {differences}"


def test_downgrade_to_base_and_upgrade_again(database_url):
    upgrade(database_url)
    downgrade(database_url, "base")

    engine = create_db_engine(database_url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()
    upgrade(database_url)
    assert current_revision(database_url) is not None
