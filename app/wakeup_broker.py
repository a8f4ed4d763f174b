"""A Redis broker whose idle consumers block on a wake-up list instead of polling.

Dramatiq's Redis consumer polls: after an empty fetch it sleeps 5 ms, 10 ms, ... up to
``worker_timeout`` (1 s), so a message sent to a quiet queue waits for the sleep to end (81 ms
median and 841 ms worst at 2 msg/s). Here every enqueue also pushes a token on
``<namespace>:<queue>.wake`` in the same round trip, and a consumer whose fetch came back empty
waits for a token with BLPOP, on a connection of its own, for at most ``worker_timeout``.

A token only says "fetch now": messages still move through Dramatiq's own ``dispatch.lua``
(enqueue, ack, requeue), so acks, heartbeats, delayed messages and the return of a dead
worker's messages are Dramatiq's. A consumer that gets no token fetches at the timeout anyway:
heartbeats keep their pace, and producers that push no tokens (a plain ``RedisBroker`` during a
deploy) are served as before, at poll speed.

Fetch and nack are fintask's scripts, each ``dispatch.lua``'s command plus one thing: the fetch
answers each Redis id with its payload (Dramatiq's, payloads only), so a payload that is no
runnable message is dead-lettered by its id at once while its neighbours run
(``app.dead_letters``); the nack keeps the reason beside the dead letter. A lost connection,
``redis.TimeoutError`` included (a stalled socket on a managed Redis), is ``ConnectionClosed``:
Dramatiq restarts the consumer, and what the old one fetched but never handed to a worker
thread goes back to its queue instead of waiting in its ack set for the process to die.

The consumer also stops sleeping where Dramatiq's does: with its prefetch full it waits for an
ack, and it blocks no longer than the eta of a delayed message it holds. So a prefetch equal to
the thread count keeps every thread busy (Dramatiq's consumer needs 2 x threads or more to hide
its backoff): a process then holds no message it cannot start. Measurements: scenario 3 of
``docs/benchmarks.md``, and the prefetch sweep of its throughput scenario (``make bench``).

Its clients come from ``app.redis_client.redis_pool``, so a Sentinel URL is followed through a
failover like every other client of fintask. Two things make it fit a Redis with replicas and
ACL users. Dramatiq's chance maintenance calls ``KEYS`` inside ``dispatch.lua``, which no
least-privilege user should be granted (``ops/redis-users.acl``): here the same maintenance
runs in fintask's script, which checks the dead worker's ack sets of the declared queues with
``EXISTS`` instead. And with ``wait_replicas`` an enqueue returns only once that many replicas
hold it (Redis's ``WAIT``, in the same round trip): replication is asynchronous, and a master
that dies loses the writes no replica received yet (docs/reliability.md, "Failover").
"""

from __future__ import annotations

import heapq
import math
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from typing import Any

import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import current_millis, dq_name
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message

from app.dead_letters import (
    DEAD_LETTER_SCRIPT,
    failure_reason,
    kept_reason,
    read_message,
    reason_key,
    runnable_problem,
)
from app.group_commit import GroupCommit
from app.held_messages import HeldMessages
from app.pruned_hooks import PrunedHooks
from app.redis_client import as_text, redis_pool
from chunking import BatchMembers, FailureKind
from chunking.batches import member_of
from chunking.bulk import dispatch_args
from chunking.redis_keys import acks_key

#: The most tokens a wake-up list keeps: each wakes one blocked consumer, so this is how many
#: idle consumers of one queue a burst can wake at once; more would only cost empty fetches.
WAKE_TOKENS_MAX = 64

#: A token matters only to a consumer that blocks soon after it is pushed (any other fetches
#: anyway), so a list nobody pops vanishes this long after its last push.
WAKE_TOKENS_TTL_MS = 10_000

