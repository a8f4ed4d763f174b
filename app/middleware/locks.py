"""At most one per key: an owned Redis mutex, and unique (debounced) enqueue.

Dramatiq's ``ConcurrentRateLimiter(limit=1)`` is a counter with a TTL, not a lock: it has no
owner, so a holder that outlives the TTL lets a second holder in, and a late release of the
first one frees the second one's slot. ``RedisMutex`` is owned: a random token set with
``SET NX PX``, renewed by a background thread while its holder runs, and deleted only by a
compare-and-delete script that checks the token.
"""

from __future__ import annotations

import random
import secrets
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import redis
from dramatiq import Actor, Broker, Message, Middleware
from dramatiq.broker import MessageProxy
from dramatiq.logging import get_logger
from dramatiq.middleware import MiddlewareError, SkipMessage

from app.middleware import (
    InvalidActorOption,
    RedisSource,
    RedisUnavailable,
    check_key_spec,
    check_positive_ms,
    defer_message,
    lazy_client,
    message_key,
    option,
)

# KEYS[1] is deleted only while it holds ARGV[1]: an owner's release never frees a later owner.
_COMPARE_AND_DELETE = """
if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end
return 0
"""
_RENEW = """
if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) end
return 0
"""
# Claims KEYS[1] for message id ARGV[1] unless another message holds it: {1} when this message
# holds it now (freshly, or already: its TTL is refreshed), else {0, the holder's id}.
_CLAIM = """
local holder = redis.call("GET", KEYS[1])
if holder == ARGV[1] or not holder then
  redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
  return {1}
end
return {0, holder}
"""

CONTENTION_OUTCOMES = ("skip", "defer", "fail")
#: The message option holding the Redis key a unique message claimed.
UNIQUE_CLAIM_OPTION = "unique_claim"

logger = get_logger(__name__)


def compare_and_delete(client: redis.Redis, key: str, value: str) -> bool:
    """Delete ``key`` if it still holds ``value`` (its owner's token); whether it did."""
    return bool(client.eval(_COMPARE_AND_DELETE, 1, key, value))


class LockNotAcquired(MiddlewareError):
    """Another message holds the lock (``lock_contention="fail"``)."""


class AlreadyPending(MiddlewareError):
    """``send`` was a no-op: a message with the same unique key is pending.

    A ``MiddlewareError``, so that Dramatiq lets it reach the caller of ``send`` instead of
    logging it and enqueueing anyway. ``pending_message_id`` is the message that will run.
    """

    def __init__(self, actor_name: str, key: str, pending_message_id: str) -> None:
        super().__init__(
            f"actor {actor_name!r}: message {pending_message_id} for {key!r} is pending"
        )
        self.key = key
        self.pending_message_id = pending_message_id


