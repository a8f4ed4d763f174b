"""Pages as the console renders them: one layout, Jinja2's autoescaping, a few filters.

Every value a template prints is escaped (``autoescape`` for ``.html``), and nothing of a
message's payload reaches a page unmasked (``app.control.masking``): pages show ids, never
the names or addresses behind them.
"""

from __future__ import annotations

import datetime as dt
from importlib.resources import files
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from app.redaction import redact
from app.redis_client import get_redis
from app.timestamps import rfc3339
from app.web.console.sessions import ConsoleSession, pop_flash

TEMPLATES_DIR = files("app.web.console") / "templates"
STATIC_DIR = files("app.web.console") / "static"

#: The console's sections, in the order the navigation shows them: (path, title).
SECTIONS = (
    ("/console", "Overview"),
    ("/console/queues", "Queues"),
    ("/console/workers", "Workers"),
    ("/console/schedule", "Schedule"),
    ("/console/runs", "Runs"),
    ("/console/batches", "Batches"),
    ("/console/jobs", "Jobs"),
    ("/console/limits", "Limits"),
    ("/console/audit", "Audit"),
)

templates = Jinja2Templates(directory=str(TEMPLATES_DIR))


def render(
    request: Request,
    user: ConsoleSession | None,
    template: str,
    *,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """A full page in the console's layout, with the user's pending result line shown once."""
    flash = None if user is None else pop_flash(get_redis(), user.session_id)
    return templates.TemplateResponse(
        request,
        template,
        {"user": user, "flash": flash, "sections": SECTIONS, **context},
        status_code=status_code,
    )


def fragment(request: Request, template: str, **context: Any) -> HTMLResponse:
    """A part of a page, without the layout: what a live region fetches to refresh itself."""
    return templates.TemplateResponse(request, template, context)


def duration(seconds: float | None) -> str:
    """``seconds`` as a person reads it: ``42 s``, ``3 min 5 s``, ``2 h 10 min``, ``3 d 4 h``."""
    if seconds is None:
        return "—"
    whole = int(seconds)
    if whole < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def timestamp(value: dt.datetime | str | float | int | None) -> str:
    """A moment in UTC to the second, from a datetime, an RFC 3339 text or epoch milliseconds."""
    if isinstance(value, str) and value:
        value = dt.datetime.fromisoformat(value)
    text = rfc3339(value)
    return "—" if text is None else text[:19].replace("T", " ") + " UTC"


templates.env.filters["duration"] = duration
templates.env.filters["timestamp"] = timestamp
templates.env.filters["redact"] = redact
