"""The console's Overview: each queue's messages and rates, the workers, the runs, the alerts.

The figures are the control plane's overview (``app.control.overview``) and the alerts those
of ``ops/alerts.yml`` evaluated over it (``app.control.alerts``). Everything that changes is in
one live region, which ``console.js`` replaces every few seconds with ``LIVE``'s answer, so a
queue is seen to fill and drain without a reload; the rules' list below it stays.
"""

from __future__ import annotations

from typing import Any

import dramatiq
from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.control.actions import queue_names
from app.control.alerts import NOT_EVALUABLE, RULES, read_alerts
from app.control.overview import read_overview
from app.redis_client import get_redis
from app.settings import load_settings
from app.web.console.access import User
from app.web.console.render import fragment, render
from app.web.console.sparkline import sparkline
from app.web.deps import SessionDep

router = APIRouter()

#: The live region's own address: everything of the page that changes.
LIVE = "/console/overview/live"


@router.get("/console")
def overview_page(request: Request, user: User, session: SessionDep) -> Response:
    """The fleet at a glance, with every alert rule and how the console evaluates it."""
    return render(
        request,
        user,
        "overview.html",
        live=LIVE,
        rules=RULES,
        not_evaluable=NOT_EVALUABLE,
        **_live(session),
    )


@router.get(LIVE)
def overview_live(request: Request, user: User, session: SessionDep) -> Response:
    """The page's live region again, read now."""
    return fragment(request, "_overview_live.html", **_live(session))


def _live(session: SessionDep) -> dict[str, Any]:
    client = get_redis()
    overview = read_overview(
        client,
        session,
        queue_names(dramatiq.get_broker()),
        heartbeat_timeout_ms=load_settings().heartbeat_timeout_ms,
    )
    lines = {
        queue.queue_name: sparkline({"done": queue.done, "failed": queue.failed})
        for queue in overview.queues
    }
    return {
        "overview": overview,
        "alerts": read_alerts(client, session, overview),
        "sparklines": lines,
    }
