"""What operators change in the periodic schedule at runtime, kept in Redis: paused jobs and
run-now requests.

Both live in Redis, not in a scheduler's memory or settings, so that a pause holds across
scheduler restarts and deploys and every scheduler replica obeys it, and so that a run-now
request waits for whichever scheduler runs next, even one not started yet. ``fintask schedule``
writes them; the scheduler (``scheduler.ticker``) reads the pauses at each minute and takes the
requests every few seconds. This module knows Redis only (the kernel imports no scheduler):
job names are checked against the schedule by its callers.

The keys sit beside the fleet's control state (``app.control_state``) but outside its version
counter: no worker cares about the schedule, and the scheduler reads these keys at each wake-up
anyway, which costs less than a version check would save.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import redis
from dramatiq.common import current_millis

from app.redis_client import as_text
from app.timestamps import rfc3339

#: A set of job (actor) names whose scheduled ticks are not sent.
PAUSED_KEY = "fintask:control:schedule:paused"
#: A hash: job name -> when it was last resumed (ms since the epoch). Ticks due before then
#: were paused, not missed: a scheduler started after the pause does not catch them up.
RESUMED_KEY = "fintask:control:schedule:resumed"
#: A list of run-now requests (JSON), oldest first.
RUN_NOW_KEY = "fintask:control:schedule:run_now"

_logger = logging.getLogger(__name__)

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_US = dt.timedelta(microseconds=1)

# KEYS: paused, resumed. ARGV: job, now (ms). The resume time is kept only for a job that was
# paused: resuming a running job must not hide the ticks it missed before.
_RESUME = """
local removed = redis.call("SREM", KEYS[1], ARGV[1])
if removed == 1 then redis.call("HSET", KEYS[2], ARGV[1], ARGV[2]) end
return removed
"""


@dataclass(frozen=True)
class RunRequest:
    """An operator's request to run a job once, now, besides its schedule."""

    job: str
    request_id: str
    #: When it was requested, to the microsecond (the requester's clock).
    requested_at: dt.datetime
    requested_by: str

    @property
    def tick(self) -> str:
        """The tick its message carries: when it was requested, in ISO 8601 UTC to the
        microsecond.

        A time, like a scheduled tick, because actors read their tick as one (the digest's day,
        the weekly report's week): run now, a job works as if it were due now. Always with a
        fraction of a second, which a scheduled tick (a whole minute, ``2024-06-03T07:00:00+00:00``)
        never has: so it names a tick key of its own, neither taking nor standing for the job's
        scheduled tick.
        """
        return self.requested_at.astimezone(dt.UTC).isoformat(timespec="microseconds")

    def as_dict(self) -> dict[str, object]:
        return {
            "job": self.job,
            "request_id": self.request_id,
            "requested_at": rfc3339(self.requested_at),
            "requested_by": self.requested_by,
        }


def pause_job(client: redis.Redis, name: str) -> bool:
    """Stop every scheduler sending ``name``'s ticks; False if it was paused already."""
    return bool(client.sadd(PAUSED_KEY, name))


def resume_job(client: redis.Redis, name: str, *, now_ms: int | None = None) -> bool:
    """Let the schedulers send ``name``'s ticks again, from its next one on (those due while it
    was paused are not caught up: a pause means "do not run"); False if it was not paused."""
    now_ms = current_millis() if now_ms is None else now_ms
    script = client.register_script(_RESUME)
    return bool(script(keys=[PAUSED_KEY, RESUMED_KEY], args=[name, now_ms]))


def paused_jobs(client: redis.Redis) -> frozenset[str]:
    """The jobs whose ticks are not sent."""
    return frozenset(as_text(name) for name in client.smembers(PAUSED_KEY))


def resumed_times(client: redis.Redis) -> Mapping[str, dt.datetime]:
    """When each job that was ever paused was last resumed."""
    return {
        as_text(name): dt.datetime.fromtimestamp(int(ms) / 1000, tz=dt.UTC)
        for name, ms in client.hgetall(RESUMED_KEY).items()
    }


def request_run(
    client: redis.Redis, name: str, *, requested_by: str, now_us: int | None = None
) -> str:
    """Ask the schedulers to run ``name`` once, within a few seconds; the request's id.

    The request waits in Redis until a scheduler takes it, so one made while no scheduler runs
    is sent by the next to start.
    """
    now_us = time.time_ns() // 1000 if now_us is None else now_us
    request = RunRequest(name, uuid.uuid4().hex, _from_us(now_us), requested_by)
    client.rpush(RUN_NOW_KEY, _encode(request))
    return request.request_id


def take_run_requests(client: redis.Redis) -> list[RunRequest]:
    """Remove and return every pending request, oldest first.

    Read and emptied in one transaction, so that of two schedulers asking at once only one
    gets a given request.
    """
    pipe = client.pipeline(transaction=True)
    pipe.lrange(RUN_NOW_KEY, 0, -1)
    pipe.delete(RUN_NOW_KEY)
    entries, _ = pipe.execute()
    return _decode_all(entries)


def pending_run_requests(client: redis.Redis) -> list[RunRequest]:
    """The requests no scheduler has taken yet, oldest first."""
    return _decode_all(client.lrange(RUN_NOW_KEY, 0, -1))


def _encode(request: RunRequest) -> str:
    return json.dumps(
        {
            "job": request.job,
            "request_id": request.request_id,
            "requested_at_us": (request.requested_at - _EPOCH) // _ONE_US,
            "requested_by": request.requested_by,
        }
    )


def _decode_all(entries: list[bytes | str]) -> list[RunRequest]:
    """The requests in ``entries``; one that does not parse (written by hand) is logged and
    left out rather than blocking the others."""
    requests = []
    for entry in entries:
        try:
            fields = json.loads(entry)
            requests.append(
                RunRequest(
                    job=str(fields["job"]),
                    request_id=str(fields["request_id"]),
                    requested_at=_from_us(int(fields["requested_at_us"])),
                    requested_by=str(fields["requested_by"]),
                )
            )
        except (ValueError, TypeError, KeyError) as error:
            _logger.error("Dropped a run-now request that does not parse (%s): %r", error, entry)
    return requests


def _from_us(microseconds: int) -> dt.datetime:
    # Integer arithmetic: a float timestamp would round the microseconds the tick is made of.
    return _EPOCH + microseconds * _ONE_US
