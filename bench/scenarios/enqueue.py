"""Scenario 2: enqueue throughput, one message per call and fintask's bulk enqueue.

No workers run: the harness process sends as an application would (``broker.enqueue`` through
each Dramatiq broker's enqueue-side middleware, Celery's ``send_task``), then
:func:`chunking.enqueue_many`, which pipelines the broker's own dispatch script, a batch of
1,000 per round trip.
"""

from __future__ import annotations

import time

from dramatiq import Message

from bench.harness import Bench, Medians, Scenario
from bench.scenarios.noop import DRAMATIQ, FINTASK, LATENCY_SYSTEMS, Sender, queue_of
from bench.systems import producer_broker
from chunking import enqueue_many

BULK = "fintask bulk"


def run(bench: Bench) -> None:
    messages = 50_000 if bench.full else 10_000
    case = f"{messages:,} messages"
    for name in bench.order([*(system.name for system in LATENCY_SYSTEMS), BULK]):
        bench.flush()
        started = time.perf_counter()
        if name == BULK:
            broker = producer_broker(FINTASK.kind, bench.redis_url)
            queue = queue_of(FINTASK)
            batch = (Message(queue, "noop", (time.time(),), {}, {}) for _ in range(messages))
            enqueue_many(broker, batch)
            broker.close()
        else:
            system = next(s for s in LATENCY_SYSTEMS if s.name == name)
            sender = Sender(system, bench.redis_url)
            for _ in range(messages):
                sender.send(time.time())
            sender.close()
        elapsed = time.perf_counter() - started
        bench.record("enqueue", case, "enqueue rate", "msg/s", name, messages / elapsed)


def verdicts(medians: Medians) -> list[str]:
    lines = []
    for case, _ in medians.rows():
        bulk = medians.get(case, "enqueue rate", BULK)
        single = medians.get(case, "enqueue rate", FINTASK.name)
        bare = medians.get(case, "enqueue rate", DRAMATIQ.name)
        if bulk and single:
            ratio = bulk / single
            met = "met" if ratio >= 5 else "**missed**"
            lines.append(
                f"bulk enqueue is {ratio:.1f}x fintask's one-message-per-call ({case}; "
                f"target >= 5x): {met}"
            )
        if bulk and bare:
            lines.append(f"bulk enqueue is {bulk / bare:.1f}x bare Dramatiq's `enqueue` per call")
    return lines


SCENARIO = Scenario(
    number=2,
    key="enqueue",
    title="Enqueue throughput",
    run=run,
    about=(
        "A producer in the harness sends no-op messages as fast as it can, no workers running: "
        "one message per call through each system's client (fintask's broker runs its "
        "enqueue-side middleware, guardrails included; Celery's `send_task`), and fintask's "
        "`chunking.enqueue_many`, 1,000 messages per pipelined round trip."
    ),
    ratios=((BULK, "fintask"), ("fintask", "Celery"), ("fintask", "Dramatiq")),
    verdicts=verdicts,
)
