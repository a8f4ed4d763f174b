"""Every error the API answers has one shape: RFC 9457 problem details.

``application/problem+json`` with ``type`` (always ``about:blank``: the status says it all),
``title`` (the status's reason phrase), ``status`` and ``detail``, a sentence for a person; a
422 adds ``errors``, the parameters that were wrong. One shape lets a client show any error
without knowing which endpoint, dependency or layer raised it.

A database that cannot be reached is a 503 with a reason, not a 500 with a traceback: every
API endpoint reads the database, so each can meet an outage (or SQLite's lock timeout, or an
exhausted pool); the answer names what is unavailable, never the query or the address. Redis
not answering (the control plane reads it) is a 503 the same way.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException

from app.broker_features import RedisBrokerOnly

#: Seconds a client is told to wait before trying again.
RETRY_AFTER_S = 30

PROBLEM_JSON = "application/problem+json"

#: How a 422's sentence names where a wrong value was, by the first part of its ``loc``.
_PLACES = {
    "path": "path parameter",
    "query": "query parameter",
    "header": "header",
    "cookie": "cookie",
    "body": "body field",
}

_logger = logging.getLogger(__name__)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every HTTP error, invalid request and unreachable database as problem details."""
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(OperationalError, database_unavailable)
    app.add_exception_handler(PoolTimeout, database_unavailable)
    app.add_exception_handler(redis.ConnectionError, redis_unavailable)
    app.add_exception_handler(redis.TimeoutError, redis_unavailable)
    app.add_exception_handler(RedisBrokerOnly, redis_broker_only)


def problem_detail(answer: Response) -> str:
    """The ``detail`` sentence of an answer ``problem`` made."""
    body = json.loads(bytes(answer.body))
    return str(body["detail"])


def problem(
    status: int, detail: str, *, headers: Mapping[str, str] | None = None, **members: Any
) -> JSONResponse:
    """An ``application/problem+json`` answer; ``members`` extend it (a 422's ``errors``)."""
    body = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        **members,
    }
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


async def http_error(request: Request, error: Exception) -> JSONResponse:
    """An ``HTTPException`` (an endpoint's, or routing's 404 and 405), its headers kept."""
    assert isinstance(error, HTTPException)
    detail = str(error.detail)
    if detail == HTTPStatus(error.status_code).phrase:  # Starlette's own: no sentence given
        detail = f"{request.method} {request.url.path}: {detail.lower()}"
    return problem(error.status_code, detail, headers=error.headers)


async def invalid_request(request: Request, error: Exception) -> JSONResponse:
    """422 naming each wrong parameter and why, in one sentence and as a list.

    The list leaves out the values sent: a 422 echoing them back would repeat a mistyped
    secret, or 5,000 digits of an id, to whoever reads the answer or its logs.
    """
    assert isinstance(error, RequestValidationError)
    errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in error.errors()]
    sentence = "; ".join(f"{_place(e['loc'])}: {e['msg']}" for e in errors)
    return problem(422, f"the request is not valid: {sentence}", errors=errors)


def _place(loc: Sequence[object]) -> str:
    """Where a wrong value was: ``("path", "job_id")`` is ``path parameter job_id``."""
    source, *field = loc
    place = _PLACES.get(str(source), str(source))
    return f"{place} {'.'.join(map(str, field))}" if field else place


async def database_unavailable(request: Request, error: Exception) -> JSONResponse:
    """503: the database did not answer; the client may try again shortly."""
    # The driver's error alone: SQLAlchemy's text would add the statement and its parameters.
    reason = getattr(error, "orig", None) or error
    _logger.warning(
        "%s %s: the database is unavailable: %s", request.method, request.url.path, reason
    )
    return problem(
        503,
        f"the database is unavailable ({type(error).__name__}); try again shortly",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


async def redis_broker_only(request: Request, error: Exception) -> JSONResponse:
    """409: the feature reads Dramatiq's Redis queue keys, and the broker is RabbitMQ."""
    return problem(409, str(error))


async def redis_unavailable(request: Request, error: Exception) -> JSONResponse:
    """503: Redis did not answer; the client may try again shortly."""
    _logger.warning("%s %s: Redis is unavailable: %s", request.method, request.url.path, error)
    return problem(
        503,
        f"Redis is unavailable ({type(error).__name__}); try again shortly",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )
