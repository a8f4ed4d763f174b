"""Scenario 7: a countdown longer than Celery's visibility timeout, and how often each task ran.

Celery's Redis transport emulates acknowledgements: a fetched message sits in an ``unacked``
hash until it is acked, and a periodic sweep puts back on its queue any message unacked for
longer than ``visibility_timeout``. A task with a countdown is fetched at once and held,
unacknowledged, by the worker until its eta, so a countdown longer than the visibility timeout
is put back and fetched again while the first copy waits: it runs twice, or more. Dramatiq's
delay queue has no such clock: a worker's unacknowledged messages return only when its
heartbeat stops.

The systems run side by side, each on its own queue and keys: a handful of no-op tasks,
so they do not compete, and one repetition takes one countdown, not three.
"""

from __future__ import annotations

import statistics
import time
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from typing import Any

import redis

from bench.harness import Bench, Medians, Scenario
from bench.systems import (
    Producer,
    System,
    wait_until_count,
    workers,
)

KEY = "countdown"
#: Environment variables carrying the run's tag and Celery's visibility timeout to the workers.
TAG_VARIABLE = "BENCH_COUNTDOWN_TAG"
VISIBILITY_VARIABLE = "BENCH_VISIBILITY_TIMEOUT_S"
#: The task's name, the same in every system's worker module.
TASK = "counted"
#: The message sent first, without a countdown, to know the workers are consuming.
WARM_UP = "warm-up"
#: Seconds between Celery's sweeps for unacked messages (kombu's default is every 10 s,
#: scanning on every 10th: every ~100 s against a default visibility timeout of 1 h).
RESTORE_INTERVAL_S = 1

SYSTEMS = (
    System("fintask", "fintask", processes=2, threads=8),
    System("Celery", "celery", processes=2, threads=8, pool="threads"),
)
#: Bare Dramatiq would run this module too (its kind is ``dramatiq``); it is left out of
#: ``SYSTEMS`` because fintask's delayed messages are Dramatiq's own, and a third set of
#: workers adds about 9 s to every repetition.
MODULES = {
    "fintask": "bench.apps.countdown_dramatiq",
    "dramatiq": "bench.apps.countdown_dramatiq",
    "celery": "bench.apps.countdown_celery",
}


@dataclass(frozen=True)
class Plan:
    """How many messages, how long their countdown, and Celery's visibility timeout."""

    messages: int
    countdown_s: float
    visibility_timeout_s: float

    @property
    def case(self) -> str:
        return (
            f"{self.messages} tasks, countdown {self.countdown_s:g} s, "
            f"visibility_timeout {self.visibility_timeout_s:g} s"
        )

    @property
    def grace_s(self) -> float:
        """How long to keep watching once every message ran: a duplicate has time to show."""
        return self.visibility_timeout_s + 1.5 * RESTORE_INTERVAL_S


QUICK = Plan(messages=20, countdown_s=3.5, visibility_timeout_s=2)
FULL = Plan(messages=100, countdown_s=30, visibility_timeout_s=10)


def transport_options(visibility_timeout_s: float) -> dict[str, Any]:
    """Celery's Redis transport options of the run: the shortened timeout, swept every second."""
    return {
        "visibility_timeout": visibility_timeout_s,
        "unacked_restore_interval": RESTORE_INTERVAL_S,
        "unacked_restore_throttle": 1,
    }


def queue_name(tag: str) -> str:
    """The queue of one system's run."""
    return f"bench_countdown_{tag}"


def runs_key(tag: str) -> str:
    """The hash of executions per message key in one system's run."""
    return f"bench:countdown:{tag}:runs"


def delays_key(tag: str) -> str:
    """The hash of each message's delay, send to first execution, in seconds."""
    return f"bench:countdown:{tag}:delays"


def record_run(client: redis.Redis, tag: str, key: str, sent_at: float) -> None:
    """What the task does: count this execution of message ``key`` and keep its first delay."""
    pipeline = client.pipeline(transaction=False)
    pipeline.hincrby(runs_key(tag), key, 1)
    pipeline.hsetnx(delays_key(tag), key, repr(time.time() - sent_at))
    pipeline.execute()


def send(bench: Bench, system: System, plan: Plan, keys: list[str], countdown_s: float) -> None:
    """Send one task per key, due ``countdown_s`` from now, as ``system``'s producer would."""
    producer = Producer(
        system.kind,
        bench.redis_url,
        broker_transport_options=transport_options(plan.visibility_timeout_s),
    )
    for key in keys:
        producer.send(
            queue_name(tag_of(system)), TASK, (key, time.time()), delay_s=countdown_s or None
        )
    producer.close()


def tag_of(system: System) -> str:
    """The tag naming ``system``'s queue and keys."""
    return system.name.lower().replace(" ", "_")


