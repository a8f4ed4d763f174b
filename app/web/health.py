"""``GET /healthz``: whether this web process can reach the database and Redis."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from app.db.session import default_engine
from app.redis_client import get_redis

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    database: str
    redis: str


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
def healthz() -> JSONResponse:
    """200 when the database and Redis answer; 503 naming the one that does not."""
    checks = {"database": _check_database(), "redis": _check_redis()}
    healthy = all(result == "ok" for result in checks.values())
    body = Health(status="ok" if healthy else "unavailable", **checks)
    return JSONResponse(body.model_dump(), status_code=200 if healthy else 503)


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
