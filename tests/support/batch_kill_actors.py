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

from app.redis_client import get_redis
from tests.support.holding import HOLD_S, count_run, holding_actor

QUEUE = "batch_kill"
EFFECTS_KEY = "fintask:batch-kill:effects"
CALLBACKS_KEY = "fintask:batch-kill:callbacks"
RUNS_KEY = "fintask:batch-kill:runs"


@holding_actor(QUEUE)
def member(n: int, slow_from: int, **kwargs: Any) -> None:
    """Record member ``n``'s effect; a slow member's first run then blocks."""
    first = count_run(RUNS_KEY, f"member:{n}") == 1
    get_redis().sadd(EFFECTS_KEY, n)
    if first and n >= slow_from:
        time.sleep(HOLD_S)


@holding_actor(QUEUE)
def callback(which: str, **kwargs: Any) -> None:
    """Block the first run; a later one records the callback's effect, once by its name."""
    if count_run(RUNS_KEY, f"callback:{which}") == 1:
        time.sleep(HOLD_S)
    get_redis().hsetnx(CALLBACKS_KEY, which, repr(time.time()))
