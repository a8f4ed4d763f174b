"""Run a delayed (or retrying) message now: move it from its delay queue to its ready queue.

Dramatiq keeps a delayed message in two places over its life (``app.control.stored``): in the
delay queue's list ``<q>.DQ`` until a worker's delay consumer fetches it, then in that worker's
ack set, in the worker's memory, until its eta, when the worker enqueues a copy on ``<q>`` and
acknowledges the delayed one.

A message still in the delay list is moved by one script: out of the list and the delay hash,
into the ready hash under the same Redis id and to the head of the ready list (the next fetch
takes it: "now", not behind the backlog), with a wake-up token for a consumer blocked on the
queue (``app.wakeup_broker``). It keeps its message id and its options but its eta, and is due
from now (``due_at_ms``, so its wait is measured from the move). Being one script, it either
moved, or nothing changed: no consumer can fetch it from both lists.

A message a worker already holds is **not** moved: that worker will enqueue its copy at the eta
whatever Redis says, so moving it would run it twice (``held``). ``Operator.run_now`` asks that
worker instead, through the control state, to release it: the worker makes it due now in its
memory and enqueues it itself, within about 2 s, as at its eta (``app.middleware.fleet``).
With workers running, their delay consumers fetch a delayed message within moments of its send
(Dramatiq's delay prefetch is a thousand per thread), so the move here serves a message no
worker consumes, or the moment before one fetches it; the release serves the others.
"""

from __future__ import annotations

import json
from typing import Literal

import redis
from dramatiq.common import current_millis

from app.control.stored import hash_key, list_key
from app.middleware.metrics import DUE_AT_OPTION
from app.wakeup_broker import WAKE_TOKENS_MAX, WAKE_TOKENS_TTL_MS, wake_key
from chunking.redis_keys import NAMESPACE

#: What ``run_now`` did: moved it (``ready``), or why not.
RunNow = Literal["ready", "missing", "changed", "held", "already_queued"]

# KEYS: the delay list, the delay hash, the ready list, the ready hash, the wake-up list.
# ARGV: the Redis id, the data as read, the data to enqueue, the wake-up list's bound, its TTL.
# 1 moved; 0 its data changed or went; -1 its id is in the ready hash already (never overwrite
# a queued message); -2 it is not in the delay list: a worker holds it.
_RUN_NOW = """
if redis.call("HGET", KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
if redis.call("HEXISTS", KEYS[4], ARGV[1]) == 1 then return -1 end
if redis.call("LREM", KEYS[1], 0, ARGV[1]) == 0 then return -2 end
redis.call("HDEL", KEYS[2], ARGV[1])
redis.call("HSET", KEYS[4], ARGV[1], ARGV[3])
redis.call("LPUSH", KEYS[3], ARGV[1])
redis.call("RPUSH", KEYS[5], "1")
redis.call("LTRIM", KEYS[5], -tonumber(ARGV[4]), -1)
redis.call("PEXPIRE", KEYS[5], ARGV[5])
return 1
"""

_OUTCOMES: dict[int, RunNow] = {1: "ready", 0: "changed", -1: "already_queued", -2: "held"}


def run_now(
    client: redis.Redis, queue_name: str, redis_id: bytes | str, *, now_ms: int | None = None
) -> RunNow:
    """Move the delayed message ``redis_id`` of ``queue_name`` to the head of its ready queue,
    keeping its ids, atomically; ``ready`` when it moved, else why not (the module says when a
    worker ``held`` it; ``missing``: it went; ``changed``: it moved meanwhile, look again)."""
    now_ms = current_millis() if now_ms is None else now_ms
    data = client.hget(hash_key(queue_name, "delay"), redis_id)
    if data is None:
        return "missing"
    keys = [
        list_key(queue_name, "delay"),
        hash_key(queue_name, "delay"),
        list_key(queue_name, "queue"),
        hash_key(queue_name, "queue"),
        wake_key(NAMESPACE, queue_name),
    ]
    args = [redis_id, data, _due_now(data, queue_name, now_ms), WAKE_TOKENS_MAX, WAKE_TOKENS_TTL_MS]
    moved = int(client.register_script(_RUN_NOW)(keys=keys, args=args))
    return _OUTCOMES[moved]


def _due_now(data: bytes | str, queue_name: str, now_ms: int) -> bytes | str:
    """The payload as the ready queue's consumers expect it: its queue, no eta, due now. One
    that is no message object moves as it is, and its consumer dead-letters it, saying why."""
    try:
        message = json.loads(data)
    except ValueError:
        return data
    if not isinstance(message, dict) or not isinstance(message.get("options"), dict):
        return data
    options = {name: value for name, value in message["options"].items() if name != "eta"}
    options[DUE_AT_OPTION] = now_ms
    ready = {**message, "queue_name": queue_name, "options": options}
    return json.dumps(ready, separators=(",", ":")).encode()
