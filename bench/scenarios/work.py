"""Real work (scenario 9): I/O, CPU and payloads, and what each system costs per message.

Each family runs at its best setting from the throughput sweep
(:func:`bench.scenarios.noop.best_systems`) and at every setting of its grid that runs more
tasks at once (:attr:`bench.systems.System.slots`): a no-op's best is rarely an I/O task's.
Each tried setting's workers start once, answer a readiness probe from every process, and
then run one batch per case, each case's batch sent while they wait:

- no-op with a 1 kB and with a 16 kB payload (what moving the bytes costs);
- the I/O task (:mod:`bench.work`): 5-20 ms waiting on a loopback TCP sink the scenario
  runs, the delay drawn from the message's number, the same for every system;
- the CPU task: about 1 ms of pure-Python arithmetic.

Per case: the rate (first start to last start; for the no-op cases the producer's sending
overlaps it), worker CPU per message (user + system of the worker processes and their
children), Redis CPU per message (``INFO cpu``) and Redis commands per message (``INFO
commandstats`` after ``CONFIG RESETSTAT`` on the bench's own server; the sends count, the
harness's polls and each run's record do not); and the workers' peak PSS since they started.
Every tried setting's rate is recorded in a sweep case of its own (for a family tried at
more than one setting); then, per case, each family's best rate of the repetition under the
family's name, with the setting named and the costs of that same run.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import redis

from bench.harness import Bench, Scenario
from bench.latency_record import starts_key
from bench.scenarios.noop import (
    SWEEP_PREFIX,
    Cost,
    Sender,
    await_ready,
    best_systems,
    note_producer,
    recorded,
    running,
    starts,
)
from bench.systems import CountedReads, RedisCost, System, Workers, wait_until_count
from bench.systems.families import families
from bench.work import SINK_VARIABLE, Sink, payload


@dataclass(frozen=True)
class Case:
    """One batch: ``task`` with a payload of ``size`` bytes."""

    label: str
    task: str
    size: int

    def arguments(self, count: int) -> list[tuple[object, ...]]:
        """The batch's argument tuples, stamped now, numbered for the I/O task's delays."""
        data = payload(self.size)
        now = time.time()
        if self.task == "noop":
            return [(now, data)] * count
        return [(now, data, n) for n in range(count)]


#: 16 kB is 16,000 bytes, in strings of 1,000 (``bench.work.payload``): with its envelope the
#: message stays under fintask's default MAX_MESSAGE_BYTES (16,384), which refuses a 16 KiB one.
CASES = (
    Case("no-op, 1 kB payload", "noop", 1_000),
    Case("no-op, 16 kB payload", "noop", 16_000),
    Case("I/O 5-20 ms, 1 kB payload", "io", 1_000),
    Case("CPU ~1 ms, 1 kB payload", "cpu", 1_000),
)
QUICK_MESSAGES = 100
FULL_MESSAGES = 5_000


def run_case(
    system: System, case: Case, sender: Sender, started: Workers, client: redis.Redis, count: int
) -> tuple[float, Cost]:
    """Send ``count`` messages of ``case`` to the ready workers; the rate and the costs."""
    queue = sender.queue
    client.delete(starts_key(queue))
    reads = CountedReads(recorded(client, queue))
    arguments = case.arguments(count)
    cost = RedisCost(client)
    cpu_before = started.cpu_seconds()
    cost.start()
    sender.producer.send_batched(queue, case.task, arguments)
    done = wait_until_count(reads, count, timeout_s=300)
    commands, redis_cpu_s = cost.stop()
    cpu_after = started.cpu_seconds()
    if done < count:
        raise RuntimeError(f"{system.name}: only {done} of {count} {case.label} messages ran")
    runs = reads()  # each run's record is one RPUSH of the harness's own
    times = sorted(start for start, _ in starts(client, queue))
    rate = (len(times) - 1) / max(times[-1] - times[0], 1e-9)
    return rate, Cost(
        worker_cpu_ms=(cpu_after - cpu_before) * 1000 / count,
        redis_cpu_us=redis_cpu_s * 1e6 / count,
        redis_commands=(commands - (reads.calls - 1) - runs) / count,
        peak_pss_mb=started.peak_pss_mb,
    )


def tried_settings(best: System, grid: Sequence[System]) -> list[System]:
    """A family's settings for real work, each under its own name: its best no-op setting,
    then every setting of its ``grid`` that runs more tasks at once (what its experts raise
    for I/O)."""
    own = next((system for system in grid if system.setting() == best.setting()), best)
    return [own, *(system for system in grid if system.slots > best.slots)]


def best_run(tried: Sequence[System], rates: Mapping[str, float]) -> System:
    """The tried setting of the highest rate (``rates`` by system name); the earlier on a tie."""
    return max(tried, key=lambda system: rates[system.name])


def sweep_case(case: Case, system: System) -> str:
    """The case one tried setting's rate is recorded under, so each setting's samples stay
    apart (and fintask and Dramatiq, sharing a setting, share its row)."""
    return f"{SWEEP_PREFIX}{case.label} at {system.setting()}"


def run_setting(
    bench: Bench, system: System, sink_address: str, client: redis.Redis, count: int
) -> dict[str, tuple[float, Cost]]:
    """Start ``system``'s workers once, wait until they are ready, run every case on them;
    the rate and costs by case label."""
    bench.flush()
    sender = Sender(system, bench.redis_url)
    note_producer(bench, "work", system, sender)
    outcomes = {}
    with running(bench, system, "work", extra_env={SINK_VARIABLE: sink_address}) as started:
        await_ready(system, sender, client)
        for case in CASES:
            outcomes[case.label] = run_case(system, case, sender, started, client, count)
    sender.close()
    return outcomes


def run(bench: Bench) -> None:
    count = FULL_MESSAGES if bench.full else QUICK_MESSAGES
    best = best_systems(bench.history, bench)
    tried = {
        family.name: tried_settings(system, family.grid(bench.full))
        for family, (system, _) in zip(families(), best, strict=True)
    }
    outcomes: dict[str, dict[str, tuple[float, Cost]]] = {}
    runs = [(family, system) for family, systems in tried.items() for system in systems]
    with Sink() as sink, bench.client() as client:
        for _, system in bench.order(runs):
            outcomes[system.name] = run_setting(bench, system, sink.address, client, count)
    # The best rows first, so the table's columns follow the families' order.
    record_best(bench, tried, outcomes)
    for family, systems in tried.items():
        if len(systems) == 1:
            continue  # its best rows say it all
        for system in systems:
            for case in CASES:
                rate, _ = outcomes[system.name][case.label]
                bench.record(
                    "work", sweep_case(case, system), "throughput", "msg/s", family, rate,
                    setting=system.setting(),
                )  # fmt: skip


def record_best(
    bench: Bench,
    tried: Mapping[str, Sequence[System]],
    outcomes: Mapping[str, Mapping[str, tuple[float, Cost]]],
) -> None:
    """Per case, each family's best tried setting of this repetition: its rate and the costs
    of that same run, under the family's name with the setting named (``tried``: settings by
    family; ``outcomes``: rate and costs by system name, then case label)."""
    for case in CASES:
        for family, systems in tried.items():
            rates = {system.name: outcomes[system.name][case.label][0] for system in systems}
            winner = best_run(systems, rates)
            rate, cost = outcomes[winner.name][case.label]
            bench.record(
                "work", case.label, "throughput", "msg/s", family, rate,
                setting=winner.setting(),
            )  # fmt: skip
            cost.record(bench, "work", case.label, family, winner.setting())


SCENARIO = Scenario(
    number=9,
    key="work",
    title="Real work: I/O, CPU and payloads, and the cost per message",
    run=run,
    about=(
        "Each system at its best no-op setting (scenario 1) and at every setting of its "
        "sweep that runs more tasks at once (processes x threads, async tasks or max_jobs; "
        "one per process for Celery's prefork and solo pools, Huey's and RQ's workers): "
        "what its experts would raise for I/O. Each such setting's workers are started once "
        "and ready, then run one batch per case: no-ops carrying 1 kB and 16 kB (16,000 "
        "bytes as strings of 1,000 characters, for every system: fintask's guardrails refuse "
        "longer strings and messages over 16 KiB), a task waiting 5-20 ms on a loopback TCP "
        "sink (the delay drawn from the message's number, the same for every system), a task "
        "of about 1 ms of pure-Python CPU. Rate from the first start to the last (the batch "
        "is sent while the workers wait, so a fast system's no-op rate includes the sending). "
        "The `sweep:` rows give every tried setting's rate (for a system tried at more than "
        "one); the other rows give, per case, "
        "each system at its best tried setting of the repetition (named in the `setting` "
        "row) and the costs of that same run: worker CPU per message (user + system of the "
        "worker processes and their children); Redis CPU and commands per message (INFO "
        "after CONFIG RESETSTAT on the bench's own server: the sends counted, the harness's "
        "polls and records not); peak worker PSS. taskiq and arq run the bodies as "
        "coroutines, as their users write tasks; the others on threads or processes."
    ),
    ratios=tuple(
        ("fintask", peer) for peer in ("Dramatiq", "Celery", "taskiq", "Huey", "arq", "RQ")
    ),
)
