"""What the sandbox served, counted in memory for tests to read at ``GET /_sandbox/stats``.

A test asserts on what the provider saw (how many 429s, how many requests in one second), not on
what the client believes it sent.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict

from pydantic import BaseModel

from sandbox.config import Clock


class EndpointStats(BaseModel):
    """Requests one endpoint answered, by status code."""

    requests: int
    by_status: dict[str, int]


class SecondStats(BaseModel):
    """Requests that arrived within one second since the sandbox started (or was reset)."""

    second: int
    requests: int
    rate_limited: int


class StatsReport(BaseModel):
    """``GET /_sandbox/stats``; endpoints are keyed like ``"GET /accounts/{external_id}"``."""

    total_requests: int
    by_status: dict[str, int]
    endpoints: dict[str, EndpointStats]
    per_second: list[SecondStats]
    max_requests_per_second: int


class RequestStats:
    """Counts of answered requests per endpoint, per status and per second of arrival."""

    def __init__(self, *, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Start counting from zero, with second 0 beginning now."""
        with self._lock:
            self._started = self._clock()
            self._by_endpoint: defaultdict[str, Counter[int]] = defaultdict(Counter)
            self._by_second: defaultdict[int, Counter[int]] = defaultdict(Counter)

    def second_of(self, arrived_at: float) -> int:
        """The whole second since the start in which a request arriving at ``arrived_at`` falls."""
        return int(arrived_at - self._started)

    def record(self, *, endpoint: str, status: int, arrived_at: float) -> None:
        """Count one answered request."""
        with self._lock:
            self._by_endpoint[endpoint][status] += 1
            self._by_second[self.second_of(arrived_at)][status] += 1

    def report(self) -> StatsReport:
        """Every count so far."""
        with self._lock:
            by_status: Counter[int] = Counter()
            for statuses in self._by_endpoint.values():
                by_status.update(statuses)
            per_second = [
                SecondStats(second=s, requests=c.total(), rate_limited=c[429])
                for s, c in sorted(self._by_second.items())
            ]
            return StatsReport(
                total_requests=by_status.total(),
                by_status=_keyed(by_status),
                endpoints={
                    endpoint: EndpointStats(requests=c.total(), by_status=_keyed(c))
                    for endpoint, c in sorted(self._by_endpoint.items())
                },
                per_second=per_second,
                max_requests_per_second=max((s.requests for s in per_second), default=0),
            )


def _keyed(counter: Counter[int]) -> dict[str, int]:
    return {str(status): count for status, count in sorted(counter.items())}