#: A consumer whose prefetch filled up refills once half of it is free, or this long after it
#: filled, whichever comes first: one fetch then serves a batch of acks (a fetch per ack of
#: no-op messages ran 40 % slower at 1 thread and prefetch 32), while the ack of a message that
#: ran longer than this is followed by a fetch at once.
REFILL_WAIT_MS = 5

#: How often a consumer of a paused queue looks whether it was resumed (the pause itself
#: reaches the process within ``app.control_state.POLL_INTERVAL_S``).
PAUSED_WAIT_MS = 250

#: Redis ends a timed-out blocking call on its next clock tick (``hz`` 10: every 100 ms), so a
#: BLPOP can return this much after its timeout: blocks are shortened by it, and the last stretch
#: before a delayed message is due is slept here, to the millisecond.
REDIS_TICK_MS = 100

#: How much longer than its longest BLPOP a blocking connection waits for Redis to answer.
BLOCKING_SOCKET_MARGIN_S = 10.0

#: What a lost connection looks like: redis-py's ``TimeoutError`` is no ``ConnectionError``.
LOST_CONNECTION = (redis.ConnectionError, redis.TimeoutError)

# dispatch.lua's fetch, answering each Redis message id with its payload (nil if gone):
# {id, data, id, data, ...}. KEYS[1]: the namespace. ARGV: now (ms), the queue, the worker
# (broker) id, how many to fetch.
FETCH_SCRIPT = """
local namespace, now, queue_name, worker_id = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
redis.call("zadd", namespace .. ":__heartbeats__", now, worker_id)
local queue = namespace .. ":" .. queue_name
local acks = namespace .. ":__acks__." .. worker_id .. "." .. queue_name
local fetched = {}
for _ = 1, tonumber(ARGV[4]) do
    local message_id = redis.call("lpop", queue)
    if not message_id then break end
    redis.call("sadd", acks, message_id)
    fetched[#fetched + 1] = message_id
    fetched[#fetched + 1] = redis.call("hget", queue .. ".msgs", message_id)
end
return fetched
"""

# dispatch.lua's ack, for many messages of one queue in one call: each is dropped from this
# worker's ack set and, if it was there, from the queue's payloads. KEYS[1]: the namespace.
# ARGV: now (ms), the queue, the worker (broker) id, then the Redis message ids.
ACK_SCRIPT = """
local namespace, now, queue_name, worker_id = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
redis.call("zadd", namespace .. ":__heartbeats__", now, worker_id)
local acks = namespace .. ":__acks__." .. worker_id .. "." .. queue_name
local messages = namespace .. ":" .. queue_name .. ".msgs"
for i = 4, #ARGV do
    if redis.call("srem", acks, ARGV[i]) > 0 then redis.call("hdel", messages, ARGV[i]) end
end
"""

# dispatch.lua's maintenance of one queue, without its KEYS: the messages of workers whose
# heartbeat is older than the timeout go back to the queue, a dead worker whose ack sets of
# every declared queue are gone is forgotten, and dead letters past their TTL are dropped (up to
# 1,000 a call). KEYS[1]: the namespace. ARGV: now (ms), the queue, the heartbeat timeout (ms),
# the dead letters' TTL (ms), then every declared queue and delay queue.
MAINTENANCE_SCRIPT = """
local namespace, now, queue_name = KEYS[1], tonumber(ARGV[1]), ARGV[2]
local heartbeats = namespace .. ":__heartbeats__"
local queue = namespace .. ":" .. queue_name
local xqueue = namespace .. ":" .. (string.gsub(queue_name, "%.DQ$", "")) .. ".XQ"
local dead = redis.call("zrangebyscore", heartbeats, 0, now - tonumber(ARGV[3]))
for _, worker_id in ipairs(dead) do
    local acks = namespace .. ":__acks__." .. worker_id .. "."
    for _, message_id in ipairs(redis.call("smembers", acks .. queue_name)) do
        if redis.call("hexists", queue .. ".msgs", message_id) == 1 then
            redis.call("rpush", queue, message_id)
        end
    end
    redis.call("del", acks .. queue_name)
    local held = 0
    for i = 5, #ARGV do held = held + redis.call("exists", acks .. ARGV[i]) end
    if held == 0 then redis.call("zrem", heartbeats, worker_id) end
end
local expired = redis.call("zrangebyscore", xqueue, 0, now - tonumber(ARGV[4]), "LIMIT", 0, 1000)
if #expired > 0 then
    redis.call("zrem", xqueue, unpack(expired))
    redis.call("hdel", xqueue .. ".msgs", unpack(expired))
end
"""


