"""Scenario 6, priority isolation: urgent latency while a large low-priority backlog drains.

Priorities are separate queues with dedicated workers, as in the Procfile: an urgent worker set
on ``urgent`` and a bulk worker set on ``low``, both running. Per system, urgent messages are
sent at a paced rate, first with nothing else queued (idle), then right after a backlog of
low-priority messages was enqueued, while the bulk workers drain it. Each urgent message carries
its send time and the task records its start (``bench.latency_record``); latency is the
difference, pooled per (case, system) over the repetitions (:meth:`Bench.record_latencies`).
The bulk task counts itself done, so the table also shows the bulk workers were busy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial

import redis

from bench.harness import Bench, Medians, Scenario
from bench.latency_record import STARTS_KEY
from bench.systems import Producer, System, queue_depth, wait_until_count

KEY = "priority"
URGENT_QUEUE = "urgent"
LOW_QUEUE = "low"
#: Task names, the same for Dramatiq actors and Celery tasks.
URGENT_TASK = "priority_urgent"
LOW_TASK = "priority_low"
#: Counter the low-priority task increments when done.
LOW_DONE_KEY = "bench:priority:low_done"
#: What a low-priority task does besides counting itself: sleep, like a short call to a sender.
LOW_WORK_S = 0.005
#: The largest acceptable p99 with the backlog, as a multiple of the idle p99.
TARGET_RATIO = 3.0

DRAMATIQ_APP = "bench.apps.priority_dramatiq"
CELERY_APP = "bench.apps.priority_celery"
DRAINED = "low-priority drained"


@dataclass(frozen=True)
class Plan:
    """The urgent rate and window, and the size of the low-priority backlog."""

    rate: float
    seconds: float
    backlog: int

    @property
    def loaded_case(self) -> str:
        return f"{self.backlog:,} low queued"


QUICK = Plan(rate=50, seconds=1.0, backlog=8_000)
FULL = Plan(rate=50, seconds=20, backlog=100_000)


@dataclass(frozen=True)
class Layout:
    """One system's workers: ``urgent`` on the urgent queue and ``bulk`` on the low one, or,
    with no ``bulk``, ``urgent`` alone consuming both queues."""

    name: str
    urgent: System
    bulk: System | None = None

    @property
    def kind(self) -> str:
        return self.urgent.kind

    @property
    def module(self) -> str:
        return CELERY_APP if self.kind == "celery" else DRAMATIQ_APP

    def setting(self) -> str:
        """Each worker set's knobs, as the tables name them."""
        if self.bulk is None:
            return f"both queues: {self.urgent.setting()}"
        return f"urgent: {self.urgent.setting()}; bulk: {self.bulk.setting()}"

    def worker_sets(self) -> list[tuple[System, tuple[str, ...]]]:
        """Each worker set with the queues it consumes."""
        if self.bulk is None:
            return [(self.urgent, (URGENT_QUEUE, LOW_QUEUE))]
        return [(self.urgent, (URGENT_QUEUE,)), (self.bulk, (LOW_QUEUE,))]


def _dramatiq_layout(name: str, kind: str) -> Layout:
    """The Procfile's shape: worker_urgent 1 x 4 with prefetch 4, worker 2 x 8 with prefetch 16."""
    return Layout(
        name,
        urgent=System(f"{name} urgent", kind, processes=1, threads=4, prefetch=4),
        bulk=System(f"{name} bulk", kind, processes=2, threads=8, prefetch=16),
    )


# Celery on the same shape: thread pools (the low task sleeps, as I/O does, and 16 prefork
# children on 2 cores would only contend), the same slots and the same prefetch per process
# (urgent: one worker, 4 threads, multiplier 1 = 4 prefetched; bulk: two workers of 8 threads,
# multiplier 2 = 16 each).
LAYOUTS = (
    _dramatiq_layout("fintask", "fintask"),
    _dramatiq_layout("Dramatiq", "dramatiq"),
    Layout(
        "Celery",
        urgent=System(
            "Celery urgent", "celery", processes=1, threads=4, pool="threads", prefetch_multiplier=1
        ),
        bulk=System(
            "Celery bulk", "celery", processes=2, threads=8, pool="threads", prefetch_multiplier=2
        ),
    ),
    Layout(
        "Celery, one worker for both queues",
        urgent=System("Celery both queues", "celery", processes=1, threads=20, pool="threads"),
    ),
)


def send_urgent(sender: Producer, sent_at: float) -> None:
    sender.send(URGENT_QUEUE, URGENT_TASK, (sent_at,))


def _low_done(client: redis.Redis) -> int:
    return int(client.get(LOW_DONE_KEY) or 0)


def _starts(client: redis.Redis) -> int:
    return int(client.llen(STARTS_KEY))


def _await_ready(client: redis.Redis, sender: Producer, layout: Layout) -> None:
    """Wait until the workers ran one urgent and one low message, then forget both."""
    send_urgent(sender, time.time())
    sender.send(LOW_QUEUE, LOW_TASK)
    ready = wait_until_count(lambda: min(_starts(client), _low_done(client)), 1, timeout_s=60)
    if not ready:
        raise RuntimeError(f"{layout.name}: workers not ready after 60 s, see their logs")
    client.delete(STARTS_KEY, LOW_DONE_KEY)


def _send_paced(send: Callable[[float], None], plan: Plan) -> int:
    """Send ``plan.rate`` urgent messages a second for ``plan.seconds``; return how many."""
    count = max(1, int(plan.rate * plan.seconds))
    start = time.perf_counter()
    for i in range(count):
        pause = start + i / plan.rate - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        send(time.time())
    return count


