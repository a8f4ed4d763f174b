"""The actors of the real workers in the batch kill test (``tests/reliability/test_batch_kill``).

The workers are the Procfile's ``worker`` line with this module imported beside ``actors``
(``procfile_worker``): fintask's broker, middleware stack (``BatchMembers`` included) and
production settings. Every effect is kept by natural key in Redis, in fintask's key space:

- ``member`` adds its number to the ``EFFECTS_KEY`` set. A member numbered ``slow_from`` or
  later blocks its first run, after its effect, until the worker is killed: the last members
  are in flight, their effect done and their outcome not recorded;
- ``callback`` sets its ``which`` in the ``CALLBACKS_KEY`` hash to the time of its effect
  (``HSETNX``: the first write is the one kept). Its first run blocks until the worker is killed.

``RUNS_KEY`` counts every start of each (``member:<n>``, ``callback:<which>``), so the test sees
the redeliveries the kills caused.
"""

from __future__ import annotations

import time
from typing import Any

from app.house_rules import fintask_actor
from app.redis_client import get_redis

QUEUE = "batch_kill"
EFFECTS_KEY = "fintask:batch-kill:effects"
CALLBACKS_KEY = "fintask:batch-kill:callbacks"
RUNS_KEY = "fintask:batch-kill:runs"
#: Longer than any kill test waits: a blocked first run ends only with its worker.
HOLD_S = 600


def _first_run(name: str) -> bool:
    return int(get_redis().hincrby(RUNS_KEY, name, 1)) == 1


@fintask_actor(
    queue_name=QUEUE,
    time_limit=(HOLD_S + 60) * 1000,
    max_age=3_600_000,
    max_retries=0,
    min_backoff=1_000,
    max_backoff=1_000,
)
def member(n: int, slow_from: int, **kwargs: Any) -> None:
    """Record member ``n``'s effect; a slow member's first run then blocks."""
    first = _first_run(f"member:{n}")
    get_redis().sadd(EFFECTS_KEY, n)
    if first and n >= slow_from:
        time.sleep(HOLD_S)


@fintask_actor(
    queue_name=QUEUE,
    time_limit=(HOLD_S + 60) * 1000,
    max_age=3_600_000,
    max_retries=0,
    min_backoff=1_000,
    max_backoff=1_000,
)
def callback(which: str, **kwargs: Any) -> None:
    """Block the first run; a later one records the callback's effect, once by its name."""
    if _first_run(f"callback:{which}"):
        time.sleep(HOLD_S)
    get_redis().hsetnx(CALLBACKS_KEY, which, repr(time.time()))
