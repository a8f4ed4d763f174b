"""`fintask demo`: the whole of fintask on one machine, its workloads, and what happened.

It starts a private Redis and a fresh SQLite database under ``var/demo``, runs the Procfile's
processes (web, both worker types, the scheduler, the local sinks and the sandbox provider),
drives each workload through those real processes, waits for the effects, prints a summary
(ending with the console's URL and an operator token made for it) and stops everything; with
``--keep``, only once the newcomer exploring the console presses Ctrl-C.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Callable

import httpx

from app.broker import setup_broker
from app.local import showcases
from app.local.showcases import DemoContext, DemoSummary, Log
from app.local.stack import LocalStack
from app.settings import Settings

PROCESS_TYPES = ["web", "worker_urgent", "worker", "scheduler", "bridge_celery", "sinks", "sandbox"]


#: What the summary says about the stack's life after the showcases.
KEPT = "until Ctrl-C: explore the console and the API, then stop it all with Ctrl-C"
NOT_KEPT = "no: `fintask demo --keep` leaves it running to explore"


def run_demo(
    settings: Settings,
    *,
    users: int,
    log: Log,
    keep: Callable[[DemoSummary], None] | None = None,
) -> DemoSummary:
    """Start everything, run every showcase, and return the summary; always stop the stack.

    ``keep``, if given, is called with the summary while everything still runs (to show it
    and wait, ``until_stopped``); the stack stops when it returns.
    """
    var_dir = settings.var_dir / "demo"
    shutil.rmtree(var_dir, ignore_errors=True)
    # The demo owns its Redis and database: a fresh private copy of each, whatever is set.
    stack = LocalStack(
        var_dir=var_dir,
        process_types=PROCESS_TYPES,
        extra_env={
            "DATABASE_URL": f"sqlite:///{var_dir / 'fintask.db'}",
            # The sandbox misbehaves as real providers do: slow, rate limited, sometimes down.
            "SANDBOX_LATENCY_MS": "30",
            "SANDBOX_FAIL_RATE": "0.05",
            "SANDBOX_RATE_LIMIT": "8",
            "SANDBOX_REFRESH_SECONDS": "2",
        },
    )
    summary = DemoSummary()
    log(f"starting {', '.join(PROCESS_TYPES)} (logs: {stack.log_path})")
    started = time.monotonic()
    stack.start()
    try:
        summary.add("processes", started_in_s=round(time.monotonic() - started, 1))
        os.environ.update(stack.env)  # this process sends through the same Redis and database
        setup_broker()
        context = DemoContext(stack=stack, users=users, log=log, summary=summary)
        for step in demo_steps():
            log(f"- {step.__doc__}")
            step(context)
        summary.add("processes", healthy_at_end=_healthy(stack.web_url))
        summary.add("console", stays_up=KEPT if keep is not None else NOT_KEPT)
        if keep is not None:
            keep(summary)
    finally:
        code = stack.stop()
    # honcho exits 143 (128 + SIGTERM) when it stopped every process on our SIGTERM.
    summary.add("processes", stopped_cleanly=code == 143)
    return summary


def demo_steps() -> list[Callable[[DemoContext], None]]:
    """Every showcase, in order: the workloads, a Celery producer's tasks through the bridge,
    then the console, whose URL and operator token end the summary."""
    # Imported here: Celery is in the bench dependency group, which `make demo` installs and a
    # production install may lack, and `fintask run` imports this module.
    from app.local.celery_migration import celery_migration

    return [*showcases.WORKLOAD_STEPS, celery_migration, showcases.console]


def until_stopped() -> None:
    """Block until Ctrl-C (SIGINT) or SIGTERM, then return, so that the stack is stopped in
    order: the processes first, then Redis (``RedisServer`` keeps the terminal's Ctrl-C away)."""
    stopping = threading.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {number: signal.signal(number, lambda *_: stopping.set()) for number in signals}
    try:
        stopping.wait()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _healthy(web_url: str) -> bool:
    try:
        return httpx.get(f"{web_url}/healthz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False
