"""Faults a request meets: latency, random 5xx, per-client rate limits, slow refreshes.

Each fault has a default in ``SandboxConfig`` and an ``X-Sandbox-*`` request header that
overrides it for that request alone, so a test can ask one shared sandbox for the fault it needs.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from sandbox.config import Clock, SandboxConfig, parse_flag

LATENCY_HEADER = "X-Sandbox-Latency-Ms"
FAIL_RATE_HEADER = "X-Sandbox-Fail-Rate"
RATE_LIMIT_HEADER = "X-Sandbox-Rate-Limit"
REFRESH_SECONDS_HEADER = "X-Sandbox-Refresh-Seconds"
REFRESH_NEVER_FINISHES_HEADER = "X-Sandbox-Refresh-Never-Finishes"
#: Who a rate limit counts for, as an API key would; the client's address when absent.
CLIENT_ID_HEADER = "X-Sandbox-Client-Id"

FAULT_STATUSES = (500, 502, 503)


class BadFaultHeader(ValueError):
    """An ``X-Sandbox-*`` header holds a value the sandbox cannot use; the message names it."""


@dataclass(frozen=True, kw_only=True)
class RequestFaults:
    """The faults one request meets: the config's defaults with its headers applied."""

    latency_ms: int
    fail_rate: float
    rate_limit_per_s: float | None
    refresh_seconds: float
    refresh_never_finishes: bool

    @classmethod
    def resolve(cls, config: SandboxConfig, headers: Mapping[str, str]) -> RequestFaults:
        """Apply the request's ``X-Sandbox-*`` headers (case-insensitive) over ``config``."""
        lowered = {name.lower(): value for name, value in headers.items()}

        def number(header: str, default: float, low: float, high: float) -> float:
            raw = lowered.get(header.lower())
            if raw is None:
                return default
            try:
                value = float(raw)
            except ValueError:
                value = math.nan
            if not low <= value <= high:  # NaN fails this too
                raise BadFaultHeader(
                    f"{header}={raw!r}: expected a number from {low:g} to {high:g}"
                )
            return value

        rate_limit = number(RATE_LIMIT_HEADER, config.rate_limit_per_s or 0.0, 0.0, 1e6)
        never_raw = lowered.get(REFRESH_NEVER_FINISHES_HEADER.lower())
        try:
            never = config.refresh_never_finishes
            if never_raw is not None:
                never = parse_flag(never_raw, REFRESH_NEVER_FINISHES_HEADER)
        except ValueError as error:
            raise BadFaultHeader(str(error)) from None
        return cls(
            latency_ms=int(number(LATENCY_HEADER, config.latency_ms, 0, 60_000)),
            fail_rate=number(FAIL_RATE_HEADER, config.fail_rate, 0.0, 1.0),
            # 0 switches the limit off for this request, as it does in the environment.
            rate_limit_per_s=rate_limit or None,
            refresh_seconds=number(REFRESH_SECONDS_HEADER, config.refresh_seconds, 0.0, 86_400.0),
            refresh_never_finishes=never,
        )


class FailureDice:
    """Decides which requests fail with a 5xx; seeded, the same requests fail on every run."""

    def __init__(self, *, seed: int | None) -> None:
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def roll(self, fail_rate: float) -> int | None:
        """The 5xx status to answer with, or ``None`` to serve the request."""
        if fail_rate <= 0.0:
            return None
        with self._lock:
            if self._rng.random() >= fail_rate:
                return None
            return self._rng.choice(FAULT_STATUSES)


class RateLimiter:
    """One token bucket per client: ``rate`` tokens a second, bursts of up to ``rate`` (>= 1)."""

    def __init__(self, *, clock: Clock) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, as of)
        self._lock = threading.Lock()

    def acquire(self, client: str, rate_per_s: float) -> float:
        """Take a token for ``client``; 0.0 when it got one, else seconds until one is due."""
        capacity = max(1.0, rate_per_s)
        now = self._clock()
        with self._lock:
            tokens, as_of = self._buckets.get(client, (capacity, now))
            tokens = min(capacity, tokens + (now - as_of) * rate_per_s)
            if tokens >= 1.0:
                self._buckets[client] = (tokens - 1.0, now)
                return 0.0
            self._buckets[client] = (tokens, now)
            return (1.0 - tokens) / rate_per_s

    def reset(self) -> None:
        """Forget every client's bucket."""
        with self._lock:
            self._buckets.clear()


def retry_after_header(wait_s: float) -> str:
    """``Retry-After`` in whole seconds (the header allows no fractions), never 0."""
    return str(max(1, math.ceil(wait_s)))
