"""What the ``fintask`` command says when Redis or the database does not answer, or a feature
needs Dramatiq's Redis broker and the broker is RabbitMQ: one line saying what to do, never a
traceback, and never a password: the lines quote the driver's own
error, which names the host and the user but not the URL.

An operator meets these on a new deploy (a database older than the code) or in an outage, and a
traceback there hides the one thing to do: start Redis or the database, or run ``fintask
migrate``. ``app.cli.main`` asks here only once a command has failed, so ``fintask --help``
imports neither redis-py nor SQLAlchemy.
"""

from __future__ import annotations

import redis
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

from app.broker_features import RedisBrokerOnly

#: PostgreSQL's SQLSTATE for a table that does not exist (SQLite says "no such table").
_UNDEFINED_TABLE = "42P01"


def outage_line(error: BaseException) -> str | None:
    """The line to end the command with if ``error`` is Redis or the database not answering
    (or a database not migrated) or a Redis-only feature asked for on RabbitMQ, else None."""
    if isinstance(error, redis.AuthenticationError):
        # A ConnectionError too, but "is it running?" would send the operator the wrong way.
        return (
            f"Redis refused fintask ({error}): check the password (and user) in REDIS_URL, "
            "redis://USER:PASSWORD@HOST:PORT/DB"
        )
    if isinstance(error, redis.ConnectionError | redis.TimeoutError):
        return (
            f"Redis did not answer ({error}): is it running? `fintask run` starts one (and a "
            "second shell finds it); else set REDIS_URL"
        )
    if isinstance(error, RedisBrokerOnly):
        return str(error)
    if isinstance(error, OperationalError | ProgrammingError):
        return _database_line(error)
    return None


def _database_line(error: DBAPIError) -> str:
    # The driver's first line alone: SQLAlchemy's text adds the statement and its parameters.
    lines = str(error.orig).strip().splitlines()
    reason = lines[0] if lines else type(error.orig).__name__
    if getattr(error.orig, "sqlstate", None) == _UNDEFINED_TABLE or "no such table" in reason:
        return f"the database is not migrated ({reason}): run `fintask migrate`"
    return f"the database is unavailable ({type(error).__name__}: {reason})"
