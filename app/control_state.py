"""What operators change at runtime, kept in Redis for the whole fleet: paused queues, revoked
messages, delayed messages to release now and rate-limit overrides.

Operators write it through ``app.control`` (the ``fintask`` CLI, the HTTP API); every worker
process reads it through a ``ControlWatcher``. Each change increments one version counter in
the same transaction, so a watcher asks Redis one ``GET`` per second while nothing changes and
reads the whole state only when the version moved: a change reaches every worker within about
a second, and an idle fleet costs one command per process per second.

Revocations are kept by Dramatiq ``message_id`` (the id logs, Sentry and the CLI show; a retry
or a deferral keeps it) until an expiry the caller chooses past the message's ``max_age``:
after that, Dramatiq's ``AgeLimit`` drops the message anyway. They live in Redis, not in a
worker's memory, so a restarted worker still knows them (Celery keeps revokes per worker, in
memory, and forgets them on restart unless ``--statedb`` is set).

A release ("run now" of a delayed message a worker holds in memory until its eta:
``app.middleware.fleet``) is kept by the Redis id of the held copy, not by message id: a retry
keeps the message id but is a new copy with a new Redis id, and must wait out its backoff, not
be released by a request made for an earlier attempt. A held copy is enqueued at its eta at the
latest, so the request is kept until ``RELEASE_KEPT_MS`` past the eta and then forgotten.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import redis
from dramatiq.common import current_millis

from app.redis_client import as_text

#: Incremented by every change, in the transaction that makes it.
VERSION_KEY = "fintask:control:version"
#: A set of queue names whose consumers fetch nothing.
PAUSED_KEY = "fintask:control:paused"
#: A sorted set: revoked message id -> when its revocation may be forgotten (ms since the epoch).
REVOKED_KEY = "fintask:control:revoked"
#: A hash: revoked message id -> how a running copy is stopped ("soft" or "hard").
REVOKED_MODES_KEY = "fintask:control:revoked:modes"
#: A sorted set: Redis id of a held delayed message to release now -> when the request may be
#: forgotten (ms since the epoch).
RELEASED_KEY = "fintask:control:released"
#: A hash: actor name -> the rate limit that replaces its declared one ("70/s").
LIMITS_KEY = "fintask:control:limits"

#: How a running message that is revoked stops: ``soft`` at its flow's next ``check_deadline()``,
#: ``hard`` at once, by an exception raised in its thread (as Dramatiq's ``time_limit`` does).
AbortMode = Literal["soft", "hard"]
ABORT_MODES: tuple[AbortMode, ...] = ("soft", "hard")

#: How often a watcher asks whether the state changed.
POLL_INTERVAL_S = 1.0

#: How long past its message's eta a release request is kept: by its eta every holder enqueues
#: the message anyway, and the margin covers clocks that disagree.
RELEASE_KEPT_MS = 3_600_000

_logger = logging.getLogger(__name__)

# KEYS: revoked, modes, version. ARGV: now (ms), mode, then (message id, expiry ms) pairs.
# Forgets expired revocations, adds the new ones (a later expiry wins), bumps the version.
_REVOKE = """
local expired = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", ARGV[1])
if #expired > 0 then
  redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", ARGV[1])
  redis.call("HDEL", KEYS[2], unpack(expired))
end
local added = 0
for i = 3, #ARGV, 2 do
  added = added + redis.call("ZADD", KEYS[1], "GT", "CH", ARGV[i + 1], ARGV[i])
  redis.call("HSET", KEYS[2], ARGV[i], ARGV[2])
end
redis.call("INCR", KEYS[3])
return added
"""


@dataclass(frozen=True)
class ControlState:
    """The fleet's control state at one version."""

    version: int = 0
    paused: frozenset[str] = frozenset()
    #: Revoked message id -> abort mode.
    revoked: Mapping[str, AbortMode] = field(default_factory=dict)
    #: Redis ids of held delayed messages their holders release now.
    released: frozenset[str] = frozenset()
    #: Actor name -> overriding rate limit text.
    limits: Mapping[str, str] = field(default_factory=dict)


def read_version(client: redis.Redis) -> int:
    """The state's version: 0 before the first change."""
    return int(client.get(VERSION_KEY) or 0)


def read_state(client: redis.Redis, *, now_ms: int | None = None) -> ControlState:
    """The whole state, as one transaction saw it; expired revocations and releases left out."""
    now_ms = current_millis() if now_ms is None else now_ms
    pipe = client.pipeline(transaction=True)
    pipe.get(VERSION_KEY)
    pipe.smembers(PAUSED_KEY)
    pipe.zrangebyscore(REVOKED_KEY, f"({now_ms}", "+inf")
    pipe.hgetall(REVOKED_MODES_KEY)
    pipe.zrangebyscore(RELEASED_KEY, f"({now_ms}", "+inf")
    pipe.hgetall(LIMITS_KEY)
    version, paused, revoked, modes, released, limits = pipe.execute()
    mode_of = {as_text(k): as_text(v) for k, v in modes.items()}
    return ControlState(
        version=int(version or 0),
        paused=frozenset(as_text(name) for name in paused),
        revoked={
            as_text(i): "hard" if mode_of.get(as_text(i)) == "hard" else "soft" for i in revoked
        },
        released=frozenset(as_text(redis_id) for redis_id in released),
        limits={as_text(k): as_text(v) for k, v in limits.items()},
    )


