"""Scenario 7: tasks due after a countdown, and how often each ran, at Celery's defaults and
past its visibility timeout.

Celery's Redis transport emulates acknowledgements: a fetched message sits in an ``unacked``
hash until it is acked, and a periodic sweep puts back on its queue any message unacked for
longer than ``visibility_timeout`` (1 h by default). A task with a countdown is fetched at once
and held, unacknowledged, by the worker until its eta, so a countdown longer than the
visibility timeout is put back and fetched again while the first copy waits: it runs twice, or
more. Celery's documentation warns of exactly this; the scenario shows Celery at its defaults
(a countdown well inside the timeout) and, labelled as that caveat, past it. Dramatiq's delay
queue has no such clock: a worker's unacknowledged messages return only when its heartbeat
stops.

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
from bench.systems import Producer, System, wait_until_count

KEY = "countdown"
#: Environment variables carrying the run's tag and Celery's visibility timeout to the workers
#: (empty: Celery's default).
TAG_VARIABLE = "BENCH_COUNTDOWN_TAG"
VISIBILITY_VARIABLE = "BENCH_VISIBILITY_TIMEOUT_S"
#: The task's name, the same in every system's worker module.
TASK = "counted"
#: The message sent first, without a countdown, to know the workers are consuming.
WARM_UP = "warm-up"
#: Seconds between the caveat case's sweeps for unacked messages (kombu's default is every
#: 10 s, scanning on every 10th: every ~100 s against a default visibility timeout of 1 h).
RESTORE_INTERVAL_S = 1

MODULES = {
    "fintask": "bench.apps.countdown_dramatiq",
    "dramatiq": "bench.apps.countdown_dramatiq",
    "celery": "bench.apps.countdown_celery",
}


@dataclass(frozen=True)
class Plan:
    """How many messages, how long their countdown, and the caveat case's visibility timeout."""

    messages: int
    countdown_s: float
    visibility_timeout_s: float

    @property
    def case(self) -> str:
        return f"{self.messages} tasks, countdown {self.countdown_s:g} s"

    @property
    def grace_s(self) -> float:
        """How long to keep watching once every message ran: a duplicate has time to show."""
        return self.visibility_timeout_s + 1.5 * RESTORE_INTERVAL_S


QUICK = Plan(messages=20, countdown_s=2.5, visibility_timeout_s=1)
FULL = Plan(messages=100, countdown_s=30, visibility_timeout_s=10)


@dataclass(frozen=True)
class Setup:
    """One system's workers in the run; ``caveat``: Celery's visibility timeout shortened
    below the countdown (and its sweep run every second), what Celery's docs warn against."""

    tag: str
    system: System
    caveat: bool = False

    def visibility_timeout_s(self, plan: Plan) -> float | None:
        """The Celery transport's ``visibility_timeout`` (None: its default, 1 h)."""
        return plan.visibility_timeout_s if self.caveat else None


FINTASK = "fintask"
DRAMATIQ = "Dramatiq"
CELERY_DEFAULT = "Celery, default visibility_timeout"
CELERY_CAVEAT = "Celery, visibility_timeout < countdown (documented caveat)"
SETUPS = (
    Setup("fintask", System(FINTASK, "fintask", processes=2, threads=8)),
    Setup("dramatiq", System(DRAMATIQ, "dramatiq", processes=2, threads=8)),
    Setup("celery", System(CELERY_DEFAULT, "celery", processes=2, threads=8, pool="threads")),
    Setup(
        "celery_caveat",
        System(CELERY_CAVEAT, "celery", processes=2, threads=8, pool="threads"),
        caveat=True,
    ),
)


def transport_options(tag: str, visibility_timeout_s: float | None) -> dict[str, Any]:
    """Celery's Redis transport options of one set-up: unacked keys of its own (so one set-up's
    sweep never restores another's messages), and for the caveat the shortened timeout, swept
    every second; everything else Celery's defaults."""
    options: dict[str, Any] = {
        "unacked_key": f"unacked:{tag}",
        "unacked_index_key": f"unacked_index:{tag}",
        "unacked_mutex_key": f"unacked_mutex:{tag}",
    }
    if visibility_timeout_s is not None:
        options.update(
            visibility_timeout=visibility_timeout_s,
            unacked_restore_interval=RESTORE_INTERVAL_S,
            unacked_restore_throttle=1,
        )
    return options


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


def send(bench: Bench, setup: Setup, plan: Plan, keys: list[str], countdown_s: float) -> None:
    """Send one task per key, due ``countdown_s`` from now, as the set-up's producer would."""
    options = transport_options(setup.tag, setup.visibility_timeout_s(plan))
    producer = Producer(setup.system.kind, bench.redis_url, broker_transport_options=options)
    for key in keys:
        producer.send(queue_name(setup.tag), TASK, (key, time.time()), delay_s=countdown_s or None)
    producer.close()


