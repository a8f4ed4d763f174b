"""The Redis keys of Dramatiq's Redis broker's queues: the one place that spells them.

``dramatiq/brokers/redis/dispatch.lua`` (Dramatiq 2.2) keeps, under a namespace (``dramatiq``
by default), per queue ``q``:

- ``<ns>:q``: the ready list of message ids, oldest first (enqueue pushes right, fetch pops
  left), and ``<ns>:q.msgs``: the encoded messages by id, kept until each is acknowledged, so
  messages a worker has prefetched are still there;
- ``<ns>:q.DQ`` and ``<ns>:q.DQ.msgs``: the same for delayed messages no worker has fetched;
- ``<ns>:q.XQ``: the dead letters, scored by when they died (ms), and ``<ns>:q.XQ.msgs``:
  their messages, as last enqueued;
- ``<ns>:__acks__.<broker id>.q``: the ids a worker process fetched and has not acknowledged.

Readers of these keys (queue depths, inspection, dead letters, benchmarks) build them here, so
that a Dramatiq upgrade that moves one is checked against one module. The ack sets have no
helper: no reader needs one.
"""

from __future__ import annotations

from dramatiq.common import dq_name, xq_name

#: The namespace of ``RedisBroker``'s keys unless it is given another.
NAMESPACE = "dramatiq"


def queue_key(queue_name: str, *, namespace: str = NAMESPACE) -> str:
    """The list of ready message ids of ``queue_name`` (of a delay queue for ``q.DQ``)."""
    return f"{namespace}:{queue_name}"


def messages_key(queue_name: str, *, namespace: str = NAMESPACE) -> str:
    """The hash of ``queue_name``'s messages by id, each kept until it is acknowledged."""
    return f"{queue_key(queue_name, namespace=namespace)}.msgs"


def delay_queue_key(queue_name: str, *, namespace: str = NAMESPACE) -> str:
    """The list of ``queue_name``'s delayed message ids that no worker has fetched yet."""
    return queue_key(dq_name(queue_name), namespace=namespace)


def dead_letters_key(queue_name: str, *, namespace: str = NAMESPACE) -> str:
    """The sorted set of ``queue_name``'s dead letters, scored by when they died (ms)."""
    return queue_key(xq_name(queue_name), namespace=namespace)


def dead_messages_key(queue_name: str, *, namespace: str = NAMESPACE) -> str:
    """The hash of ``queue_name``'s dead letters' messages by id."""
    return messages_key(xq_name(queue_name), namespace=namespace)


def acks_key(queue_name: str, broker_id: str, *, namespace: str = NAMESPACE) -> str:
    """The set of ``queue_name``'s message ids the worker process ``broker_id`` fetched and has
    not acknowledged."""
    return f"{namespace}:__acks__.{broker_id}.{queue_name}"
