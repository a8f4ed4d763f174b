"""Recovery on a clock: a dead worker's unacked messages come back within seconds of its
heartbeat going stale, whatever the traffic.

A Redis worker keeps the messages it fetched and has not acked in its ack set, one per queue
(``<ns>:__acks__.<broker id>.<queue>``), including the delayed messages it holds in memory
(those of ``<queue>.DQ``). When the process is killed, they stay there. Dramatiq returns them
during its "maintenance", which runs inside a broker call by chance (1 in 1,000 by default),
and only for the queue of that call, once the dead worker's heartbeat is ``heartbeat_timeout``
old. A consumer that blocks for a wake-up instead of polling makes few calls, so recovery by
chance took 541 s in one run, and a queue nobody calls is never recovered.

Here every worker process runs a thread that, every ``interval_ms``, takes the fleet's turn (a
Redis key set with NX and a TTL of ``interval_ms``, so one process per interval does the work
and a dead holder blocks nobody past it) and returns every dead worker's unacked messages of
every declared queue and delay queue, in one Lua call, as Dramatiq's maintenance does (only
those whose message is still stored, to the end of their queue). So a message comes back at
most ``heartbeat_timeout + interval_ms`` (and a fetch) after its worker's last heartbeat.
The chance maintenance keeps running (``WakeupRedisBroker.maintain``, Dramatiq's without its
``KEYS``): it also expires old dead letters and forgets dead workers' heartbeats once their ack
sets are gone.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import redis
from dramatiq import Broker, Middleware, Worker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis
from dramatiq.logging import get_logger
from redis.commands.core import Script

#: How often the fleet looks for dead workers' messages, in ms.
DEFAULT_INTERVAL_MS = 5_000


# KEYS[1]: the namespace. ARGV[1]: now (ms), ARGV[2]: the heartbeat timeout (ms), ARGV[3...]:
# the queues (ready and delay queues). For each worker whose heartbeat is older than the timeout,
# pushes each id of its ack set of each queue back on that queue, if the message is still
# stored, and deletes the ack set: dispatch.lua's maintenance, for many queues at once.
# Returns how many messages went back to each queue, in ARGV's order.
_RECOVER = """
local namespace = KEYS[1]
local dead = redis.call("zrangebyscore", namespace .. ":__heartbeats__", 0, ARGV[1] - ARGV[2])
local returned = {}
for i = 3, #ARGV do returned[i - 2] = 0 end
for _, worker_id in ipairs(dead) do
    for i = 3, #ARGV do
        local queue = namespace .. ":" .. ARGV[i]
        local acks = namespace .. ":__acks__." .. worker_id .. "." .. ARGV[i]
        for _, message_id in ipairs(redis.call("smembers", acks)) do
            if redis.call("hexists", queue .. ".msgs", message_id) == 1 then
                redis.call("rpush", queue, message_id)
                returned[i - 2] = returned[i - 2] + 1
            end
        end
        redis.call("del", acks)
    end
end
return returned
"""


#: How long past its interval a worker's shutdown waits for the recovery thread to end.
STOP_MARGIN_S = 10


@runtime_checkable
class WakesConsumers(Protocol):
    """A broker whose idle consumers wait for a token (``WakeupRedisBroker``)."""

    def wake(self, queue_name: str, count: int = 1) -> None:
        """Wake up to ``count`` idle consumers of ``queue_name``."""


def turn_key(namespace: str) -> str:
    """The key whose holder recovers the queues of ``namespace`` for this interval."""
    return f"fintask:recovery:{namespace}"


def recovered_queues(queues: Iterable[str], delay_queues: Iterable[str]) -> list[str]:
    """Every queue to look in, once each, in a stable order."""
    return sorted(set(queues) | set(delay_queues))


class DeadWorkerRecovery(Middleware):
    """Returns dead workers' unacked messages to their queues on a clock, one process per
    interval across the fleet. Only Redis brokers have ack sets; on any other it does nothing.

    Parameters:
      interval_ms: how often the fleet recovers (and the TTL of the turn).
    """

    def __init__(self, *, interval_ms: int = DEFAULT_INTERVAL_MS) -> None:
        if interval_ms <= 0:
            raise ValueError(f"interval_ms must be positive, not {interval_ms!r}")
        self.logger = get_logger(__name__, type(self))
        self.interval_ms = interval_ms
        self.script: Script | None = None
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        if not isinstance(broker, RedisBroker):
            return
        self.stopping.clear()
        self.thread = threading.Thread(
            target=self._run, args=(broker,), name="DeadWorkerRecovery", daemon=True
        )
        self.thread.start()

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        self.stopping.set()
        if self.thread is not None:
            # It ends at its next wait; a call under way first ends or times out (redis-py's
            # socket timeout, 5 s), which a loaded machine may stretch.
            self.thread.join(timeout=self.interval_ms / 1000 + STOP_MARGIN_S)
            self.thread = None

    def recover(self, broker: RedisBroker) -> dict[str, int] | None:
        """Take this interval's turn and recover; the messages returned per queue, or None
        when another process has the turn."""
        holder = f"{socket.gethostname()}:{os.getpid()}"
        turn = turn_key(broker.namespace)
        if not broker.client.set(turn, holder, nx=True, px=self.interval_ms):
            return None
        queues = recovered_queues(broker.get_declared_queues(), broker.get_declared_delay_queues())
        if not queues:
            return {}
        if self.script is None or self.script.registered_client is not broker.client:
            self.script = broker.client.register_script(_RECOVER)
        args = [current_millis(), broker.heartbeat_timeout, *queues]
        counts = self.script(keys=[broker.namespace], args=args)
        returned = {queue: int(n) for queue, n in zip(queues, counts, strict=True) if int(n)}
        for queue, count in returned.items():
            self.logger.warning(
                "Returned %d unacked messages of dead workers to queue %r.", count, queue
            )
            if isinstance(broker, WakesConsumers):
                broker.wake(queue, count)
        return returned

    def _run(self, broker: RedisBroker) -> None:
        # At boot at once: a fleet restarted after a crash gets the messages back soonest.
        while not self.stopping.is_set():
            try:
                self.recover(broker)
            except redis.RedisError as error:
                self.logger.warning("Could not recover dead workers' messages: %s", error)
            self.stopping.wait(self.interval_ms / 1000)
