"""Writes that threads hand in one by one, sent together: group commit.

Dramatiq's worker threads ack their messages themselves, one Redis round trip per message, so
a process draining short messages spends a round trip, and the Python that sends it, on each.
A ``GroupCommit`` sends what its threads hand in as they come: a thread whose item arrives
while no write is on its way writes at once; one that arrives during a write waits for that
write to end, and the next write carries every item that queued up meanwhile. No item waits
for a timer or for a batch to fill, so a lone ack is as fast as before, and under load the
round trips fall to one per wave of finished messages.

:meth:`GroupCommit.submit` returns once its own item was written, so a worker that dies loses
no ack that returned, and it raises what the write of its item raised, in every thread whose
item that write carried: each retries its own, as it would have retried a single ack.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class _Group(Generic[T]):
    """The items of one write: its turn comes when the write before it ended; then one of its
    threads writes it, and the others wait until it is done."""

    def __init__(self) -> None:
        self.items: list[T] = []
        self.turn = threading.Event()
        self.done = threading.Event()
        self.claimed = False
        self.error: BaseException | None = None


class GroupCommit(Generic[T]):
    """Calls ``write`` with the items submitted since its last call, one call at a time.

    Each thread waits on its own group's events, set once each, so a write wakes only the
    threads whose items it carried, and the one that writes the next group.
    """

    def __init__(self, write: Callable[[list[T]], object]) -> None:
        self._write = write
        self._lock = threading.Lock()
        self._open: _Group[T] = _Group()
        self._writing = False

    def submit(self, item: T) -> None:
        """Return once ``item`` has been written; raise what its write raised."""
        with self._lock:
            group = self._open
            group.items.append(item)
            writes = not self._writing
            if writes:
                self._writing = group.claimed = True
                self._open = _Group()
        if not writes:
            group.turn.wait()
            with self._lock:
                writes, group.claimed = not group.claimed, True
        if writes:
            self._write_group(group)
        else:
            group.done.wait()
        if group.error is not None:
            raise group.error

    def _write_group(self, group: _Group[T]) -> None:
        """Write ``group``, then hand the turn to the group that filled meanwhile, if any."""
        try:
            self._write(group.items)
        except BaseException as error:
            group.error = error
        group.done.set()
        with self._lock:
            following = self._open
            if following.items:
                self._open = _Group()
                following.turn.set()
            else:
                self._writing = False