class RedisMutex:
    """An owned lock on ``<namespace>:lock:<key>``, renewed every ``ttl_ms / 3`` while held.

    If the holder dies, the lock expires after ``ttl_ms``. If a renewal finds the token gone
    (Redis lost the key, or was out of reach for longer than the TTL), ``lost`` turns true
    and an error is logged: the holder can no longer assume exclusivity.
    """

    def __init__(
        self, client: redis.Redis, key: str, *, ttl_ms: int, namespace: str = "fintask"
    ) -> None:
        self.client = client
        self.key = key
        self.redis_key = f"{namespace}:lock:{key}"
        self.ttl_ms = ttl_ms
        self.token = secrets.token_hex(16)
        self.lost = False
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def acquire(self) -> bool:
        """Take the lock if it is free; start renewing it."""
        if not self.client.set(self.redis_key, self.token, nx=True, px=self.ttl_ms):
            return False
        self._renewer = threading.Thread(target=self._renew, name=f"renew {self.key}", daemon=True)
        self._renewer.start()
        return True

    def release(self) -> bool:
        """Stop renewing and delete the lock if this holder still owns it."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        return compare_and_delete(self.client, self.redis_key, self.token)

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_ms / 3000):
            try:
                owned = self.client.eval(_RENEW, 1, self.redis_key, self.token, self.ttl_ms)
            except redis.RedisError:
                logger.warning("Could not renew lock %r; retrying.", self.key, exc_info=True)
                continue
            if not owned:
                self.lost = True
                logger.error("Lock %r was lost while held: another may hold it.", self.key)
                return


class Mutex(Middleware):
    """Runs at most one message per lock key at a time, across all workers.

    Actor options (a message's own options win over the actor's):
      lock_key(str | callable): a template over the arguments (``"account:{account_id}"``)
        or a callable taking them. Absent: no lock.
      lock_contention(str): when the lock is taken: ``"skip"`` drops the message (acked,
        logged, counted), ``"defer"`` enqueues it again after ``lock_defer_ms`` without
        spending a retry, ``"fail"`` raises ``LockNotAcquired`` (an ordinary failure:
        ``Retries`` retries it).
      lock_ttl_ms(int): how long a lock outlives a holder that died; renewed while it runs.
      lock_defer_ms(int): the delay of a deferred message (jittered by up to a half).

    Parameters mirror the options as defaults; ``on_contention`` is called with the message
    and the outcome, and ``contended`` counts (actor name, outcome) in this process.
    """

    def __init__(
        self,
        *,
        client: RedisSource,
        namespace: str = "fintask",
        contention: str = "defer",
        ttl_ms: int = 60_000,
        defer_ms: int = 1_000,
        on_contention: Callable[[MessageProxy, str], None] | None = None,
    ) -> None:
        self.logger = get_logger(__name__, type(self))
        self.client = lazy_client(client)
        self.namespace = namespace
        self.contention = contention
        self.ttl_ms = ttl_ms
        self.defer_ms = defer_ms
        self.on_contention = on_contention
        self.contended: Counter[tuple[str, str]] = Counter()
        self._count_lock = threading.Lock()
        self._held = threading.local()

    @property
    def actor_options(self) -> set[str]:
        return {"lock_key", "lock_contention", "lock_ttl_ms", "lock_defer_ms"}

    def before_declare_actor(self, broker: Broker, actor: Actor[..., Any]) -> None:
        if (spec := actor.options.get("lock_key")) is not None:
            check_key_spec(actor, "lock_key", spec)
        contention = actor.options.get("lock_contention")
        if contention is not None and contention not in CONTENTION_OUTCOMES:
            reason = f"must be one of {', '.join(map(repr, CONTENTION_OUTCOMES))}"
            raise InvalidActorOption(actor.actor_name, "lock_contention", contention, reason)
        check_positive_ms(actor, "lock_ttl_ms")
        check_positive_ms(actor, "lock_defer_ms")

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        actor = broker.get_actor(message.actor_name)
        spec = option(message, actor, "lock_key")
        if spec is None:
            return
        key = message_key(spec, actor, message, "lock_key")
        ttl_ms = option(message, actor, "lock_ttl_ms") or self.ttl_ms
        mutex = RedisMutex(self.client(), key, ttl_ms=ttl_ms, namespace=self.namespace)
        try:
            acquired = mutex.acquire()
        except redis.RedisError as error:
            raise RedisUnavailable(f"could not take lock {key!r}: {error}") from error
        if acquired:
            self._held.mutex = mutex
            return
        outcome = option(message, actor, "lock_contention") or self.contention
        with self._count_lock:
            self.contended[actor.actor_name, outcome] += 1
        if self.on_contention is not None:
            self.on_contention(message, outcome)
        if outcome == "fail":
            raise LockNotAcquired(f"actor {actor.actor_name!r}: lock {key!r} is held")
        if outcome == "defer":
            defer_ms = option(message, actor, "lock_defer_ms") or self.defer_ms
            delay_ms = round(defer_ms * random.uniform(1, 1.5))
            defer_message(broker, message, delay_ms=delay_ms, count_option="lock_deferrals")
        else:
            self.logger.info("Dropped message %r: lock %r is held.", message.message_id, key)
        raise SkipMessage(f"lock {key!r} is held: {outcome}")

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any | None = None,
        exception: BaseException | None = None,
    ) -> None:
        mutex: RedisMutex | None = getattr(self._held, "mutex", None)
        if mutex is None:
            return
        self._held.mutex = None
        if not mutex.release():
            self.logger.error("Lock %r expired before its message finished.", mutex.key)

    after_skip_message = after_process_message


class UniqueEnqueue(Middleware):
    """At most one pending message per unique key: a debounce at send time.

    Actor options:
      unique_key(str | callable): a template over the arguments or a callable taking them.
      unique_ttl_ms(int): the claim's safety-net lifetime. Default: the longer of ``max_age``
        (else ``ttl_ms``) and the send's delay, plus a minute.

    ``send`` claims ``<namespace>:unique:<actor>:<key>`` for its message id (``SET NX``); if
    another message holds it, ``send`` enqueues nothing and raises ``AlreadyPending``. The
    claim is freed when its message is
    delivered to a worker, so a change after that gets a fresh message. Later enqueues of an
    admitted message (retries, deferrals, a delayed message moving to its queue) carry
    ``options["unique_claim"]``: they re-claim the key if free and are never suppressed.

    Put it after ``Guardrails`` (a rejected send must not hold a claim) and before
    ``AgeLimit`` (a message AgeLimit drops frees its key too).
    """

    def __init__(
        self, *, client: RedisSource, namespace: str = "fintask", ttl_ms: int = 86_400_000
    ) -> None:
        self.logger = get_logger(__name__, type(self))
        self.client = lazy_client(client)
        self.namespace = namespace
        self.ttl_ms = ttl_ms

    @property
    def actor_options(self) -> set[str]:
        return {"unique_key", "unique_ttl_ms"}

    def before_declare_actor(self, broker: Broker, actor: Actor[..., Any]) -> None:
        if (spec := actor.options.get("unique_key")) is not None:
            check_key_spec(actor, "unique_key", spec)
        check_positive_ms(actor, "unique_ttl_ms")

    def before_enqueue(self, broker: Broker, message: Message[Any], delay: int | None) -> None:
        actor = broker.actors.get(message.actor_name)
        if actor is None or option(message, actor, "unique_key") is None:
            return
        claimed = message.options.get(UNIQUE_CLAIM_OPTION)
        redis_key = claimed or self.redis_key(actor, message)
        max_age = option(message, actor, "max_age") or self.ttl_ms
        ttl_ms = option(message, actor, "unique_ttl_ms") or max(max_age, delay or 0) + 60_000
        try:
            result = self.client().eval(_CLAIM, 1, redis_key, message.message_id, ttl_ms)
        except redis.RedisError:
            # A duplicate costs an idempotent run; a lost send costs the work itself.
            self.logger.warning("Could not claim %r; sending anyway.", redis_key, exc_info=True)
            return
        if int(result[0]):
            message.options[UNIQUE_CLAIM_OPTION] = redis_key
        elif claimed is None:
            holder = result[1].decode() if isinstance(result[1], bytes) else str(result[1])
            raise AlreadyPending(actor.actor_name, redis_key, holder)

    def redis_key(self, actor: Actor[..., Any], message: Message[Any]) -> str:
        """The Redis key of the claim for ``message``'s unique key."""
        key = message_key(option(message, actor, "unique_key"), actor, message, "unique_key")
        return f"{self.namespace}:unique:{actor.actor_name}:{key}"

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        if redis_key := message.options.get(UNIQUE_CLAIM_OPTION):
            compare_and_delete(self.client(), redis_key, message.message_id)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        # A message failed before this middleware saw it (Guardrails dead-letters a newer
        # schema) frees its key too; a skipped one that lives on (deferred) keeps its claim.
        if message.failed and (redis_key := message.options.get(UNIQUE_CLAIM_OPTION)):
            compare_and_delete(self.client(), redis_key, message.message_id)
