"""Refreshes: the aggregator re-reading an account from the bank, which takes a while.

A refresh is ``in_progress`` for its duration and ``done`` after it. Asking again for an account
whose refresh is still running returns that refresh, as aggregators do, so a client that retries
its request does not start a second one.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel

from sandbox.config import Clock


class RefreshStatus(BaseModel):
    """The body of ``POST /accounts/{id}/refresh`` and ``GET /refreshes/{refresh_id}``."""

    refresh_id: str
    account_id: str
    status: Literal["in_progress", "done"]
    progress_percent: int


@dataclass(frozen=True)
class _Refresh:
    refresh_id: str
    account_id: str
    started_at: float
    duration_s: float
    never_finishes: bool


class Refreshes:
    """The refreshes this sandbox has started, in memory, timed by ``clock``."""

    def __init__(self, *, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._by_id: dict[str, _Refresh] = {}
        self._latest: dict[str, str] = {}  # account -> its newest refresh

    def start(self, account_id: str, *, duration_s: float, never_finishes: bool) -> RefreshStatus:
        """Start a refresh of ``account_id``, or return the one that is still running."""
        with self._lock:
            running = self._by_id.get(self._latest.get(account_id, ""))
            if running is not None and self._status(running).status == "in_progress":
                return self._status(running)
            refresh = _Refresh(
                refresh_id=f"ref-{secrets.token_hex(8)}",
                account_id=account_id,
                started_at=self._clock(),
                duration_s=duration_s,
                never_finishes=never_finishes,
            )
            self._by_id[refresh.refresh_id] = refresh
            self._latest[account_id] = refresh.refresh_id
            return self._status(refresh)

    def status(self, refresh_id: str) -> RefreshStatus | None:
        """Where a refresh stands; ``None`` for an id this sandbox never handed out."""
        with self._lock:
            refresh = self._by_id.get(refresh_id)
            return None if refresh is None else self._status(refresh)

    def _status(self, refresh: _Refresh) -> RefreshStatus:
        elapsed = self._clock() - refresh.started_at
        finished = not refresh.never_finishes and elapsed >= refresh.duration_s
        # A refresh that never finishes creeps up to 99 % and stays there, as stuck ones do.
        progress = 100 if finished else min(99, int(100 * elapsed / max(refresh.duration_s, 1e-9)))
        return RefreshStatus(
            refresh_id=refresh.refresh_id,
            account_id=refresh.account_id,
            status="done" if finished else "in_progress",
            progress_percent=progress,
        )
