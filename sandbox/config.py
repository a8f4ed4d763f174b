"""The sandbox's fault settings, from app-factory arguments or ``SANDBOX_*`` variables.

Faults set here hold for every request; a request can override each of them with an
``X-Sandbox-*`` header (see ``sandbox.faults``), so one running sandbox serves tests that need
different faults.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, kw_only=True)
class SandboxConfig:
    """Faults the sandbox injects by default, and the clock it keeps time with.

    ``clock`` (seconds, monotonic) drives refresh progress, the rate limiter's token buckets and
    the per-second statistics; ``sleep`` adds latency. Tests inject both so that nothing waits.
    """

    latency_ms: int = 0
    fail_rate: float = 0.0
    #: Requests per second per client; ``None`` means no limit.
    rate_limit_per_s: float | None = None
    refresh_seconds: float = 2.0
    refresh_never_finishes: bool = False
    #: Seed of the RNG that decides which requests fail; ``None`` seeds from the OS.
    seed: int | None = None
    clock: Clock = field(default=time.monotonic, repr=False)
    sleep: Sleep = field(default=asyncio.sleep, repr=False)

    def __post_init__(self) -> None:
        if self.latency_ms < 0:
            raise ValueError(f"latency_ms={self.latency_ms}: expected 0 or more")
        if not 0.0 <= self.fail_rate <= 1.0:
            raise ValueError(f"fail_rate={self.fail_rate}: expected a number from 0 to 1")
        if self.rate_limit_per_s is not None and self.rate_limit_per_s <= 0:
            raise ValueError(f"rate_limit_per_s={self.rate_limit_per_s}: expected more than 0")
        if self.refresh_seconds < 0:
            raise ValueError(f"refresh_seconds={self.refresh_seconds}: expected 0 or more")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SandboxConfig:
        """Read ``SANDBOX_LATENCY_MS``, ``SANDBOX_FAIL_RATE``, ``SANDBOX_RATE_LIMIT`` (requests
        per second; 0 or unset: none), ``SANDBOX_REFRESH_SECONDS``,
        ``SANDBOX_REFRESH_NEVER_FINISHES`` and ``SANDBOX_SEED``; errors name the variable."""
        env = os.environ if environ is None else environ
        refresh_seconds = _number(env, "SANDBOX_REFRESH_SECONDS", 0, 86_400)
        seed = _number(env, "SANDBOX_SEED", 0, 2**63)
        return cls(
            latency_ms=int(_number(env, "SANDBOX_LATENCY_MS", 0, 60_000) or 0),
            fail_rate=_number(env, "SANDBOX_FAIL_RATE", 0, 1) or 0.0,
            rate_limit_per_s=_number(env, "SANDBOX_RATE_LIMIT", 0, 1e6) or None,
            refresh_seconds=2.0 if refresh_seconds is None else refresh_seconds,
            refresh_never_finishes=parse_flag(
                env.get("SANDBOX_REFRESH_NEVER_FINISHES", ""), "SANDBOX_REFRESH_NEVER_FINISHES"
            ),
            seed=None if seed is None else int(seed),
        )


def parse_flag(raw: str, name: str) -> bool:
    """``1/true/yes/on`` and ``0/false/no/off`` (any case); empty means false."""
    value = raw.strip().lower()
    if value in {"", "0", "false", "no", "off"}:
        return False
    if value in {"1", "true", "yes", "on"}:
        return True
    raise ValueError(f"{name}={raw!r}: expected true or false")


def _number(env: Mapping[str, str], name: str, low: float, high: float) -> float | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not low <= value <= high:  # NaN fails this too
        raise ValueError(f"{name}={raw!r}: expected a number from {low:g} to {high:g}")
    return value
