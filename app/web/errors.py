"""A database that cannot be reached is a 503 with a reason, not a 500 with a traceback.

Every API endpoint reads the database, so each can meet an outage (or SQLite's lock timeout,
or an exhausted pool); the answer names what is unavailable, never the query or the address.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

#: Seconds a client is told to wait before trying again.
RETRY_AFTER_S = 30

_logger = logging.getLogger(__name__)


def install_error_handlers(app: FastAPI) -> None:
    """Answer an unreachable database with 503 and a readable ``detail``."""
    app.add_exception_handler(OperationalError, database_unavailable)
    app.add_exception_handler(PoolTimeout, database_unavailable)


async def database_unavailable(request: Request, error: Exception) -> JSONResponse:
    """503: the database did not answer; the client may try again shortly."""
    # The driver's error alone: SQLAlchemy's text would add the statement and its parameters.
    reason = getattr(error, "orig", None) or error
    _logger.warning(
        "%s %s: the database is unavailable: %s", request.method, request.url.path, reason
    )
    return JSONResponse(
        {"detail": f"the database is unavailable ({type(error).__name__}); try again shortly"},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )
