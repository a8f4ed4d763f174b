"""The web process: the HTTP API, its docs, health and the broker-wide Prometheus metrics.

``create_app`` is the process's entry point (``gunicorn 'app.web:create_app()'``): it builds the
broker first, so the actors this process sends to are declared on it.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

import actors  # noqa: F401  (declares every actor, and so every queue, once the broker is built)
from app.broker import setup_broker
from app.web import control, health, jobs, metrics, runs
from app.web.errors import install_error_handlers

#: Swagger UI's files (swagger-ui-dist 5, which renders FastAPI's OpenAPI 3.1), as the
#: ``fastapi-offline`` package ships them: the docs page loads nothing from a CDN, so it works
#: offline and behind a strict Content-Security-Policy, in the version the lock file pins.
SWAGGER_UI_DIR = files("fastapi_offline") / "static"

#: Where the app serves those files.
DOCS_STATIC = "/docs/static"


def create_app() -> FastAPI:
    """The web application, on this process's broker."""
    setup_broker()
    app = FastAPI(
        title="fintask",
        summary="Background work of a personal-finance service on Dramatiq and Redis.",
        version="0.1.0",
        docs_url=None,  # FastAPI's own page loads Swagger UI from a CDN: _serve_docs replaces it
        redoc_url=None,
    )
    for module in (jobs, runs, control, health, metrics):
        app.include_router(module.router)
    _serve_docs(app)
    install_error_handlers(app)
    return app


def _serve_docs(app: FastAPI) -> None:
    """``/docs``: Swagger UI on the app's OpenAPI schema, every file of it served by the app."""
    app.mount(DOCS_STATIC, StaticFiles(directory=str(SWAGGER_UI_DIR)), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        # Behind a proxy that mounts the app under a path, every URL starts with that path.
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - API docs",
            swagger_js_url=f"{root}{DOCS_STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_STATIC}/favicon.png",
        )
