"""One message per tick of a periodic job, however many schedulers run, checked again by workers.

A tick is the minute a job is due, in UTC (``2024-06-02T07:00:00+00:00``). fintask's scheduler
stamps its message with it as the ``tick`` argument (every actor takes ``**kwargs``; the digest
uses it as its date). periodiq's own scheduler (the ``periodiq`` command) stamps the moment it
sent the message as the ``scheduled_at`` option instead; cut to its UTC minute, that names the
same tick (:func:`message_tick`), so a team running periodiq itself, or two of it, gets one run
per tick from the worker side alone. Two Redis keys per job:

- ``fintask:tick:<actor>:<tick>`` holds the id of the tick's one message. A scheduler builds the
  message, then claims the key with ``SET NX`` (``scheduler.claims.TickClaims``); only the winner
  sends. The key lives ``TICK_TTL_S``, longer than any periodic actor's ``max_age`` plus its
  retries.
- ``fintask:tick-last:<actor>`` holds the newest tick sent, for finding ticks missed while no
  scheduler ran.

:class:`TickGuard` is the worker side: a message whose tick key names another message is a
duplicate that slipped through (periodiq's scheduler, which claims nothing; a copy sent by hand)
and is skipped. It knows nothing of fintask's jobs, only Dramatiq and Redis, so it belongs with
fintask's middleware in the broker's stack; the scheduler's claims live with the scheduler and
share the key names and the tick id defined here.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import redis
from dramatiq import Broker, Message, Middleware
from dramatiq.broker import MessageProxy
from dramatiq.logging import get_logger
from dramatiq.middleware import SkipMessage

from app.middleware import RedisSource, RedisUnavailable, lazy_client

#: The argument that stamps a message with its tick.
TICK_ARGUMENT = "tick"
#: The option periodiq's scheduler stamps a message with: when it sent it (ISO 8601, its time zone).
SCHEDULED_AT_OPTION = "scheduled_at"
#: Two days: past every periodic actor's ``max_age`` and retries (checked when a job is declared).
TICK_TTL_S = 2 * 86_400

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


def message_tick(message: MessageProxy | Message[Any]) -> str | None:
    """The tick ``message`` belongs to: its ``tick`` argument, else periodiq's ``scheduled_at``
    cut to its UTC minute; ``None`` for a message of no tick (sent by hand, unreadable stamp).

    Cutting to the minute is what makes two periodiq processes agree: each stamps the second it
    woke at, and both wake within the tick's minute (periodiq's cron has no seconds).
    """
    tick: Any = message.kwargs.get(TICK_ARGUMENT)
    if isinstance(tick, str):
        return tick
    scheduled_at: Any = message.options.get(SCHEDULED_AT_OPTION)
    if not isinstance(scheduled_at, str):
        return None
    try:
        return tick_id(dt.datetime.fromisoformat(scheduled_at))
    except ValueError:
        return None


def tick_key(actor_name: str, tick: str) -> str:
    """The key holding the id of the one message of ``actor_name``'s ``tick``."""
    return f"fintask:tick:{actor_name}:{tick}"


def last_tick_key(actor_name: str) -> str:
    """The key holding the newest tick sent of ``actor_name``."""
    return f"fintask:tick-last:{actor_name}"


class TickGuard(Middleware):
    """Skips a message stamped with a tick that another message already owns.

    The scheduler's claim makes the first message of a tick its owner; a retry or redelivery of
    that message keeps its id and runs. A tick no scheduler claimed (periodiq's, or one sent by
    hand) is claimed here by its first message to run. If Redis cannot answer, the message fails
    and is retried.

    Parameters:
      client: a Redis client, or a function making one after the worker forks.
    """

    def __init__(self, *, client: RedisSource, ttl_s: int = TICK_TTL_S) -> None:
        self.logger = get_logger(__name__, type(self))
        self._client = lazy_client(client)
        self.ttl_s = ttl_s

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        tick = message_tick(message)
        if tick is None:
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
