"""The web process: the HTTP API, its docs, health and the broker-wide Prometheus metrics.

``create_app`` is the process's entry point (``gunicorn 'app.web:create_app()'``): it builds the
broker first, so the actors this process sends to are declared on it.
"""

from __future__ import annotations

import functools
from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

import actors  # noqa: F401  (declares every actor, and so every queue, once the broker is built)
from app.broker import setup_broker
from app.web import console, control, health, jobs, metrics, runs
from app.web.access_log import hide_query_secrets
from app.web.errors import install_error_handlers

#: Swagger UI's files (swagger-ui-dist 5, which renders FastAPI's OpenAPI 3.1) and ReDoc's
#: (its standalone bundle), as the ``fastapi-offline`` package ships them: the docs pages load
#: nothing from a CDN (ReDoc's logo aside: ``REDOC_JS``), so they work offline, in the version
#: the lock file pins.
DOCS_FILES_DIR = files("fastapi_offline") / "static"

#: Where the app serves those files.
DOCS_STATIC = "/docs/static"

#: ReDoc's side menu shows Redocly's logo from their CDN, whatever its options say: the app
#: serves the bundle at ``REDOC_JS`` with that one address replaced by an empty image, so the
#: page asks nothing of the internet (``tests/browser/test_api_docs.py`` watches its requests).
REDOC_JS = "/docs/redoc.standalone.js"
REDOC_LOGO_URL = "https://cdn.redoc.ly/redoc/logo-mini.svg"
EMPTY_IMAGE = (
    "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' width='1' height='1'/%3E"
)


def create_app() -> FastAPI:
    """The web application, on this process's broker."""
    setup_broker()
    hide_query_secrets()
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
    console.install(app)  # after: its error pages answer for /console, the API's stay JSON
    return app


def _serve_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) on the app's OpenAPI schema, every file
    of them served by the app."""
    app.mount(DOCS_STATIC, StaticFiles(directory=str(DOCS_FILES_DIR)), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        root = _root_path(request)
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - API docs",
            swagger_js_url=f"{root}{DOCS_STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_STATIC}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        root = _root_path(request)
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - API reference",
            redoc_js_url=f"{root}{REDOC_JS}",
            redoc_favicon_url=f"{root}{DOCS_STATIC}/favicon.png",
            # FastAPI's page would load its fonts from Google; ReDoc falls back to the system's.
            with_google_fonts=False,
        )

    @app.get(REDOC_JS, include_in_schema=False)
    def redoc_js() -> Response:
        return Response(
            _redoc_bundle(),
            media_type="text/javascript",
            headers={"cache-control": "public, max-age=86400"},
        )


@functools.cache
def _redoc_bundle() -> bytes:
    """ReDoc's bundle as ``fastapi-offline`` ships it, but for its logo's address."""
    bundle = (DOCS_FILES_DIR / "redoc.standalone.js").read_text(encoding="utf-8")
    return bundle.replace(REDOC_LOGO_URL, EMPTY_IMAGE).encode()


def _root_path(request: Request) -> str:
    """The path a proxy mounts the app under ("" if none): every URL of a page starts with it."""
    return str(request.scope.get("root_path", "")).rstrip("/")