def _latencies_ms(client: redis.Redis, count: int, layout: Layout) -> list[float]:
    """The send-to-start latencies of the ``count`` urgent messages sent, then forget them."""
    if wait_until_count(lambda: _starts(client), count, timeout_s=60) < count:
        raise RuntimeError(f"{layout.name}: not every urgent message started within 60 s")
    raw: list[bytes] = client.lrange(STARTS_KEY, 0, -1)  # type: ignore[assignment]
    client.delete(STARTS_KEY)
    return [(float(r.split()[0]) - float(r.split()[1])) * 1000 for r in raw]


def _measure(bench: Bench, layout: Layout, plan: Plan) -> None:
    with ExitStack() as stack:
        for system, queues in layout.worker_sets():
            stack.enter_context(bench.workers(KEY, system, layout.module, queues))
        client = stack.enter_context(bench.client())
        sender = Producer(layout.kind, bench.redis_url)
        stack.callback(sender.close)
        _await_ready(client, sender, layout)

        sent = _send_paced(partial(send_urgent, sender), plan)
        setting = layout.setting()
        latencies = _latencies_ms(client, sent, layout)
        bench.record_latencies(KEY, "idle", layout.name, latencies, setting=setting)

        sender.send_batched(LOW_QUEUE, LOW_TASK, (() for _ in range(plan.backlog)))
        wait_until_count(lambda: _low_done(client), 1, timeout_s=60)
        done_before, started = _low_done(client), time.monotonic()
        sent = _send_paced(partial(send_urgent, sender), plan)
        drained = _low_done(client) - done_before
        elapsed = time.monotonic() - started
        left = queue_depth(client, layout.kind, LOW_QUEUE)
        case = plan.loaded_case
        latencies = _latencies_ms(client, sent, layout)
        bench.record_latencies(KEY, case, layout.name, latencies, setting=setting)
        for metric, unit, value in (
            (DRAINED, "msg/s", drained / elapsed),
            ("low still queued at the end", "messages", left),
        ):
            bench.record(KEY, case, metric, unit, layout.name, value, setting=setting)


def run(bench: Bench) -> None:
    """One repetition: every system idle, then with the backlog."""
    plan = FULL if bench.full else QUICK
    # The one-worker Celery layout only in full runs: it keeps the quick run within minutes.
    layouts = LAYOUTS if bench.full else LAYOUTS[:3]
    for layout in bench.order(layouts):
        bench.flush()
        _measure(bench, layout, plan)


def verdicts(medians: Medians) -> list[str]:
    """Per system: the pooled p99 with the backlog over the pooled p99 idle; fintask's target."""
    lines = []
    loaded_cases = [case for case, metric in medians.rows() if metric == DRAINED]
    for case in loaded_cases:
        for system in medians.systems():
            idle = medians.get("idle", "p99", system)
            loaded = medians.get(case, "p99", system)
            if idle is None or loaded is None:
                continue
            ratio = loaded / idle
            line = (
                f"{system}: urgent p99 with {case} / p99 idle = {ratio:.1f} x "
                f"({loaded:.1f} ms against {idle:.1f} ms)"
            )
            if system == "fintask":
                met = "met" if ratio <= TARGET_RATIO else "missed"
                line += f"; target a small multiple (<= {TARGET_RATIO:g} x): {met}"
            lines.append(line)
    return lines


ABOUT = f"""\
Urgent notifications must not wait behind bulk work. Each system runs its workers as the
Procfile does for fintask: an urgent worker set consuming only `{URGENT_QUEUE}` and a bulk worker
set consuming `{LOW_QUEUE}`, both at once. fintask and bare Dramatiq: urgent 1 process x 4
threads, prefetch 4; bulk 2 processes x 8 threads, prefetch 16 (bare Dramatiq differs only by
its polling consumer and default middleware). Celery: the same layout and the same shape, on
thread pools (the low task sleeps, as I/O does; prefork children beyond the 2 cores would only
contend): `-Q {URGENT_QUEUE}` one worker `-P threads -c 4 --prefetch-multiplier 1` (4
prefetched, as fintask's urgent worker), `-Q {LOW_QUEUE}` two workers `-P threads -c 8
--prefetch-multiplier 2` (16 prefetched each, as fintask's bulk processes), `acks_late`.
"Celery, one worker for both queues" (full runs only) is the layout before priorities get
workers of their own: one `-Q {URGENT_QUEUE},{LOW_QUEUE}` worker, `-P threads -c 20`, prefetch
multiplier 4, whose prefetched low messages an urgent one can wait behind. Urgent messages
are sent at {QUICK.rate:g} msg/s for {QUICK.seconds:g} s (full: {FULL.seconds:g} s), first with
nothing else queued ("idle"), then right after {QUICK.backlog:,} (full: {FULL.backlog:,})
low-priority messages were enqueued in pipelined batches (fintask's
`chunking.bulk.enqueue_many`, on Dramatiq's own broker for bare Dramatiq; kombu's
`Producer.batch` for Celery), once the bulk workers have started on them. Each low task sleeps
{LOW_WORK_S * 1000:g} ms. Latency is send to start of the urgent task, pooled over the
repetitions per case and system; the verdict divides the pooled p99s. "low-priority drained"
is the bulk workers' rate during the urgent window; "low still queued at the end" shows the
backlog lasted through it.
"""

SCENARIO = Scenario(
    number=6,
    key=KEY,
    title="Priority isolation",
    run=run,
    about=ABOUT,
    ratios=(("fintask", "Celery"), ("fintask", "Dramatiq")),
    verdicts=verdicts,
)
