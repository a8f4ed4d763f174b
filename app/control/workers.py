"""The worker processes of the fleet, as their records (``app.middleware.fleet``) show them.

A record whose live key still exists is a worker that is **alive**; one that stopped through
its shutdown says **stopped**; one whose live key expired without a shutdown (SIGKILL, a lost
host, a frozen process) is **gone**, shown with its last heartbeat. What a gone worker fetched
and never acknowledged is still in its ack sets: those messages are **waiting for recovery**,
which ``DeadWorkerRecovery`` does once the worker's broker heartbeat is
``HEARTBEAT_TIMEOUT_MS`` old (60 s with the Procfile's settings).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, cast

import redis
from dramatiq.common import dq_name

from app.middleware.fleet import LAST_KEY, SEEN_KEY, forget_gone, live_key
from app.redis_client import as_text
from app.timestamps import rfc3339
from chunking.redis_keys import acks_key

WorkerState = Literal["alive", "stopped", "gone"]


@dataclass(frozen=True)
class WorkerView:
    """One worker process: its last record, its state, and the messages it still holds."""

    state: WorkerState
    record: dict[str, Any]
    #: Messages in its ack sets, by queue (of a gone worker: waiting for recovery).
    unacked: dict[str, int]

    @property
    def worker_id(self) -> str:
        return str(self.record.get("worker_id", ""))

    def as_dict(self) -> dict[str, Any]:
        record = self.record
        return {
            "worker_id": self.worker_id,
            "state": self.state,
            "host": record.get("host"),
            "pid": record.get("pid"),
            "process_type": record.get("process_type"),
            "queues": record.get("queues", []),
            "threads": record.get("threads"),
            "prefetch": record.get("prefetch"),
            "started_at": rfc3339(record.get("started_at_ms")),
            "heartbeat_at": rfc3339(record.get("heartbeat_at_ms")),
            "processed": record.get("processed", 0),
            "failed": record.get("failed", 0),
            "rss_bytes": record.get("rss_bytes"),
            "running": [
                {**running, "started_at": rfc3339(running.pop("started_at_ms", None))}
                for running in (dict(r) for r in record.get("running", []))
            ],
            "unacked": self.unacked,
            "waiting_for_recovery": sum(self.unacked.values()) if self.state == "gone" else 0,
        }


def list_workers(client: redis.Redis, queue_names: Iterable[str]) -> list[WorkerView]:
    """Every worker seen in the last day, alive ones first, each newest heartbeat first.

    ``queue_names`` are the declared queues whose ack sets are counted (their delay queues
    too). Records older than a day are forgotten here.
    """
    forget_gone(client)
    ids = [as_text(i) for i in cast(list[bytes], client.zrevrange(SEEN_KEY, 0, -1))]
    if not ids:
        return []
    names = list(queue_names)
    pipe = client.pipeline(transaction=False)
    for worker_id in ids:
        pipe.get(live_key(worker_id))
        pipe.hget(LAST_KEY, worker_id)
        for name in names:
            pipe.scard(acks_key(name, worker_id))
            pipe.scard(acks_key(dq_name(name), worker_id))
    answers = iter(pipe.execute())
    views = []
    for _ in ids:
        live, last = next(answers), next(answers)
        unacked = {}
        for name in names:
            held = int(next(answers)) + int(next(answers))
            if held:
                unacked[name] = held
        record = _record(live) or _record(last) or {}
        state: WorkerState = "alive" if live else ("stopped" if record.get("stopped") else "gone")
        views.append(WorkerView(state, record, unacked))
    order = {"alive": 0, "gone": 1, "stopped": 2}
    return sorted(views, key=lambda v: order[v.state])


def _record(data: bytes | None) -> dict[str, Any] | None:
    if data is None:
        return None
    try:
        record = json.loads(data)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
