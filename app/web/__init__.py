"""The web process: the HTTP API, health and the broker-wide Prometheus metrics.

``create_app`` is the process's entry point (``gunicorn 'app.web:create_app()'``): it builds the
broker first, so the actors this process sends to are declared on it.
"""

from __future__ import annotations

from fastapi import FastAPI

import actors  # noqa: F401  (declares every actor, and so every queue, once the broker is built)
from app.broker import setup_broker
from app.web import health, jobs, metrics, runs
from app.web.errors import install_error_handlers


def create_app() -> FastAPI:
    """The web application, on this process's broker."""
    setup_broker()
    app = FastAPI(
        title="fintask",
        summary="Background work of a personal-finance service on Dramatiq and Redis.",
        version="0.1.0",
    )
    for module in (jobs, runs, health, metrics):
        app.include_router(module.router)
    install_error_handlers(app)
    return app
