"""Global rate limits per actor that defer a message instead of failing it.

Dramatiq's own limiters raise ``RateLimitExceeded`` inside the actor: that spends a retry, backs
off exponentially and dead-letters the message after ``max_retries`` misses, so a burst larger
than the limit loses work. Here an actor declares ``rate_limit="70/s"`` (or ``/m``, ``/h``); a
message over the limit is not run but re-enqueued with a delay until its slot, and the current
delivery is acknowledged with ``SkipMessage``: no retry is spent and no worker thread sleeps.
The limiter is a GCRA (a token bucket in continuous time) kept in Redis by one Lua script, on
Redis's clock, so the limit holds across every worker process and host.

Starts are spaced one interval apart (after the middleware's ``burst``). A deferred
message reserves its slot, so it is deferred once, and never starts before that slot; it can
start late: a due delayed message goes back to the *tail* of its queue, so it waits for
whatever is queued ahead of it (and for its consumer's next poll). Late returns bunch: over
any W seconds, at most ``rate x (W + lateness) + burst`` starts, where the lateness includes
the queue's own backlog ahead of the returning message. With a backlog queued before the
workers start, the first pass over it (deferring every message to its slot) is that backlog:
the benchmark's full run (``bench/results/full-rate_limit``) saw 133 starts in the second that
opened its window, whose messages started a median 3.6 s (at most 6.8 s) after their slots;
20.6/s over the 30 s window. Without a backlog ahead, measured at 20/s on 2 x 8 threads over
30 s: 19.97/s, busiest second 39 starts at the default poll, 23 with
``dramatiq_worker_timeout=100``. ``max_age`` still counts from the first send: a message whose
slot lies beyond it expires (``AgeLimit``) instead of running.

What operators see (the console's Limits page): each deferral is counted per minute
(``app.minute_counts``, series ``deferred:<actor>``), and :func:`read_booked` tells how far
ahead of now each limiter's starts are already booked, from the limiter's own key.
"""

from __future__ import annotations

import functools
import random
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import redis
from dramatiq import Actor, Broker, Middleware
from dramatiq.broker import MessageProxy
from dramatiq.logging import get_logger
from dramatiq.middleware import SkipMessage

from app.middleware import (
    InvalidActorOption,
    RedisSource,
    RedisUnavailable,
    defer_message,
    lazy_client,
    option,
)
from app.minute_counts import TALLY, MinuteTally

#: The message option holding the limiter slot a deferred message reserved.
SLOT_OPTION = "rate_limit_slot"
#: The prefix of the limiters' Redis keys unless a ``RateLimits`` is given another.
NAMESPACE = "fintask"
#: The field a deferral is counted under in its actor's series: a limit is the actor's
#: whole, never split by partition (an account, a provider).
ALL_PARTITIONS = "all"

_PERIODS_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(s|m|h)\s*$")

# KEYS[1]: the limiter's theoretical arrival time (TAT), in µs on Redis's clock.
# ARGV: the emission interval and the burst tolerance in µs, and the slot this message reserved
# when it was deferred ("" if none). Returns {µs to wait, slot}: {"0", "0"} means run now.
# A message over the limit reserves the next free slot: it is deferred once, to that slot,
# instead of coming back with a herd of others to be deferred again and again.
_GCRA = """
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local reserved = tonumber(ARGV[3])
if reserved then
  if now >= reserved then return {"0", "0"} end
  return {string.format("%d", reserved - now), ARGV[3]}
end
local interval = tonumber(ARGV[1])
local tat = math.max(tonumber(redis.call("GET", KEYS[1]) or now), now)
local slot = math.max(tat - tonumber(ARGV[2]), now)
redis.call("SET", KEYS[1], string.format("%d", tat + interval), "PX",
           math.ceil((tat + interval - now) / 1000) + 1000)
if slot <= now then return {"0", "0"} end
return {string.format("%d", slot - now), string.format("%d", slot)}
"""


@dataclass(frozen=True)
class Rate:
    """``count`` starts per ``period_ms``."""

    count: int
    period_ms: int

    @property
    def interval_us(self) -> float:
        """The time between two starts at a steady pace, in microseconds."""
        return self.period_ms * 1000 / self.count


@functools.lru_cache(maxsize=256)
def parse_rate(text: str) -> Rate:
    """``"70/s"``, ``"100/m"`` or ``"5000/h"`` as a ``Rate``; ``ValueError`` otherwise."""
    match = _RATE.match(text) if isinstance(text, str) else None
    if match is None or int(match[1]) < 1:
        raise ValueError("is not a rate: write COUNT/s, COUNT/m or COUNT/h, e.g. '70/s'")
    return Rate(int(match[1]), _PERIODS_MS[match[2]])


