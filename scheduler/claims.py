"""The scheduler's side of once-per-tick: claim a tick for one message, read the newest sent.

A scheduler builds a tick's message, then claims the tick's key (``app.middleware.ticks``
names the keys) for that message's id; only the winner sends. Claiming again for the same id
succeeds: a scheduler whose claim went through but whose send did not (Redis went away in
between) retries with the same message and must find the claim its own. The same call records
the tick as the job's newest sent, for finding ticks missed while no scheduler ran; a run-now
request's tick (``app.schedule_control.RunRequest.tick``) is claimed the same way but not
recorded, since it stands for no scheduled tick. The worker's ``TickGuard`` checks the same key
again before a message runs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import redis

from app.middleware.ticks import TICK_TTL_S, last_tick_key, tick_key

# KEYS: tick key, then the last-tick key unless the tick is a run-now request's. ARGV: message
# id, TTL (s), tick. Scheduled ticks compare as strings: they are all UTC ISO 8601 of one shape.
_CLAIM_AND_RECORD = """
local holder = redis.call("GET", KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
if not holder then redis.call("SET", KEYS[1], ARGV[1], "EX", ARGV[2]) end
if KEYS[2] then
  local last = redis.call("GET", KEYS[2])
  if not last or last < ARGV[3] then redis.call("SET", KEYS[2], ARGV[3]) end
end
return 1
"""


class TickClaims:
    """Claims a tick for one message, and reads the newest tick sent of each job."""

    def __init__(self, client: redis.Redis, *, ttl_s: int = TICK_TTL_S) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self._claim = client.register_script(_CLAIM_AND_RECORD)

    def claim(self, actor_name: str, tick: str, message_id: str, *, scheduled: bool = True) -> bool:
        """Whether ``message_id`` is, or now becomes, the tick's one message (then a
        ``scheduled`` tick is recorded as the job's newest sent)."""
        keys = [tick_key(actor_name, tick)]
        if scheduled:
            keys.append(last_tick_key(actor_name))
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
