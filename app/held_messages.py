"""What a worker process holds of each queue, so a fetch whose answer was lost strands nothing.

A fetch moves message ids from a queue into the process's ack set in Redis and answers them.
If the connection drops between the two (Redis closing its connections as it shuts down, a
stalled socket that times out), the ids are in the ack set and the process never saw them: no
worker thread runs them, and as the process stays alive, recovery never returns them. One in
five Redis restarts under load left such a message behind, forever.

So the process keeps the Redis ids it handed to worker threads and has not settled yet, per
queue, and after a fetch that failed on a lost connection its next consumer compares the ack
set with them: ids in the set and not held were fetched by the lost call, and go back to the
queue. Only ids still in the ack set are returned (Dramatiq's requeue removes each from the
set first), and a held id leaves this record only once its ack or nack has gone through, so a
message a worker thread is running or settling is never returned beside it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable


class HeldMessages:
    """The Redis ids of each queue handed to this process's worker threads and not settled,
    and the queues whose last fetch may have taken ids nobody saw."""

    def __init__(self) -> None:
        self._held: dict[str, set[str]] = {}
        self._in_doubt: set[str] = set()
        self._lock = threading.Lock()

    def hold(self, queue_name: str, redis_id: str) -> None:
        with self._lock:
            self._held.setdefault(queue_name, set()).add(redis_id)

    def release(self, queue_name: str, redis_ids: Iterable[str]) -> None:
        """Forget ``redis_ids``: settled in Redis (acked, dead-lettered or requeued)."""
        with self._lock:
            self._held.get(queue_name, set()).difference_update(redis_ids)

    def doubt(self, queue_name: str) -> None:
        """Say a fetch of ``queue_name`` failed on a lost connection: it may have taken ids."""
        with self._lock:
            self._in_doubt.add(queue_name)

    def in_doubt(self, queue_name: str) -> bool:
        with self._lock:
            return queue_name in self._in_doubt

    def unseen(self, queue_name: str, read_ack_set: Callable[[], Iterable[str]]) -> set[str]:
        """The ids of the ack set (as ``read_ack_set`` reads it) that nobody here holds.

        The ack set is read after the snapshot of what is held: an id settled between the two
        is then in the snapshot or no longer in the set, never taken for unseen.
        """
        with self._lock:
            held = set(self._held.get(queue_name, ()))
        return set(read_ack_set()) - held

    def resolve(self, queue_name: str) -> None:
        """Say the ids a lost fetch of ``queue_name`` took are back in their queue."""
        with self._lock:
            self._in_doubt.discard(queue_name)