def run(bench: Bench) -> None:
    plan = FULL if bench.full else QUICK
    systems = bench.order(SYSTEMS)
    keys = [f"m{i}" for i in range(plan.messages)]
    bench.flush()
    starts = [
        partial(
            workers,
            system,
            MODULES[system.kind],
            [queue_name(tag_of(system))],
            redis_url=bench.redis_url,
            log_path=bench.log_path(KEY, system.name),
            extra_env={
                TAG_VARIABLE: tag_of(system),
                VISIBILITY_VARIABLE: str(plan.visibility_timeout_s),
            },
        )
        for system in systems
    ]
    with bench.client() as client, ExitStack() as stack:
        for start in starts:
            stack.enter_context(start())
        # Celery's visibility clock starts when a worker fetches: send once all consume.
        for system in systems:
            send(bench, system, plan, [WARM_UP], 0)
        for system in systems:
            key = runs_key(tag_of(system))
            if not wait_until_count(lambda key=key: client.hexists(key, WARM_UP), 1, timeout_s=60):
                raise RuntimeError(f"{system.name}: the workers did not start within 60 s")
        for system in systems:
            send(bench, system, plan, keys, plan.countdown_s)
        for system in systems:
            key = runs_key(tag_of(system))
            wait_until_count(
                lambda key=key: client.hlen(key) - 1,
                plan.messages,
                timeout_s=plan.countdown_s + 30,
            )
        time.sleep(plan.grace_s)
        for system in systems:
            measure(bench, client, system, plan, keys)
    bench.flush()


def measure(bench: Bench, client: redis.Redis, system: System, plan: Plan, keys: list[str]) -> None:
    """Record how many times each message ran, and after how long."""
    tag = tag_of(system)
    runs = {k.decode(): int(v) for k, v in client.hgetall(runs_key(tag)).items()}
    delays = [float(v) for k, v in client.hgetall(delays_key(tag)).items() if k != WARM_UP.encode()]
    counts = [runs.get(key, 0) for key in keys]
    case, name = plan.case, system.name
    bench.record(KEY, case, "executions per task", "runs", name, statistics.mean(counts))
    bench.record(KEY, case, "tasks run more than once", "tasks", name, sum(c > 1 for c in counts))
    bench.record(KEY, case, "tasks never run", "tasks", name, counts.count(0))
    bench.record(KEY, case, "most runs of one task", "runs", name, max(counts))
    if delays:
        bench.record(KEY, case, "observed delay", "s", name, statistics.median(delays))


def verdicts(medians: Medians) -> list[str]:
    """Celery's duplicates against Dramatiq's single runs, per plan measured."""
    lines = []
    for plan in (QUICK, FULL):
        twice = medians.get(plan.case, "tasks run more than once", "Celery")
        if twice is None:
            continue
        most = medians.get(plan.case, "most runs of one task", "Celery") or 0
        line = (
            f"Celery executed {twice:.0f} of {plan.messages} tasks more than once, up to "
            f"{most:.0f} times (visibility_timeout {plan.visibility_timeout_s:g} s < countdown "
            f"{plan.countdown_s:g} s)"
        )
        for name in ("fintask", "Dramatiq"):
            more = medians.get(plan.case, "tasks run more than once", name)
            never = medians.get(plan.case, "tasks never run", name)
            if more is None or never is None:
                continue
            if more == 0 and never == 0:
                line += f"; {name} executed each once"
            else:
                line += f"; {name} ran {more:.0f} more than once and {never:.0f} never"
        lines.append(line)
    return lines


SCENARIO = Scenario(
    number=7,
    key=KEY,
    title="A countdown longer than Celery's visibility timeout",
    run=run,
    about=(
        "Each system gets tasks that are due after a countdown longer than Celery's "
        f"`visibility_timeout` ({QUICK.messages} tasks, countdown {QUICK.countdown_s:g} s "
        f"against {QUICK.visibility_timeout_s:g} s quick; {FULL.messages}, "
        f"{FULL.countdown_s:g} s against {FULL.visibility_timeout_s:g} s full). The tasks are "
        "sent once a first, undelayed one has run (so the workers are consuming); the task "
        "counts its executions per task in a Redis hash (HINCRBY) and keeps its delay from "
        "send to first start. The scenario waits until every task ran, then another "
        "visibility timeout and one and a half sweeps, so a late duplicate shows. Celery (two "
        "worker instances, `-P threads -c 8`, prefetch multiplier 4, `acks_late`) gets them "
        "with `countdown=` (`send_task`, as `apply_async(countdown=...)` sends); its Redis "
        "transport is configured with "
        "`broker_transport_options={'visibility_timeout': ..., 'unacked_restore_interval': "
        f"{RESTORE_INTERVAL_S}, 'unacked_restore_throttle': 1}}`: the timeout shortened for "
        "the run, and kombu's sweep for overdue unacked messages run every second instead of "
        "every ~100 s, both scaled down from the defaults (1 h, swept every 10 s, scanning "
        "every 10th time) so the run is short. The worker holds an eta task unacknowledged "
        "until it runs; once it is older than the timeout, a sweep puts it back on the queue "
        "and a worker fetches and holds a second copy (and, while that one waits, a third), "
        "each run at the same eta. fintask "
        "(2 processes x 8 threads) sends with `broker.enqueue(message, delay=countdown_ms)`: "
        "Dramatiq's delay queue, whose messages a live worker holds until due and which come "
        "back only when the holder's heartbeat is stale (60 s). The two run side by side, "
        "each on its own queue. Bare Dramatiq is left out to keep the run short: fintask's "
        "delayed messages are Dramatiq's own (`bench.apps.countdown_dramatiq` runs it too, "
        "and ran every task once when tried)."
    ),
    ratios=(),
    verdicts=verdicts,
)
