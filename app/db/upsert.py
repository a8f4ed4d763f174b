"""Insert-once on a natural key: the database, not the code, decides who wins a race."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.db.models import Base


def dialect_insert(session: Session, model: type[Base]) -> postgresql.Insert | sqlite.Insert:
    """An ``INSERT`` into ``model`` that has ``on_conflict_do_nothing`` on ``session``'s
    backend (PostgreSQL in production, SQLite in tests and the embedded default)."""
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(model)


def insert_once(
    session: Session, model: type[Base], values: dict[str, Any], *, key: dict[str, Any]
) -> tuple[int, bool]:
    """Insert ``values`` unless a row with ``key`` exists; return (its id, whether we made it).

    ``INSERT .. ON CONFLICT DO NOTHING`` on both backends: a redelivered or concurrent message
    finds the row already there and learns that it lost, so it skips the side effects.
    """
    table: Any = model
    statement = dialect_insert(session, model).values(values).on_conflict_do_nothing()
    created = session.execute(statement.returning(table.id)).scalar_one_or_none()
    if created is not None:
        return int(created), True
    query = select(table.id).filter_by(**key)
    return int(session.execute(query).scalar_one()), False