def pause_queue(client: redis.Redis, queue_name: str) -> bool:
    """Stop every consumer of ``queue_name`` fetching; False if it was paused already."""
    return _change(client, lambda pipe: pipe.sadd(PAUSED_KEY, queue_name))


def resume_queue(client: redis.Redis, queue_name: str) -> bool:
    """Let ``queue_name``'s consumers fetch again; False if it was not paused."""
    return _change(client, lambda pipe: pipe.srem(PAUSED_KEY, queue_name))


def set_rate_limit(client: redis.Redis, actor_name: str, rate: str) -> bool:
    """Replace ``actor_name``'s rate limit by ``rate`` across the fleet (the caller checked it
    parses); False if that override was set already."""
    return _change(client, lambda pipe: pipe.hset(LIMITS_KEY, actor_name, rate))


def clear_rate_limit(client: redis.Redis, actor_name: str) -> bool:
    """Go back to ``actor_name``'s declared rate limit; False if none was overridden."""
    return _change(client, lambda pipe: pipe.hdel(LIMITS_KEY, actor_name))


def revoke(
    client: redis.Redis,
    expiries: Mapping[str, int],
    *,
    mode: AbortMode = "soft",
    now_ms: int | None = None,
) -> int:
    """Revoke message ids until their expiry (ms since the epoch); how many were new or
    extended. A running copy of one stops as ``mode`` says; a queued one never starts."""
    if mode not in ABORT_MODES:
        raise ValueError(f"abort mode {mode!r} is not one of {', '.join(ABORT_MODES)}")
    now_ms = current_millis() if now_ms is None else now_ms
    args: list[str | int] = [now_ms, mode]
    for message_id, expiry_ms in expiries.items():
        args += [message_id, int(expiry_ms)]
    script = client.register_script(_REVOKE)
    return int(script(keys=[REVOKED_KEY, REVOKED_MODES_KEY, VERSION_KEY], args=args))


def release(
    client: redis.Redis, redis_id: str, *, eta_ms: int | None, now_ms: int | None = None
) -> bool:
    """Ask the worker holding delayed message ``redis_id`` (due at ``eta_ms``) to enqueue it
    now, until ``RELEASE_KEPT_MS`` past its eta (past now if it has none, or it is due
    already); whether the request is new or extended. Expired requests are forgotten in the
    same transaction."""
    now_ms = current_millis() if now_ms is None else now_ms
    until_ms = max(now_ms, eta_ms or now_ms) + RELEASE_KEPT_MS
    pipe = client.pipeline(transaction=True)
    pipe.zremrangebyscore(RELEASED_KEY, "-inf", now_ms)
    pipe.zadd(RELEASED_KEY, {redis_id: until_ms}, gt=True, ch=True)
    pipe.incr(VERSION_KEY)
    _, changed, _ = pipe.execute()
    return bool(changed)


def _change(client: redis.Redis, command: Callable[[redis.client.Pipeline], object]) -> bool:
    pipe = client.pipeline(transaction=True)
    command(pipe)
    pipe.incr(VERSION_KEY)
    changed, _ = pipe.execute()
    return bool(changed)


class ControlWatcher:
    """A process's copy of the control state, refreshed from Redis about once a second.

    ``start()`` runs the refresh on a daemon thread (worker processes); without it the copy is
    refreshed on ``state`` reads at most once per ``interval_s`` (any other process). Listeners
    added with ``on_change`` are called, on the refreshing thread, with each new state. If
    Redis cannot be reached the last state known stays in force and the watcher tries again at
    its next turn: a worker goes on working with the pauses and limits it last saw.
    """

    def __init__(
        self,
        client: Callable[[], redis.Redis],
        *,
        interval_s: float = POLL_INTERVAL_S,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.client = client
        self.interval_s = interval_s
        self._clock = clock or time.monotonic
        self._state = ControlState()
        self._checked_at: float | None = None
        self._checked_at_least_once = False
        self._lock = threading.Lock()
        self._listeners: list[Callable[[ControlState], None]] = []
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def state(self) -> ControlState:
        """The state last read; refreshed first if due and no thread refreshes it."""
        if self._thread is None:
            checked_at = self._checked_at
            if checked_at is None or self._clock() - checked_at >= self.interval_s:
                self.refresh()
        return self._state

    def on_change(self, listener: Callable[[ControlState], None]) -> None:
        """Call ``listener`` with every state the watcher reads after a change."""
        self._listeners.append(listener)

    def refresh(self) -> ControlState:
        """Ask Redis for the version and read the state if it moved; never raises for Redis."""
        with self._lock:
            self._checked_at = self._clock()
            try:
                client = self.client()
                if self._checked_at_least_once and read_version(client) == self._state.version:
                    return self._state
                state = read_state(client)
            except redis.RedisError as error:
                _logger.warning("Could not read the control state (kept the last): %s", error)
                return self._state
            changed = state != self._state
            self._state = state
            self._checked_at_least_once = True
        if changed:
            for listener in self._listeners:
                listener(state)
        return state

    def start(self) -> None:
        """Refresh on a daemon thread from now on (idempotent)."""
        if self._thread is not None:
            return
        self._stopped.clear()
        self._thread = threading.Thread(target=self._run, name="fintask-control", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the refreshing thread, if any."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        while not self._stopped.is_set():
            self.refresh()
            self._stopped.wait(self.interval_s)