def run(bench: Bench) -> None:
    plan = FULL if bench.full else QUICK
    setups = bench.order(SETUPS)
    keys = [f"m{i}" for i in range(plan.messages)]
    bench.flush()
    with bench.client() as client, ExitStack() as stack:
        for setup in setups:
            visibility = setup.visibility_timeout_s(plan)
            stack.enter_context(
                bench.workers(
                    KEY,
                    setup.system,
                    MODULES[setup.system.kind],
                    [queue_name(setup.tag)],
                    extra_env={
                        TAG_VARIABLE: setup.tag,
                        VISIBILITY_VARIABLE: "" if visibility is None else str(visibility),
                    },
                )
            )
        # Celery's visibility clock starts when a worker fetches: send once all consume.
        for setup in setups:
            send(bench, setup, plan, [WARM_UP], 0)
        for setup in setups:
            key = runs_key(setup.tag)
            if not wait_until_count(partial(client.hexists, key, WARM_UP), 1, timeout_s=60):
                raise RuntimeError(f"{setup.system.name}: the workers did not start within 60 s")
        for setup in setups:
            send(bench, setup, plan, keys, plan.countdown_s)
        for setup in setups:
            key = runs_key(setup.tag)
            wait_until_count(
                partial(hlen_less_warm_up, client, key),
                plan.messages,
                timeout_s=plan.countdown_s + 30,
            )
        time.sleep(plan.grace_s)
        for setup in setups:
            measure(bench, client, setup, plan, keys)
    bench.flush()


def hlen_less_warm_up(client: redis.Redis, key: str) -> int:
    """Runs recorded in ``key``, not counting the warm-up message's."""
    return int(client.hlen(key)) - 1


def measure(bench: Bench, client: redis.Redis, setup: Setup, plan: Plan, keys: list[str]) -> None:
    """Record how many times each message ran, and after how long."""
    tag, system = setup.tag, setup.system
    hits = client.hgetall(runs_key(tag)).items()
    runs = {k.decode(): int(v) for k, v in hits}  # type: ignore[union-attr]
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
    """Per plan measured: how many tasks each set-up ran more than once, or never."""
    lines = []
    for plan in (QUICK, FULL):
        for name in (setup.system.name for setup in SETUPS):
            more = medians.get(plan.case, "tasks run more than once", name)
            never = medians.get(plan.case, "tasks never run", name)
            if more is None or never is None:
                continue
            line = f"{name}, countdown {plan.countdown_s:g} s: "
            if more == 0 and never == 0:
                line += f"each of {plan.messages} tasks ran once"
            else:
                most = medians.get(plan.case, "most runs of one task", name) or 0
                line += (
                    f"{more:.0f} of {plan.messages} tasks ran more than once (up to "
                    f"{most:.0f} times), {never:.0f} never"
                )
            if name == CELERY_CAVEAT:
                line += (
                    f", with visibility_timeout {plan.visibility_timeout_s:g} s below the "
                    "countdown, which Celery's docs warn against"
                )
            lines.append(f"{line}.")
    return lines


SCENARIO = Scenario(
    number=7,
    key=KEY,
    title="Countdowns: Celery at its defaults, and past its visibility timeout",
    run=run,
    about=(
        "Each set-up gets tasks due after a countdown "
        f"({QUICK.messages} tasks, countdown {QUICK.countdown_s:g} s quick; "
        f"{FULL.messages}, {FULL.countdown_s:g} s full). The tasks are sent once a first, "
        "undelayed one has run (so the workers are consuming); the task counts its executions "
        "per task in a Redis hash (HINCRBY) and keeps its delay from send to first start. The "
        "scenario waits until every task ran, then the caveat's visibility timeout and one and "
        "a half of its sweeps, so a late duplicate shows. Celery runs two worker instances "
        "(`-P threads -c 8`, prefetch multiplier 4, `acks_late`) and sends with `countdown=` "
        "(`send_task`, as `apply_async(countdown=...)` sends); the worker holds an eta task "
        "unacknowledged until it runs. **Celery, default visibility_timeout**: the Redis "
        "transport's defaults (`visibility_timeout` 1 h, far above the countdown). **Celery, "
        "visibility_timeout < countdown (documented caveat)**: what Celery's documentation "
        "warns against for countdowns and etas longer than the timeout, with "
        f"`visibility_timeout` {QUICK.visibility_timeout_s:g} s quick, "
        f"{FULL.visibility_timeout_s:g} s full, and kombu's sweep for overdue unacked messages "
        f"run every {RESTORE_INTERVAL_S} s (`unacked_restore_interval` "
        f"{RESTORE_INTERVAL_S}, `unacked_restore_throttle` 1) instead of every ~100 s, both "
        "scaled down from a 1 h timeout against a longer countdown so the run is short: once "
        "a held task is older than the timeout, a sweep puts it back on the queue and a worker "
        "fetches and holds a second copy (and, while that one waits, a third), each run at the "
        "same eta. Each Celery set-up has its own `unacked` keys (`unacked_key`, "
        "`unacked_index_key`, `unacked_mutex_key`), so the caveat's sweep never touches the "
        "default's messages. **fintask** and **Dramatiq** (its `RedisBroker` and default "
        "middleware; each 2 processes x 8 threads) send with "
        "`broker.enqueue(message, delay=countdown_ms)`: Dramatiq's delay queue, whose "
        "messages a live worker holds until due and which come back only when the holder's "
        "heartbeat is stale (60 s), whatever the countdown."
    ),
    ratios=(),
    verdicts=verdicts,
)
