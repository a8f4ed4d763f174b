"""Scenario 2: enqueue throughput, like with like: one message per call for every system, and
batched for every system with a way to batch.

No workers run: the harness process sends no-op messages as an application would, first one
per call (each system's own send), then batched (each system's fastest way to send many; see
:data:`BATCHED` for how each batches). Each row of the table is one of the two ways, so a
system is compared with the others sending the same way.
"""

from __future__ import annotations

import time

from bench.harness import Bench, Medians, Scenario
from bench.systems import Producer

QUEUE = "noop-enqueue"
#: The systems by name, with their kind.
SYSTEMS = {
    "fintask": "fintask",
    "Dramatiq": "dramatiq",
    "Celery": "celery",
    "taskiq": "taskiq",
    "Huey": "huey",
    "RQ": "rq",
    "arq": "arq",
}
#: How each system sends one message per call.
ONE_PER_CALL = {
    "fintask": "`broker.enqueue`, fintask's enqueue-side middleware (guardrails...) included",
    "Dramatiq": "`broker.enqueue` on Dramatiq's `RedisBroker` (dispatch script)",
    "Celery": "`send_task`, as `apply_async` publishes",
    "taskiq": "`kiq()`, awaited one at a time (taskiq-redis `RedisStreamBroker`, XADD)",
    "Huey": "a task call (`RedisHuey`, LPUSH)",
    "RQ": "`Queue.enqueue`",
    "arq": "`ArqRedis.enqueue_job`, awaited, in arq's own venv (a pipe round trip per send)",
}
#: How each system sends a batch: its own bulk API where it has one, else the nearest thing.
BATCHED = {
    "fintask": "`chunking.enqueue_many` on fintask's broker: 1,000 per round trip, one script "
    "call per queue, enqueue hooks run per message",
    "Dramatiq": "`chunking.enqueue_many` on Dramatiq's own `RedisBroker` (Dramatiq has no "
    "batch send; fintask's helper works on its broker unchanged)",
    "Celery": "kombu 5.7's `Producer.batch()` around `send_task` (pipelined publishes)",
    "taskiq": "`kiq()` calls awaited together, 200 at a time (`asyncio.gather`; no bulk API)",
    "Huey": "no bulk API: Huey's own serialised messages pushed 1,000 per LPUSH in one pipeline",
    "RQ": "`Queue.enqueue_many` in a pipeline, 1,000 jobs per pipeline",
    "arq": "`enqueue_job` calls awaited together, 200 at a time (no bulk API)",
}
#: fintask's own target: batching must pay for itself many times over.
BATCH_TARGET = 5.0


def cases(messages: int) -> tuple[str, str]:
    """The two rows' cases: one message per call, and batched."""
    return f"{messages:,} messages, one per call", f"{messages:,} messages, batched"


def run(bench: Bench) -> None:
    messages = 50_000 if bench.full else 2_000
    single, batched = cases(messages)
    for name in bench.order(list(SYSTEMS)):
        producer = Producer(SYSTEMS[name], bench.redis_url)
        try:
            for case in bench.order([single, batched]):
                bench.flush()
                producer.send(QUEUE, "noop", (time.time(),))  # connected, scripts loaded
                now = time.time()
                started = time.perf_counter()
                if case == batched:
                    producer.send_batched(QUEUE, "noop", ((now,) for _ in range(messages)))
                else:
                    for _ in range(messages):
                        producer.send(QUEUE, "noop", (time.time(),))
                rate = messages / (time.perf_counter() - started)
                how = BATCHED[name] if case == batched else ONE_PER_CALL[name]
                bench.record("enqueue", case, "enqueue rate", "msg/s", name, rate, setting=how)
        finally:
            producer.close()
    bench.flush()


def verdicts(medians: Medians) -> list[str]:
    """Per way of sending, the systems fastest first; batched over one per call per system;
    fintask's own target for its bulk enqueue."""
    lines = []
    rows = [case for case, _ in medians.rows()]
    for case in dict.fromkeys(rows):
        ranked = sorted(
            ((name, medians.get(case, "enqueue rate", name)) for name in SYSTEMS),
            key=lambda item: -(item[1] or 0),
        )
        measured = [(name, rate) for name, rate in ranked if rate is not None]
        listing = ", ".join(f"{name} {rate:,.0f}" for name, rate in measured)
        lines.append(f"{case} (msg/s), fastest first: {listing}.")
        names = [name for name, _ in measured]
        ahead = names[: names.index("fintask")] if "fintask" in names else []
        if ahead:
            fintask = dict(measured)["fintask"]
            lines.append(
                f"fintask loses at {case} to {', '.join(ahead)} (the fastest at "
                f"{measured[0][1] / fintask:.2f}x fintask's rate)."
            )
    for single in dict.fromkeys(case for case in rows if case.endswith("one per call")):
        batched = single.replace("one per call", "batched")
        for name in SYSTEMS:
            ones = medians.get(single, "enqueue rate", name)
            batch = medians.get(batched, "enqueue rate", name)
            if not ones or not batch:
                continue
            line = f"{name}: batched {batch:,.0f} msg/s, {batch / ones:.1f}x its {ones:,.0f}"
            line += " one per call"
            if name == "fintask":
                met = "met" if batch / ones >= BATCH_TARGET else "**missed**"
                line += f" (fintask's target >= {BATCH_TARGET:g}x: {met})"
            lines.append(line + ".")
    return lines


def _about() -> str:
    ways = "; ".join(
        f"**{name}**: one per call, {ONE_PER_CALL[name]}; batched, {BATCHED[name]}"
        for name in SYSTEMS
    )
    return (
        "A producer in the harness sends no-op messages as fast as it can, no workers running, "
        "each system on the same private Redis, in two ways that are compared only with "
        "themselves: one message per call, and batched. The rate runs from the first send to "
        "the last (after one send that connects and loads scripts). How each system sends: "
        f"{ways}."
    )


SCENARIO = Scenario(
    number=2,
    key="enqueue",
    title="Enqueue throughput: one message per call, and batched",
    run=run,
    about=_about(),
    ratios=(("fintask", "Dramatiq"), ("fintask", "Celery")),
    verdicts=verdicts,
)
