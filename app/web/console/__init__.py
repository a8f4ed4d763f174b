"""The console: what Flower and Sidekiq Web gave, in a browser, under ``/console``.

Server-rendered pages (Jinja2) over the control plane (``app.control``): every action goes
through ``app.control.actions.Operator``, as the CLI's and the API's do, so it is audited
alike. Every file a page loads is served from ``/console/static``: the console works with no
internet and under a Content-Security-Policy that forbids inline scripts (``security``).
Sign-in, roles and CSRF are in ``access``, ``sessions`` and ``signin``.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from app.broker_features import RedisBrokerOnly
from app.web import errors
from app.web.console import (
    audit,
    batches,
    limits,
    messages,
    overview,
    queues,
    runs,
    schedule,
    signin,
    workers,
)
from app.web.console.access import HOME, ConsoleRefused, SignInRequired, sign_in_url
from app.web.console.render import STATIC_DIR, render
from app.web.console.security import SecurityHeaders

#: What the console's live regions send, so that an expired session answers them with a 401
#: (the page then reloads to the sign-in form) instead of a redirect they cannot follow.
FETCH_HEADER = "x-console-fetch"


def install(app: FastAPI) -> None:
    """Serve the console, its files and its error pages from ``app``."""
    pages = (signin, overview, queues, messages, workers, schedule, runs, batches, limits, audit)
    for module in pages:
        app.include_router(module.router, include_in_schema=False)
    app.mount(f"{HOME}/static", StaticFiles(directory=str(STATIC_DIR)), name="console-static")
    app.add_middleware(SecurityHeaders, console_prefix=HOME)
    app.add_exception_handler(SignInRequired, _sign_in_required)
    app.add_exception_handler(ConsoleRefused, _refused)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(RedisBrokerOnly, _redis_broker_only)


async def _sign_in_required(request: Request, error: Exception) -> Response:
    assert isinstance(error, SignInRequired)
    if request.headers.get(FETCH_HEADER):
        return PlainTextResponse("sign in again", status_code=401)
    return RedirectResponse(sign_in_url(error.next_path), status_code=303)


async def _refused(request: Request, error: Exception) -> Response:
    assert isinstance(error, ConsoleRefused)
    return _error_page(request, error.status_code, error.text)


async def _http_error(request: Request, error: Exception) -> Response:
    """A console page's HTTP error as a page; the API's stays problem details."""
    answer = await errors.http_error(request, error)
    return _as_page(request, answer)


async def _invalid_request(request: Request, error: Exception) -> Response:
    answer = await errors.invalid_request(request, error)
    return _as_page(request, answer)


async def _redis_broker_only(request: Request, error: Exception) -> Response:
    """A page that needs Dramatiq's Redis queue keys, on RabbitMQ: the reason, as a page."""
    answer = await errors.redis_broker_only(request, error)
    return _as_page(request, answer)


def _as_page(request: Request, answer: Response) -> Response:
    if not _is_console_page(request):
        return answer
    detail = errors.problem_detail(answer)
    return _error_page(request, answer.status_code, detail)


def _error_page(request: Request, status_code: int, text: str) -> Response:
    return render(
        request, None, "error.html", status_code=status_code, status=status_code, text=text
    )


def _is_console_page(request: Request) -> bool:
    path = request.url.path
    return path.startswith(HOME) and not path.startswith(f"{HOME}/static/")
