"""The web process: the HTTP API, health and the broker-wide Prometheus metrics."""

from __future__ import annotations

from collections.abc import Iterator

import dramatiq
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import BaseModel
from sqlalchemy import text

import actors  # noqa: F401  (declares every actor, and so every queue, on the broker)
from app.db.session import default_engine
from app.queues import canonical_queue_names, queue_depths
from app.redis_client import get_redis

app = FastAPI(
    title="fintask",
    summary="Background work of a personal-finance service on Dramatiq and Redis.",
    version="0.1.0",
)


class Health(BaseModel):
    status: str
    database: str
    redis: str


@app.get("/healthz", response_model=Health, responses={503: {"model": Health}})
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


class QueueDepthCollector(Collector):
    """Ready, delayed and dead messages per declared queue, read from Redis at scrape time."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "fintask_queue_messages",
            "Messages waiting in a queue, by state (ready, delayed, dead).",
            labels=["queue_name", "state"],
        )
        names = canonical_queue_names(dramatiq.get_broker().get_declared_queues())
        for depth in queue_depths(get_redis(), names):
            for state in ("ready", "delayed", "dead"):
                gauge.add_metric([depth.queue_name, state], getattr(depth, state))
        yield gauge


_registry = CollectorRegistry()
_registry.register(QueueDepthCollector())


@app.get("/metrics", response_class=Response)
def metrics() -> Response:
    """Prometheus exposition of the broker-wide gauges."""
    return Response(generate_latest(_registry), media_type=CONTENT_TYPE_LATEST)
