"""The console's Workers page: every worker process, what it runs now, and what a gone one left.

The rows are the control plane's worker views (``app.control.workers``), as ``GET
/api/workers`` lists them: alive, stopped, or gone with its last heartbeat and the messages
still in its ack sets, which wait for ``DeadWorkerRecovery``. The table refreshes itself
(``console.js``), so a message's running time and a worker going away show without a reload.
"""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.common import current_millis
from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.control.actions import queue_names
from app.control.workers import WorkerView, list_workers
from app.redis_client import get_redis
from app.web.console.access import User
from app.web.console.render import fragment, render

router = APIRouter()

#: The live region's own address: the table alone.
LIVE = "/console/workers/live"
#: The states a worker can be in, in the order the page counts them.
STATES = ("alive", "gone", "stopped")


@router.get("/console/workers")
def workers_page(request: Request, user: User) -> Response:
    """The workers seen in the last day, alive first."""
    return render(request, user, "workers.html", live=LIVE, **_workers())


@router.get(LIVE)
def workers_live(request: Request, user: User) -> Response:
    """The workers table again, for the page's live region."""
    return fragment(request, "_workers_table.html", **_workers())


def _workers() -> dict[str, Any]:
    """What the table shows: a row per worker, and how many are in each state."""
    views = list_workers(get_redis(), queue_names(dramatiq.get_broker()))
    now_ms = current_millis()
    rows = [worker_row(view, now_ms) for view in views]
    counts = {state: sum(row["state"] == state for row in rows) for state in STATES}
    return {"workers": rows, "counts": counts, "states": STATES}


def worker_row(view: WorkerView, now_ms: int) -> dict[str, Any]:
    """``view`` as the API shows it, with the ages a person reads: since its last heartbeat,
    and how long each message it runs has been running."""
    row = view.as_dict()
    started = [running.get("started_at_ms") for running in view.record.get("running", [])]
    row["heartbeat_age_s"] = _age_s(view.record.get("heartbeat_at_ms"), now_ms)
    row["running"] = [
        {**running, "running_s": _age_s(started_at_ms, now_ms)}
        for running, started_at_ms in zip(row["running"], started, strict=True)
    ]
    return row


def _age_s(moment_ms: object, now_ms: int) -> float | None:
    """Seconds from ``moment_ms`` to now (never negative: clocks of hosts differ a little);
    None for a record that has no such time."""
    if not isinstance(moment_ms, int | float) or isinstance(moment_ms, bool):
        return None
    return max(0.0, (now_ms - moment_ms) / 1000)
