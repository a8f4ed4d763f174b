"""One message per tick of a periodic job, however many schedulers run, checked again by workers.

A tick is the minute a job is due, in UTC (``2024-06-02T07:00:00+00:00``). Its message carries
it as the ``tick`` argument (every actor takes ``**kwargs``; the digest uses it as its date).
Two Redis keys per job:

- ``fintask:tick:<actor>:<tick>`` holds the id of the tick's one message. A scheduler builds the
  message, then claims the key with ``SET NX``; only the winner sends. The key lives
  ``TICK_TTL_S``, longer than any periodic actor's ``max_age`` plus its retries.
- ``fintask:tick-last:<actor>`` holds the newest tick sent, for finding ticks missed while no
  scheduler ran.

:class:`TickGuard` is the worker side: a message whose tick key names another message is a
duplicate that slipped through (a scheduler without these claims, a copy sent by hand) and is
skipped. It knows nothing of fintask's jobs, only Dramatiq and Redis, so it belongs with
fintask's middleware in the broker's stack.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import redis
from dramatiq import Broker, Middleware
from dramatiq.broker import MessageProxy
from dramatiq.logging import get_logger
from dramatiq.middleware import SkipMessage

from app.middleware import RedisSource, RedisUnavailable, lazy_client

#: The argument that stamps a message with its tick.
TICK_ARGUMENT = "tick"
#: Two days: past every periodic actor's ``max_age`` and retries (checked when a job is declared).
TICK_TTL_S = 2 * 86_400

# KEYS: tick key, last-tick key. ARGV: message id, TTL (s), tick. Ticks compare as strings:
# they are all UTC ISO 8601 of one shape.
_CLAIM_AND_RECORD = """
if not redis.call("SET", KEYS[1], ARGV[1], "NX", "EX", ARGV[2]) then return 0 end
local last = redis.call("GET", KEYS[2])
if not last or last < ARGV[3] then redis.call("SET", KEYS[2], ARGV[3]) end
return 1
"""
# KEYS: tick key. ARGV: message id, TTL (s). 1 if the message owns its tick (or claims it now).
_OWNS = """
local holder = redis.call("GET", KEYS[1])
if not holder then
  redis.call("SET", KEYS[1], ARGV[1], "EX", ARGV[2])
  return 1
end
if holder == ARGV[1] then return 1 end
return 0
"""


def tick_id(moment: dt.datetime) -> str:
    """The tick ``moment`` falls in: its UTC minute in ISO 8601."""
    return moment.astimezone(dt.UTC).replace(second=0, microsecond=0).isoformat()


def tick_key(actor_name: str, tick: str) -> str:
    return f"fintask:tick:{actor_name}:{tick}"


def last_tick_key(actor_name: str) -> str:
    return f"fintask:tick-last:{actor_name}"


class TickClaims:
    """The scheduler's side: claim a tick for one message, and read the newest tick sent."""

    def __init__(self, client: redis.Redis, *, ttl_s: int = TICK_TTL_S) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self._claim = client.register_script(_CLAIM_AND_RECORD)

    def claim(self, actor_name: str, tick: str, message_id: str) -> bool:
        """Whether ``message_id`` is the tick's one message (then it is recorded as the newest)."""
        keys = [tick_key(actor_name, tick), last_tick_key(actor_name)]
        return bool(self._claim(keys=keys, args=[message_id, self.ttl_s, tick]))

    def last_ticks(self, actor_names: Iterable[str]) -> dict[str, dt.datetime | None]:
        """The newest tick sent for each actor; ``None`` for one never sent (or forgotten)."""
        names = list(actor_names)
        values = self.client.mget([last_tick_key(name) for name in names]) if names else []
        return {name: _moment(value) for name, value in zip(names, values, strict=True)}


def _moment(value: bytes | str | None) -> dt.datetime | None:
    if value is None:
        return None
    return dt.datetime.fromisoformat(value if isinstance(value, str) else value.decode())


class TickGuard(Middleware):
    """Skips a message stamped with a tick that another message already owns.

    The scheduler's claim makes the first message of a tick its owner; a retry or redelivery of
    that message keeps its id and runs. A tick no scheduler claimed (sent by hand) is claimed
    here by its first message. If Redis cannot answer, the message fails and is retried.

    Parameters:
      client: a Redis client, or a function making one after the worker forks.
    """

    def __init__(self, *, client: RedisSource, ttl_s: int = TICK_TTL_S) -> None:
        self.logger = get_logger(__name__, type(self))
        self._client = lazy_client(client)
        self.ttl_s = ttl_s

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        tick: Any = message.kwargs.get(TICK_ARGUMENT)
        if not isinstance(tick, str):
            return
        key = tick_key(message.actor_name, tick)
        try:
            owns = self._client().eval(_OWNS, 1, key, message.message_id, self.ttl_s)
        except redis.RedisError as error:
            raise RedisUnavailable(f"could not check tick {key}: {error}") from error
        if not owns:
            self.logger.warning(
                "Skipping message %s: tick %s of %s was already sent as another message",
                message.message_id,
                tick,
                message.actor_name,
            )
            raise SkipMessage()
