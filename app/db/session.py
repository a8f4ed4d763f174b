"""Engines and sessions: one ``Session`` per unit of work, transactions with ``session.begin()``."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from app.settings import load_settings

#: What flows take to open sessions: ``new_session`` in production, a test's own in tests.
SessionFactory = Callable[[], Session]


def create_db_engine(database_url: str) -> Engine:
    """An engine tuned for fintask's many short transactions from many threads and processes."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30})
    event.listen(engine, "connect", _configure_sqlite_connection)
    event.listen(engine, "begin", _begin_immediate)
    return engine


def _configure_sqlite_connection(dbapi_connection: Any, _record: object) -> None:
    # Let SQLAlchemy issue BEGIN itself (see _begin_immediate); WAL lets readers run beside
    # the one writer, and busy_timeout makes a writer wait for the lock instead of failing.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _begin_immediate(connection: Any) -> None:
    # A deferred SQLite transaction that reads and then writes can fail with "database is
    # locked" no matter the timeout; taking the write lock at BEGIN makes it wait instead.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


@functools.cache
def default_engine() -> Engine:
    """The engine for ``DATABASE_URL`` (SQLite under ``var/`` when unset), made once a process."""
    return create_db_engine(load_settings().database_url)


@functools.cache
def _default_session_factory() -> sessionmaker[Session]:
    return sessionmaker(default_engine(), expire_on_commit=False)


def new_session() -> Session:
    """A session on the default engine; use it as ``with new_session() as s, s.begin():``."""
    return _default_session_factory()()


@contextmanager
def transaction() -> Iterator[Session]:
    """A session inside one transaction that commits on success and rolls back on error."""
    with new_session() as session, session.begin():
        yield session


def reset_default_engine() -> None:
    """Forget the default engine so the next use reads ``DATABASE_URL`` again (tests, forks)."""
    if default_engine.cache_info().currsize:
        default_engine().dispose()
    default_engine.cache_clear()
    _default_session_factory.cache_clear()