class NotReplicated(redis.RedisError):
    """An enqueue ran on the master, but fewer replicas than asked for acknowledged it in time:
    the message is queued, and a failover before it replicates would lose it."""


#: A fetched message: its Redis id and its payload (None when its payload is gone).
Fetched = tuple[str, bytes | None]


def wake_key(namespace: str, queue_name: str) -> str:
    """The wake-up list of a queue or of its delay queue (``q.DQ``)."""
    return f"{namespace}:{queue_name}.wake"


def block_ms(*, timeout_ms: int, next_eta_ms: int | None, now_ms: int) -> int:
    """How long an idle consumer may block: its timeout, or until its next delayed message is due.

    Dramatiq moves a due delayed message to its queue only when the consumer thread gets control
    back, so blocking past the eta would start that message late.
    """
    if next_eta_ms is None:
        return timeout_ms
    return max(0, min(timeout_ms, next_eta_ms - now_ms))


class WakeupRedisBroker(PrunedHooks, RedisBroker):
    """Dramatiq's ``RedisBroker``, plus one wake-up token per enqueued message, calling only
    the middleware hooks that do something (``app.pruned_hooks``).

    Takes ``url`` (any ``REDIS_URL``, Sentinel's included), every other ``RedisBroker``
    argument, and ``wake_tokens_max`` (the bound of each wake-up list), ``wake_tokens_ttl_ms``
    (how long an unpopped list lives), ``paused`` (whether an operator paused a queue: its
    consumers then fetch nothing, and give back what they prefetched), ``wait_replicas`` (how
    many replicas must acknowledge an enqueue before it returns; 0, the default, waits for
    none) and ``wait_timeout_ms`` (how long it waits for them before ``NotReplicated``).
    """

    def __init__(
        self,
        *,
        url: str,
        wake_tokens_max: int = WAKE_TOKENS_MAX,
        wake_tokens_ttl_ms: int = WAKE_TOKENS_TTL_MS,
        paused: Callable[[str], bool] | None = None,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1_000,
        **kwargs: Any,
    ) -> None:
        super().__init__(client=redis.Redis(connection_pool=redis_pool(url)), **kwargs)
        self.url = url
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self.paused = paused
        self.wake_tokens_max = wake_tokens_max
        self.wake_tokens_ttl_ms = wake_tokens_ttl_ms
        self.fetch_script = self.client.register_script(FETCH_SCRIPT)
        self.ack_script = self.client.register_script(ACK_SCRIPT)
        self.dead_letter_script = self.client.register_script(DEAD_LETTER_SCRIPT)
        self.maintenance_script = self.client.register_script(MAINTENANCE_SCRIPT)
        # Fetched ids a closed consumer could not put back, by queue: its successor does.
        self.stranded: dict[str, set[str]] = {}
        self.stranded_lock = threading.Lock()
        self.held = HeldMessages()

    @property
    def consumer_class(self) -> type[WakeupRedisConsumer]:
        return WakeupRedisConsumer

    def wake_key(self, queue_name: str) -> str:
        """The wake-up list of ``queue_name`` under this broker's namespace."""
        return wake_key(self.namespace, queue_name)

    def do_enqueue(self, queue_name: str, message_id: str, data: bytes) -> None:
        """Dramatiq's enqueue, then a token on the queue's wake-up list, in one round trip.

        The token follows the message on the same connection, so a consumer it wakes finds the
        message. ``evalsha`` is sent bare: redis-py's script objects in a pipeline cost an
        extra ``SCRIPT EXISTS`` round trip on every call. With ``wait_replicas``, a ``WAIT``
        ends the round trip: ``NotReplicated`` if too few replicas acknowledged in time.
        """
        dispatch = self.scripts["dispatch"]
        args = dispatch_args(self, "enqueue", queue_name, message_id, data)
        for _ in range(2):
            pipe = self.client.pipeline(transaction=False)
            pipe.evalsha(dispatch.sha, 1, self.namespace, *args)
            self.add_wake_tokens(pipe, queue_name, 1)
            if self.wait_replicas:
                pipe.wait(self.wait_replicas, self.wait_timeout_ms)
            # Only the enqueue decides the outcome: a lost token costs latency, not the message.
            answers = pipe.execute(raise_on_error=False)
            enqueued = answers[0]
            if not isinstance(enqueued, redis.exceptions.NoScriptError):
                break
            # A new or restarted Redis has no scripts cached: the enqueue did not run.
            dispatch.sha = self.client.script_load(dispatch.script)
        if isinstance(enqueued, Exception):
            raise enqueued
        if self.wait_replicas and isinstance(answers[-1], Exception):
            raise answers[-1]
        if self.wait_replicas and answers[-1] < self.wait_replicas:
            raise NotReplicated(
                f"message {message_id} is queued on the master, but {answers[-1]} of "
                f"{self.wait_replicas} replicas acknowledged it in {self.wait_timeout_ms} ms"
            )

    def _should_do_maintenance(self, command: str) -> int:
        """Never ``dispatch.lua``'s maintenance, which calls ``KEYS``: ``fetch`` runs
        ``MAINTENANCE_SCRIPT`` instead, on the same chance."""
        return 0

    def maintain(self, queue_name: str) -> None:
        """Dramatiq's maintenance of ``queue_name``, in ``MAINTENANCE_SCRIPT`` (no ``KEYS``)."""
        queues = sorted(self.get_declared_queues() | self.get_declared_delay_queues())
        args: list[str | int] = [current_millis(), queue_name, self.heartbeat_timeout]
        self.maintenance_script(keys=[self.namespace], args=[*args, self.dead_message_ttl, *queues])

    def fetch(self, queue_name: str, count: int) -> list[Fetched]:
        """Fetch up to ``count`` messages into this worker's ack set, with their Redis ids.

        The fetch keeps Dramatiq's maintenance chance: on a hit, the maintenance of the queue
        runs first.
        """
        if super()._should_do_maintenance("fetch"):
            self.maintain(queue_name)
        args: list[str | int] = [current_millis(), queue_name, self.broker_id, count]
        flat = self.fetch_script(keys=[self.namespace], args=args)
        return [(as_text(flat[i]), flat[i + 1]) for i in range(0, len(flat), 2)]

    def ack_many(self, queue_name: str, redis_ids: list[str]) -> None:
        """Dramatiq's ack of each of ``redis_ids`` (fetched by this worker), in one call."""
        args: list[str | int] = [current_millis(), queue_name, self.broker_id, *redis_ids]
        self.ack_script(keys=[self.namespace], args=args)

    def dead_letter(self, queue_name: str, redis_id: str, reason: str) -> bool:
        """Move a message this worker fetched to the dead letters, keeping ``reason`` with it,
        redacted and capped (``kept_reason``: every reason is written here).

        False if this worker no longer held it (it was recovered, or already settled).
        """
        key = reason_key(queue_name, redis_id, namespace=self.namespace)
        args: list[str | int] = [current_millis(), queue_name, self.broker_id, redis_id]
        args += [kept_reason(reason), self.dead_message_ttl]
        return bool(self.dead_letter_script(keys=[self.namespace, key], args=args))

    def hand_back(self, queue_name: str, redis_ids: Iterable[str]) -> None:
        """Return fetched messages no worker thread got (and any stranded) to their queue.

        On a lost connection they are kept for the queue's next consumer, which returns them
        before it fetches; if the process ends first, they wait in its ack set for recovery.
        """
        with self.stranded_lock:
            ids = self.stranded.pop(queue_name, set()) | set(redis_ids)
        if not ids:
            return
        try:
            self.do_requeue(queue_name, *ids)
        except LOST_CONNECTION as error:
            self.logger.warning(
                "Could not return %d fetched messages to %r: %s", len(ids), queue_name, error
            )
            with self.stranded_lock:
                self.stranded.setdefault(queue_name, set()).update(ids)
            return
        with suppress(redis.RedisError):
            self.wake(queue_name, len(ids))

    def return_unseen(self, queue_name: str) -> None:
        """Return to ``queue_name`` the ids a fetch whose answer was lost left in this worker's
        ack set (``app.held_messages``)."""
        acks = acks_key(queue_name, self.broker_id, namespace=self.namespace)
        unseen = self.held.unseen(
            queue_name, lambda: [as_text(redis_id) for redis_id in self.client.smembers(acks)]
        )
        if unseen:
            self.logger.warning(
                "Returning %d messages to %r that a fetch lost with its connection had taken",
                len(unseen),
                queue_name,
            )
            self.do_requeue(queue_name, *unseen)
            with suppress(redis.RedisError):
                self.wake(queue_name, len(unseen))
        self.held.resolve(queue_name)

    def wake(self, queue_name: str, count: int = 1) -> None:
        """Push ``count`` tokens (at most ``wake_tokens_max``) on ``queue_name``'s wake-up list."""
        pipe = self.client.pipeline(transaction=False)
        self.add_wake_tokens(pipe, queue_name, count)
        pipe.execute()

    def flush(self, queue_name: str) -> None:
        super().flush(queue_name)
        self.client.delete(self.wake_key(queue_name), self.wake_key(dq_name(queue_name)))

    def blocking_client(self, timeout_ms: int) -> redis.Redis:
        """A client with one connection of its own, for BLPOPs of up to ``timeout_ms``.

        A blocked call holds its connection, so it must not hold one of the shared pool that
        producers and acks use; its socket timeout outlasts the longest block. Its pool is made
        from the broker's URL, so it follows the master as the broker's own pool does.
        """
        socket_timeout = timeout_ms / 1000 + BLOCKING_SOCKET_MARGIN_S
        own = redis_pool(self.url, socket_timeout=socket_timeout, max_connections=1)
        return redis.Redis(connection_pool=own)

    def add_wake_tokens(self, pipe: redis.client.Pipeline, queue_name: str, count: int) -> None:
        """Queue on ``pipe`` the push of ``count`` tokens, capped, with the list's expiry.

        For producers that pipeline their own enqueues (``chunking.enqueue_many``): one call
        per queue and batch, after the enqueues.
        """
        key = self.wake_key(queue_name)
        pipe.rpush(key, *[b"1"] * max(1, min(count, self.wake_tokens_max)))
        pipe.ltrim(key, -self.wake_tokens_max, -1)
        pipe.pexpire(key, self.wake_tokens_ttl_ms)


class WakeupRedisConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer, waiting on events instead of sleeping.

    With room to prefetch and nothing fetched it blocks on its queue's wake-up list; with no
    room (every prefetched message still unacked) it waits for an ack from a worker thread,
    where Dramatiq sleeps its backoff and leaves a lone thread idle (265 msg/s at 1 x 1).
    Either wait ends at ``timeout`` or when a delayed message it holds comes due.

    A fetched payload that is no runnable message is dead-lettered here, with its reason, and
    the next one is handed out. Acks are Dramatiq's, those the worker threads make at the
    same time written in one call (``app.group_commit``); requeues are Dramatiq's; nacks keep a
    reason.
    """

    def __init__(
        self, broker: WakeupRedisBroker, queue_name: str, prefetch: int, timeout: int
    ) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)
        self.broker: WakeupRedisBroker = broker
        self.message_cache: list[Fetched] = []
        self.waiter = broker.blocking_client(timeout)
        self.wake_key = broker.wake_key(queue_name)
        self.room = threading.Event()
        self.full_since: float | None = None
        # Delayed messages handed to the consumer thread and not yet settled, by Redis id,
        # with a min-heap of their etas (entries of settled messages are skipped lazily).
        self.etas: dict[str, int] = {}
        self.due: list[tuple[int, str]] = []
        self.acks = GroupCommit[str](lambda ids: broker.ack_many(queue_name, ids))

    def __next__(self) -> MessageProxy | None:
        try:
            while True:
                if self.broker.paused is not None and self.broker.paused(self.queue_name):
                    self._give_back_prefetched()
                    self.room.clear()
                    self.room.wait(PAUSED_WAIT_MS / 1000)
                    return None
                if self.message_cache:
                    message = self._admit(*self.message_cache[0])
                    self.message_cache.pop(0)
                    if message is None:
                        continue
                    self.queued_message_ids.add(message.message_id)
                    self.broker.held.hold(self.queue_name, message.options["redis_message_id"])
                    self._hold_eta(message)
                    return MessageProxy(message)

                self.room.clear()
                free = self.prefetch - self.outstanding_message_count
                if free <= 0:
                    self.full_since = self.full_since or time.monotonic()
                    self.room.wait(self._block_ms() / 1000)
                    return None
                if self.full_since is not None and 2 * free < self.prefetch:
                    wait_s = self.full_since + REFILL_WAIT_MS / 1000 - time.monotonic()
                    if wait_s > 0:
                        self.room.wait(wait_s)  # more acks: one fetch serves them all
                        return None
                self.full_since = None
                self.broker.hand_back(self.queue_name, ())
                if self.broker.held.in_doubt(self.queue_name):
                    self.broker.return_unseen(self.queue_name)
                self.message_cache = self._fetch(free)
                if not self.message_cache:
                    self._wait_for_token()
                    return None
        except LOST_CONNECTION as e:
            raise ConnectionClosed(e) from None

    def ack(self, message: MessageProxy) -> None:
        redis_id = message.options["redis_message_id"]
        try:
            self.acks.submit(redis_id)
        except LOST_CONNECTION as e:
            raise ConnectionClosed(e) from None
        finally:
            self._release(message)
        self.broker.held.release(self.queue_name, [redis_id])

    def nack(self, message: MessageProxy) -> None:
        """Dead-letter ``message`` with the reason it failed (the exception it carries)."""
        reason = failure_reason(message._exception)
        redis_id = message.options["redis_message_id"]
        try:
            self.broker.dead_letter(self.queue_name, redis_id, reason)
        except LOST_CONNECTION as e:
            raise ConnectionClosed(e) from None
        finally:
            self._release(message)
        self.broker.held.release(self.queue_name, [redis_id])

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        """Return messages to the queue (on a lost connection, the next consumer does)."""
        ids = [message.options["redis_message_id"] for message in messages]
        for redis_id in ids:
            self.etas.pop(redis_id, None)
        self.broker.held.release(self.queue_name, ids)
        self.broker.hand_back(self.queue_name, ids)

    def close(self) -> None:
        """Return what was fetched and never handed to a worker thread, then disconnect.

        That is the prefetched messages not yet handed out, and the delayed ones the consumer
        thread dropped from memory without requeueing them (it does so on a lost connection).
        """
        undelivered = [redis_id for redis_id, _ in self.message_cache] + list(self.etas)
        self.message_cache = []
        self.etas.clear()
        self.broker.held.release(self.queue_name, undelivered)
        self.broker.hand_back(self.queue_name, undelivered)
        super().close()
        self.waiter.connection_pool.disconnect()

    def _give_back_prefetched(self) -> None:
        """Return the fetched messages not yet handed to a worker thread to the queue."""
        if self.message_cache:
            ids = [redis_id for redis_id, _ in self.message_cache]
            self.message_cache = []
            self.broker.held.release(self.queue_name, ids)
            self.broker.hand_back(self.queue_name, ids)

    def _fetch(self, count: int) -> list[Fetched]:
        """The broker's fetch; one lost with its connection may have taken ids all the same."""
        try:
            return self.broker.fetch(self.queue_name, count)
        except LOST_CONNECTION:
            self.broker.held.doubt(self.queue_name)
            raise

    def _admit(self, redis_id: str, data: bytes | None) -> Message[Any] | None:
        """The fetched message if a worker thread can run it; else it is settled here."""
        if data is None:
            # Settled elsewhere since its id was queued: only the id is left to drop.
            self.logger.warning("Message %s of %r has no payload.", redis_id, self.queue_name)
            self.broker.do_ack(self.queue_name, redis_id)
            return None
        message = read_message(data)
        if isinstance(message, str):
            self._dead_letter(redis_id, message)
            return None
        problem = runnable_problem(self.broker, message, self.queue_name)
        if problem is not None:
            self._settle_member(message, problem)
            self._dead_letter(redis_id, problem)
            return None
        # The id it was fetched by is the one to settle it by, whatever its payload says.
        message.options["redis_message_id"] = redis_id
        return message

    def _dead_letter(self, redis_id: str, reason: str) -> None:
        self.logger.error("Dead-lettering message %s of %r: %s.", redis_id, self.queue_name, reason)
        self.broker.dead_letter(self.queue_name, redis_id, reason)

    def _settle_member(self, message: Message[Any], problem: str) -> None:
        """Record a batch member dead-lettered here, before any worker thread (and so
        ``BatchMembers``) could see it, as failed in the store of the broker's own
        ``BatchMembers``: otherwise its batch would wait for it until cancelled. Recorded
        before the dead-lettering, so Redis failing in between leaves the message in this
        worker's ack set, recovered and recorded later; recording twice counts once."""
        member = member_of(message)
        recorder = next((m for m in self.broker.middleware if isinstance(m, BatchMembers)), None)
        if member is None or recorder is None:
            return
        batch_id, ordinal = member
        recorder.batches.settle(
            batch_id,
            ordinal,
            failed=FailureKind.DEAD_LETTERED,
            reason=kept_reason(problem),
            message_id=message.message_id,
        )

    def _wait_for_token(self) -> None:
        timeout_ms = self._block_ms()
        if timeout_ms > REDIS_TICK_MS:
            timeout_ms -= REDIS_TICK_MS
        elif timeout_ms < self.timeout:
            time.sleep(max(timeout_ms, 0) / 1000)  # a delayed message is due within a tick
            return
        self.waiter.blpop([self.wake_key], timeout=timeout_ms / 1000)

    def _block_ms(self) -> int:
        return block_ms(
            timeout_ms=self.timeout, next_eta_ms=self._next_eta(), now_ms=current_millis()
        )

    def _hold_eta(self, message: Message[Any]) -> None:
        eta = message.options.get("eta")
        if isinstance(eta, int | float) and not isinstance(eta, bool):
            due_ms = math.ceil(eta)
            redis_id = message.options["redis_message_id"]
            self.etas[redis_id] = due_ms
            heapq.heappush(self.due, (due_ms, redis_id))

    def _next_eta(self) -> int | None:
        while self.due and self.etas.get(self.due[0][1]) != self.due[0][0]:
            heapq.heappop(self.due)
        return self.due[0][0] if self.due else None

    def _release(self, message: MessageProxy) -> None:
        self.queued_message_ids.discard(message.message_id)
        self.etas.pop(message.options["redis_message_id"], None)
        self.room.set()
