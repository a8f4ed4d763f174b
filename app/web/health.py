"""``GET /healthz``: whether this web process can reach the database, Redis and, when the
messages go there (``BROKER_URL=amqp://...``), RabbitMQ."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from app.db.session import default_engine
from app.rabbitmq import check_connection
from app.redis_client import get_redis
from app.settings import SettingsError, load_settings

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    database: str
    redis: str
    #: Present only when the messages go to RabbitMQ; on Redis, ``redis`` is the broker too.
    broker: str | None = None


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
def healthz() -> JSONResponse:
    """200 when the database, Redis and the broker answer; 503 naming the one that does not."""
    checks = {"database": _check_database(), "redis": _check_redis()}
    rabbitmq_url = load_settings().rabbitmq_url
    if rabbitmq_url is not None:
        checks["broker"] = _check_rabbitmq(rabbitmq_url)
    healthy = all(result == "ok" for result in checks.values())
    body = Health(status="ok" if healthy else "unavailable", **checks)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=200 if healthy else 503)


def _check_database() -> str:
    try:
        with default_engine().connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as error:  # any failure is the answer, not a crash of the probe
        return f"error: {type(error).__name__}"
    return "ok"


def _check_redis() -> str:
    try:
        get_redis().ping()
    except Exception as error:
        return f"error: {type(error).__name__}"
    return "ok"


def _check_rabbitmq(url: str) -> str:
    """One AMQP connection opened and closed: what a producer's next ``send`` needs."""
    try:
        check_connection(url)
    except SettingsError:  # its text names the host; the answer stays as terse as the others
        return "error: unreachable"
    return "ok"