class RateLimits(Middleware):
    """Caps how often an actor starts, across all workers, by deferring the messages over it.

    Actor options (a message's own options win over the actor's):
      rate_limit(str): ``"COUNT/s"``, ``"COUNT/m"`` or ``"COUNT/h"``. Absent: no limit.

    Parameters:
      client: the Redis client that keeps the limiters (or a function making it).
      namespace: the prefix of the Redis keys (``<namespace>:rate:<actor>``).
      burst: how many starts may follow each other without spacing; 1 spaces them evenly.
      max_jitter_ms: the largest random delay added to a deferral.
      on_defer: called with each deferred message and its delay in ms (for metrics).
      override: the rate an operator set for an actor at runtime (``fintask limits set``),
        by actor name, or ``None``; it wins over the declared one, and may limit an actor
        that declares none.
      tally: the counts per minute each deferral is added to (``deferral_series``); a worker
        process's ``FleetControl`` flushes it to Redis with its record.

    ``deferred`` counts deferrals per actor name in this process.
    """

    def __init__(
        self,
        *,
        client: RedisSource,
        namespace: str = NAMESPACE,
        burst: int = 1,
        max_jitter_ms: int = 50,
        on_defer: Callable[[MessageProxy, int], None] | None = None,
        override: Callable[[str], str | None] | None = None,
        tally: MinuteTally = TALLY,
    ) -> None:
        self.logger = get_logger(__name__, type(self))
        self.client = lazy_client(client)
        self.namespace = namespace
        self.burst = burst
        self.max_jitter_ms = max_jitter_ms
        self.on_defer = on_defer
        self.override = override
        self.tally = tally
        self.deferred: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._script: Callable[..., Any] | None = None

    @property
    def actor_options(self) -> set[str]:
        return {"rate_limit"}

    def before_declare_actor(self, broker: Broker, actor: Actor[..., Any]) -> None:
        rate = actor.options.get("rate_limit")
        if rate is not None:
            try:
                parse_rate(rate)
            except ValueError as error:
                raise InvalidActorOption(actor.actor_name, "rate_limit", rate, str(error)) from None

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        actor = broker.get_actor(message.actor_name)
        text = self.override(actor.actor_name) if self.override is not None else None
        text = text or option(message, actor, "rate_limit")
        if text is None:
            return
        try:
            rate = parse_rate(text)
        except ValueError as error:
            raise InvalidActorOption(actor.actor_name, "rate_limit", text, str(error)) from None
        key = self.redis_key(actor)
        reserved = message.options.get(SLOT_OPTION)
        wait_us, slot = self.acquire(key, rate, burst=self.burst, reserved=reserved)
        if not wait_us:
            # The slot is spent: a retry of this message must queue for a new one.
            message.options.pop(SLOT_OPTION, None)
            return
        jitter_ms = random.uniform(0, min(self.max_jitter_ms, rate.interval_us / 1000))
        delay_ms = max(1, round(wait_us / 1000 + jitter_ms))
        defer_message(
            broker,
            message,
            delay_ms=delay_ms,
            count_option="rate_limit_deferrals",
            options={SLOT_OPTION: slot},
        )
        with self._lock:
            self.deferred[actor.actor_name] += 1
        self.tally.add(deferral_series(actor.actor_name), ALL_PARTITIONS)
        if self.on_defer is not None:
            self.on_defer(message, delay_ms)
        self.logger.debug(
            "Deferred message %r by %d ms (rate limit).", message.message_id, delay_ms
        )
        raise SkipMessage(f"rate limit {text} of {actor.actor_name}: deferred by {delay_ms} ms")

    def acquire(
        self,
        key: str,
        rate: Rate,
        *,
        burst: int = 1,
        reserved: int | None = None,
    ) -> tuple[int, int]:
        """Take a slot under ``rate`` at ``key``: ``(0, 0)`` to run now, else the µs to wait
        and the slot (µs since the epoch, Redis's clock) now reserved for the caller, who
        passes it back as ``reserved`` when that time comes."""
        if self._script is None:
            self._script = self.client().register_script(_GCRA)
        tolerance_us = rate.interval_us * (burst - 1)
        args = [rate.interval_us, tolerance_us, "" if reserved is None else int(reserved)]
        try:
            wait_us, slot = self._script(keys=[key], args=args)
        except redis.RedisError as error:
            raise RedisUnavailable(f"could not check rate limit {key!r}: {error}") from error
        return int(wait_us), int(slot)

    def redis_key(self, actor: Actor[..., Any]) -> str:
        """The Redis key of the limiter the actor's messages count against."""
        return limiter_key(actor.actor_name, namespace=self.namespace)


def limiter_key(actor_name: str, *, namespace: str = NAMESPACE) -> str:
    """The Redis key of ``actor_name``'s limiter: its theoretical arrival time (GCRA)."""
    return f"{namespace}:rate:{actor_name}"


def deferral_series(actor_name: str) -> str:
    """The series of counts per minute (``app.minute_counts``) of ``actor_name``'s deferrals."""
    return f"deferred:{actor_name}"


def read_booked(
    client: redis.Redis, actor_names: Iterable[str], *, namespace: str = NAMESPACE
) -> dict[str, float]:
    """How far ahead of now, in seconds, each actor's limiter has booked its starts.

    The limiter's key holds the time its next start may take (its TAT), so the distance from
    now to it is its usage: 0 for an idle limiter, about one interval for one running at its
    limit, more for one with deferred messages waiting for their slots (divide by the interval
    for their number). Read on Redis's clock, as the limiter writes it.
    """
    names = list(actor_names)
    pipe = client.pipeline(transaction=False)
    pipe.time()
    for name in names:
        pipe.get(limiter_key(name, namespace=namespace))
    (seconds, micros), *tats = pipe.execute()
    now_us = int(seconds) * 1_000_000 + int(micros)
    return {
        name: 0.0 if tat is None else max(0, int(tat) - now_us) / 1_000_000
        for name, tat in zip(names, tats, strict=True)
    }
