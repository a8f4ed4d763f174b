"""Each queue's messages counted in the states operators browse them by, and whether paused.

``app.inspection.queue_stats`` counts what one command a key tells (the ready list, the delay
list, the dead letters); operators browse five states (``app.control.stored``), so the delay
list is split into delayed and retrying messages by reading its payloads, and held messages are
counted by the size of the workers' ack sets. The split reads every payload of the delay list:
up to ``SPLIT_MAX`` of them, past which only their sum is known. With workers running their
delay consumers hold the delayed messages (counted as held), so the list is usually short.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis

from app.broker_features import require_redis_broker
from app.control.stored import held_counts, read_slice
from app.control_state import read_state
from app.inspection import queue_stats

#: The longest delay list split into delayed and retrying messages on each read.
SPLIT_MAX = 10_000


@dataclass(frozen=True)
class QueueCounts:
    """One queue's messages by state. ``delayed`` and ``retrying`` are None when its delay list
    was too long to split (``in_delay_list`` is their sum, always known)."""

    queue_name: str
    ready: int
    delayed: int | None
    retrying: int | None
    in_delay_list: int
    held: int
    dead: int
    oldest_age_s: float
    paused: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "queue_name": self.queue_name,
            "ready": self.ready,
            "delayed": self.delayed,
            "retrying": self.retrying,
            "in_delay_list": self.in_delay_list,
            "held": self.held,
            "dead": self.dead,
            "oldest_age_s": round(self.oldest_age_s, 3),
            "paused": self.paused,
        }


def queue_counts(client: redis.Redis, queue_names: Iterable[str]) -> list[QueueCounts]:
    """The counts of each of ``queue_names``, in their order."""
    require_redis_broker("counting messages by state (delayed, retrying, held)")
    names = list(queue_names)
    paused = read_state(client).paused
    holding = held_counts(client, names)
    counts = []
    for stats in queue_stats(client, names):
        delayed, retrying = _split(client, stats.queue_name, stats.delayed)
        counts.append(
            QueueCounts(
                queue_name=stats.queue_name,
                ready=stats.ready,
                delayed=delayed,
                retrying=retrying,
                in_delay_list=stats.delayed,
                held=holding[stats.queue_name],
                dead=stats.dead,
                oldest_age_s=stats.oldest_age_s or 0.0,  # None on RabbitMQ, refused above
                paused=stats.queue_name in paused,
            )
        )
    return counts


def _split(client: redis.Redis, queue_name: str, listed: int) -> tuple[int | None, int | None]:
    """Delayed and retrying messages of the delay list (None, None past ``SPLIT_MAX``)."""
    if listed == 0:
        return 0, 0
    if listed > SPLIT_MAX:
        return None, None
    entries = read_slice(client, queue_name, "delay", 0, SPLIT_MAX, False)
    states = [stored.listed_state for stored in entries if stored is not None]
    return states.count("delayed"), states.count("retrying")
