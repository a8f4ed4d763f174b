"""`fintask demo`: the whole of fintask on one machine, its workloads, and what happened.

It starts a private Redis and a fresh SQLite database under ``var/demo``, runs the Procfile's
processes (web, both worker types, the scheduler, the local sinks and the sandbox provider),
drives each workload through those real processes, waits for the effects, prints a summary
and stops everything.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from app.settings import Settings
from app.stack import LocalStack

PROCESS_TYPES = ["web", "worker_urgent", "worker", "scheduler", "sinks", "sandbox"]

Log = Callable[[str], None]


@dataclass
class DemoSummary:
    """What each showcase did, section by section, for people (``render``) and machines."""

    sections: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, section: str, **values: Any) -> None:
        self.sections.setdefault(section, {}).update(values)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return self.sections

    def render(self) -> str:
        lines = ["", "fintask demo summary", "===================="]
        for section, values in self.sections.items():
            lines.append(f"\n{section}")
            width = max(len(key) for key in values)
            lines += [f"  {key.ljust(width)}  {value}" for key, value in values.items()]
        return "\n".join(lines)


@dataclass
class DemoContext:
    """What a showcase step needs: the running stack and where the sinks write."""

    stack: LocalStack
    users: int
    log: Log
    summary: DemoSummary

    @property
    def sinks_dir(self) -> Path:
        return self.stack.var_dir / "sinks"


def run_demo(settings: Settings, *, users: int, log: Log) -> DemoSummary:
    """Start everything, run every showcase, and return the summary; always stop the stack."""
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
        context = DemoContext(stack=stack, users=users, log=log, summary=summary)
        from app import showcases

        for step in showcases.STEPS:
            log(f"- {step.__doc__}")
            step(context)
        summary.add("processes", healthy_at_end=_healthy(stack.web_url))
    finally:
        code = stack.stop()
    # honcho exits 143 (128 + SIGTERM) when it stopped every process on our SIGTERM.
    summary.add("processes", stopped_cleanly=code == 143)
    return summary


def _healthy(web_url: str) -> bool:
    try:
        return httpx.get(f"{web_url}/healthz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False
