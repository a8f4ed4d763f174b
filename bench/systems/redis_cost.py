"""What the systems cost Redis, and how full their queues are: the benchmark's own server only."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from chunking.depth import RedisQueueDepth

#: Commands of the harness's own bookkeeping, never a system's: left out of every count.
HARNESS_COMMANDS = ("info", "config")


def wait_until_count(
    read: Callable[[], int], count: int, *, timeout_s: float, interval_s: float = 0.05
) -> int:
    """Poll ``read()`` until it reaches ``count`` or ``timeout_s`` passes; return the last value."""
    deadline = time.monotonic() + timeout_s
    value = read()
    while value < count and time.monotonic() < deadline:
        time.sleep(interval_s)
        value = read()
    return int(value)


class CountedReads:
    """A Redis read the harness polls (one command per call), counting its calls so that the
    cost of a system can leave them out."""

    def __init__(self, read: Callable[[], int]) -> None:
        self.read = read
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        return self.read()


@dataclass
class RedisCost:
    """Commands Redis ran and CPU it used between :meth:`start` and :meth:`stop`.

    ``CONFIG RESETSTAT`` zeroes ``INFO commandstats`` (the server is the benchmark's own), so
    the count covers every client, scripts' inner commands included (Dramatiq's fetch script
    counts its EVALSHA and each LPOP and SADD it runs). The harness's INFO and CONFIG calls are
    left out by name, its other commands (the polls of a record list, each run's own record)
    by the count the caller passes to :meth:`stop`.
    """

    client: redis.Redis
    _cpu: float = 0.0

    def start(self) -> None:
        self._cpu = _cpu_seconds(self.client)
        self.client.config_resetstat()

    def stop(self, harness_commands: int = 0) -> tuple[int, float]:
        """(commands, CPU seconds) since :meth:`start`, less ``harness_commands``."""
        stats = self.client.info("commandstats")
        used = _cpu_seconds(self.client) - self._cpu
        total = sum(
            int(value["calls"])
            for name, value in stats.items()
            if not name.removeprefix("cmdstat_").startswith(HARNESS_COMMANDS)
        )
        return total - harness_commands, used


def _cpu_seconds(client: redis.Redis) -> float:
    cpu = client.info("cpu")
    return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])


def queue_depth(client: redis.Redis, kind: str, queue: str) -> int:
    """Messages waiting in ``queue`` of a system of ``kind``, prefetched ones not counted.

    Dramatiq: the ready list plus the delay list (``chunking``'s own depth probe). Celery's
    Redis transport keeps one list per queue (and priority steps as ``queue\\x06\\x16N``);
    Huey and RQ one list; taskiq a stream, whose group's lag is what no consumer has read yet;
    arq a sorted set, its running jobs included (arq prefetches nothing).
    """
    if kind == "celery":
        pipeline = client.pipeline(transaction=False)
        for key in (queue, *(f"{queue}\x06\x16{step}" for step in (3, 6, 9))):
            pipeline.llen(key)
        return sum(int(count) for count in pipeline.execute())
    if kind == "taskiq":
        groups = client.xinfo_groups(queue) if client.exists(queue) else []
        if not groups:
            return int(client.xlen(queue)) if client.exists(queue) else 0
        return int(groups[0]["lag"] or 0)
    if kind == "huey":
        # RedisStorage's key: its name stripped to [A-Za-z0-9_].
        return int(client.llen("huey.redis." + re.sub(r"\W", "", queue, flags=re.ASCII)))
    if kind == "arq":
        return int(client.zcard(queue))
    if kind == "rq":
        return int(client.llen(f"rq:queue:{queue}"))
    return RedisQueueDepth(client=client)(queue)
