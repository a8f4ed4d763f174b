"""``python -m bench.capacity``: what one message costs Redis, the inputs of docs/scaling.md.

A throughput run says how fast a queue drains; a capacity model needs the price of one message
instead: the Redis commands it takes (by name), its round trips, the Redis CPU and the memory it
holds while it waits. This probe measures them against a private ``redis-server`` on a free
port, for fintask (``app.broker``'s ``WakeupRedisBroker`` with its full middleware stack, sent
through the enqueue-side stack as an application sends) and for bare Dramatiq's
``RedisBroker``, in the phases a message lives through:

- *send*: messages sent one per call with no worker running (a no-op, a typical fintask message
  of two scalar ids, a 1 kB payload, a no-op delayed by an hour), and a bulk send
  (``chunking.enqueue_many``); ``used_memory`` before and after gives the bytes each waiting
  message holds;
- *drain*: the Procfile's ``worker`` shape (2 processes x 8 threads, prefetch 16, real
  ``dramatiq`` processes) spawned on the waiting no-ops, until every one ran: the worker's
  side at its best batching, its start-up included;
- *steady*: the same workers, already running, fed no-ops at a fixed rate one per call: a
  message's whole cost (send and processing) when fetches are not batched, idle polling between
  messages included;
- *idle*: the workers with nothing to do, per second;
- *headroom*: ``redis-benchmark`` on the same server for the commands fintask uses, and
  Dramatiq's ``dispatch.lua`` enqueue as an ``EVALSHA``: what one Redis core serves.

Every figure is an ``INFO`` delta (``commandstats`` by name, ``total_reads_processed`` as round
trips: Redis reads one request or one pipeline per read event, ``used_cpu_sys`` +
``used_cpu_user``, ``used_memory``, network bytes), taken in one ``INFO`` call per snapshot. The
harness's own commands (its ``INFO`` and ``CONFIG`` calls, its polls of the record list, each
run's record) are left out by name and count. ``--publish`` writes
``bench/results/capacity-<date>/`` (the report, ``capacity.json`` and the files every published
run keeps, :mod:`bench.publish`); without it, ``bench/results/local-capacity-<date>/``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dramatiq.brokers.redis
import redis
from dramatiq import Message

from app.local.redis_server import RedisServer
from bench.harness import Bench
from bench.publish import add_publish_options, load_average, redis_info_text, start_probe
from bench.report import machine
from bench.scenarios.noop import Sender, queue_of, recorded, running
from bench.systems import CountedReads, System, wait_until_count
from bench.work import payload

SCENARIO = "capacity"
#: The Procfile's ``worker``: ``--processes 2 --threads 8``, ``dramatiq_queue_prefetch=16``.
SYSTEMS = (
    System("fintask", "fintask", processes=2, threads=8, prefetch=16),
    System("Dramatiq", "dramatiq", processes=2, threads=8, prefetch=16),
)
#: A typical fintask message: an actor of the weekly digest and two scalar ids, as the outbox
#: sends it (keyword arguments; the guardrails allow nothing bigger in ordinary traffic).
TYPICAL_ACTOR = "send_digest"
TYPICAL_KWARGS: dict[str, Any] = {"user_id": 4_812_337, "day": "2026-12-01"}
DELAY_S = 3600.0
#: Commands of the harness's snapshots, never a system's.
HARNESS_COMMANDS = ("info", "config")
#: The daily volumes of the model, and the busiest hour's rate as a multiple of the average.
DAILY_VOLUMES = (10**7, 10**8)
PEAK_FACTOR = 10
#: ``redis-benchmark``'s tests for the commands fintask's path uses (``-t`` names).
BENCHMARK_TESTS = ("ping_mbulk", "rpush", "lpop", "hset", "sadd", "zadd")


@dataclass(frozen=True)
class Counters:
    """One ``INFO`` snapshot of the counters a message moves."""

    calls: dict[str, int]
    reads: int
    cpu_s: float
    used_memory: int
    net_in: int
    net_out: int


def parse_counters(info: Mapping[str, Any]) -> Counters:
    """The counters of a parsed ``INFO commandstats cpu stats memory`` answer."""
    calls = {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in info.items()
        if name.startswith("cmdstat_")
    }
    return Counters(
        calls=calls,
        reads=int(info["total_reads_processed"]),
        cpu_s=float(info["used_cpu_sys"]) + float(info["used_cpu_user"]),
        used_memory=int(info["used_memory"]),
        net_in=int(info["total_net_input_bytes"]),
        net_out=int(info["total_net_output_bytes"]),
    )


def snapshot(client: redis.Redis) -> Counters:
    """The counters now, in one round trip (Redis 7 answers several sections at once)."""
    info: Mapping[str, Any] = client.execute_command(
        "INFO", "commandstats", "cpu", "stats", "memory"
    )
    return parse_counters(info)


@dataclass(frozen=True)
class PerMessage:
    """What one message of a phase cost Redis, on average over ``messages``."""

    messages: int
    commands: float
    by_command: dict[str, float]
    round_trips: float
    cpu_us: float
    net_in_bytes: float
    net_out_bytes: float
    #: ``used_memory`` held per message still waiting at the end (send phases only).
    memory_bytes: float | None = None


def per_message(
    before: Counters,
    after: Counters,
    messages: int,
    *,
    harness: Mapping[str, int] | None = None,
    memory: bool = False,
) -> PerMessage:
    """The deltas from ``before`` to ``after`` divided by ``messages``.

    ``harness`` names the harness's own commands between the snapshots (``llen``: its polls,
    ``rpush``: each run's record), left out of the commands and, one read each, of the round
    trips, as is the ``after`` snapshot's own read. ``INFO`` and ``CONFIG`` are left out by name.
    """
    if messages <= 0:
        raise ValueError(f"a phase of {messages} messages has no cost per message")
    own = dict(harness or {})
    by_command: dict[str, float] = {}
    for name, calls in after.calls.items():
        if name.split("|")[0] in HARNESS_COMMANDS:
            continue
        count = calls - before.calls.get(name, 0) - own.get(name, 0)
        if count > 0:
            by_command[name] = count / messages
    reads = after.reads - before.reads - sum(own.values()) - 1
    return PerMessage(
        messages=messages,
        commands=sum(by_command.values()),
        by_command=dict(sorted(by_command.items(), key=lambda item: -item[1])),
        round_trips=max(reads, 0) / messages,
        cpu_us=(after.cpu_s - before.cpu_s) * 1e6 / messages,
        net_in_bytes=(after.net_in - before.net_in) / messages,
        net_out_bytes=(after.net_out - before.net_out) / messages,
        memory_bytes=(after.used_memory - before.used_memory) / messages if memory else None,
    )


def combined(first: PerMessage, second: PerMessage) -> PerMessage:
    """Two phases one message goes through (its send, then its drain), per message."""
    names = dict.fromkeys([*first.by_command, *second.by_command])
    by_command = {n: first.by_command.get(n, 0.0) + second.by_command.get(n, 0.0) for n in names}
    return PerMessage(
        messages=min(first.messages, second.messages),
        commands=first.commands + second.commands,
        by_command=dict(sorted(by_command.items(), key=lambda item: -item[1])),
        round_trips=first.round_trips + second.round_trips,
        cpu_us=first.cpu_us + second.cpu_us,
        net_in_bytes=first.net_in_bytes + second.net_in_bytes,
        net_out_bytes=first.net_out_bytes + second.net_out_bytes,
        memory_bytes=first.memory_bytes,
    )


@dataclass(frozen=True)
class Projection:
    """One daily volume at its average rate or its busiest hour, priced per message."""

    daily: int
    peak: bool
    rate: float
    commands_per_s: float
    round_trips_per_s: float
    redis_cores: float
    #: Memory for one busiest hour's messages left waiting (an outage of every worker).
    hour_backlog_gib: float


def project(daily: int, cost: PerMessage, *, peak: bool, peak_factor: float) -> Projection:
    """``daily`` messages a day at ``cost`` each, at the average rate or ``peak_factor`` times it.

    Redis runs commands on one thread, so ``redis_cores`` above 1 is more than one primary can
    do; the backlog is what waits in Redis if no worker takes anything for an hour at that rate.
    """
    rate = daily / 86_400 * (peak_factor if peak else 1)
    memory = cost.memory_bytes or 0.0
    return Projection(
        daily=daily,
        peak=peak,
        rate=rate,
        commands_per_s=rate * cost.commands,
        round_trips_per_s=rate * cost.round_trips,
        redis_cores=rate * cost.cpu_us / 1e6,
        hour_backlog_gib=rate * 3600 * memory / 2**30,
    )


@dataclass(frozen=True)
class Headroom:
    """One ``redis-benchmark`` test: its wall-clock rate, and what one second of Redis CPU
    served: requests (read events, one per request without pipelining) and commands (a
    script's inner ones counted)."""

    test: str
    clients: int
    rps: float
    requests_per_cpu_s: float
    commands_per_cpu_s: float


def parse_benchmark_csv(text: str) -> list[tuple[str, float]]:
    """(test, requests per second) of each line of ``redis-benchmark --csv``."""
    return [
        (row[0], float(row[1]))
        for row in csv.reader(text.splitlines())
        if len(row) >= 2 and row[0] != "test"
    ]


class Probe:
    """The phases of one system on the probe's Redis; each records its :class:`PerMessage`."""

    def __init__(self, bench: Bench, system: System, messages: int) -> None:
        self.bench = bench
        self.system = system
        self.messages = messages
        self.client = bench.client()
        self.results: dict[str, PerMessage] = {}

    def _send_phase(
        self, case: str, send: Callable[[Sender], None], *, memory: bool = True
    ) -> None:
        """Flush, send one message (keys and scripts exist from then on), then ``messages``
        more with ``send(sender)``; its cost and the memory they hold."""
        self.bench.flush()
        sender = Sender(self.system, self.bench.redis_url)
        send(sender)
        before = snapshot(self.client)
        for _ in range(self.messages):
            send(sender)
        after = snapshot(self.client)
        sender.close()
        self.results[case] = per_message(before, after, self.messages, memory=memory)

    def sends(self) -> None:
        """The send phases other than the no-op the workers then drain."""

        def typical(sender: Sender) -> None:
            assert sender.producer.broker is not None
            message: Message[Any] = Message(sender.queue, TYPICAL_ACTOR, (), TYPICAL_KWARGS, {})
            sender.producer.broker.enqueue(message)

        def kilobyte(sender: Sender) -> None:
            sender.producer.send(sender.queue, "noop", (time.time(), payload(1000)))

        def delayed(sender: Sender) -> None:
            sender.producer.send(sender.queue, "noop", (time.time(),), delay_s=DELAY_S)

        self._send_phase("send: typical fintask message (2 ids)", typical)
        self._send_phase("send: 1 kB payload", kilobyte)
        self._send_phase(f"send: no-op delayed {DELAY_S / 3600:.0f} h", delayed)
        self.bench.flush()
        sender = Sender(self.system, self.bench.redis_url)
        before = snapshot(self.client)
        now = time.time()
        sender.producer.send_batched(sender.queue, "noop", ((now,) for _ in range(self.messages)))
        after = snapshot(self.client)
        sender.close()
        self.results["send: no-op, bulk (chunking.enqueue_many)"] = per_message(
            before, after, self.messages
        )

    def workers_phases(self, steady_messages: int, steady_rate: float, idle_s: float) -> None:
        """No-ops sent and left waiting, drained by spawned workers, then sent at a steady
        rate to the same workers, then the workers idle."""
        self._send_phase("send: no-op, one per call", lambda sender: sender.send(time.time()))
        waiting = self.messages + 1  # the first send of the phase waits too
        count = CountedReads(recorded(self.client, queue_of(self.system)))
        before = snapshot(self.client)
        with running(self.bench, self.system, SCENARIO):
            if wait_until_count(count, waiting, timeout_s=180) < waiting:
                raise RuntimeError(f"{self.system.name}: the backlog did not drain in 180 s")
            after = snapshot(self.client)
            self.results["drain: backlog, 2 x 8 threads, prefetch 16"] = per_message(
                before, after, waiting, harness={"llen": count.calls, "rpush": waiting}
            )
            self._steady(count, waiting, steady_messages, steady_rate)
            time.sleep(2.0)  # pollers reach their longest backoff
            before = snapshot(self.client)
            time.sleep(idle_s)
            after = snapshot(self.client)
            idle = per_message(before, after, 1)
            self.idle = dataclasses.replace(
                idle,
                commands=idle.commands / idle_s,
                round_trips=idle.round_trips / idle_s,
                cpu_us=idle.cpu_us / idle_s,
                by_command={k: v / idle_s for k, v in idle.by_command.items()},
            )
        self.bench.flush()
        self.results["end to end: send + drain"] = combined(
            self.results["send: no-op, one per call"],
            self.results["drain: backlog, 2 x 8 threads, prefetch 16"],
        )

    def _steady(self, count: CountedReads, already: int, messages: int, rate: float) -> None:
        """``messages`` no-ops at ``rate`` a second, one per call, to running workers."""
        sender = Sender(self.system, self.bench.redis_url)
        calls = count.calls
        before = snapshot(self.client)
        began = time.monotonic()
        for n in range(messages):
            time.sleep(max(0.0, began + n / rate - time.monotonic()))
            sender.send(time.time())
        target = already + messages
        if wait_until_count(count, target, timeout_s=60) < target:
            raise RuntimeError(f"{self.system.name}: the steady messages did not all run")
        after = snapshot(self.client)
        sender.close()
        polls = count.calls - calls
        self.results[f"steady: {rate:.0f} msg/s, one per call, send + process"] = per_message(
            before, after, messages, harness={"llen": polls, "rpush": messages}
        )

    def close(self) -> None:
        self.client.close()


def headroom(bench: Bench, port: int, requests: int) -> list[Headroom]:
    """``redis-benchmark`` on the probe's own server: each command fintask's path uses, and
    Dramatiq's ``dispatch.lua`` enqueue as an ``EVALSHA`` (16 clients, no pipelining: one
    round trip per command, as the brokers send them). Redis's CPU over each test gives the
    commands one Redis core serves, whatever the benchmark client itself cost the machine."""
    executable = shutil.which("redis-benchmark")
    if executable is None:
        return []
    client = bench.client()
    script = Path(dramatiq.brokers.redis.__file__).with_suffix("") / "dispatch.lua"
    sha = client.script_load(script.read_text())
    base = [executable, "-h", "127.0.0.1", "-p", str(port), "-c", "16", "-q", "--csv"]
    enqueue = [
        "-r", "1000000", "-n", str(requests // 2),
        "evalsha", sha, "1", "dramatiq", "enqueue", "1700000000000", "probe", "w", "60000",
        "604800000", "0", "7000", "id:__rand_int__", '{"actor_name":"send_digest"}',
    ]  # fmt: skip
    runs = [
        *(([*base, "-n", str(requests), "-t", test], test) for test in BENCHMARK_TESTS),
        ([*base, *enqueue], "evalsha dispatch.lua enqueue"),
    ]
    found = []
    for argv, name in runs:
        bench.flush()
        bench.note_command(SCENARIO, "redis-benchmark", argv)
        before = snapshot(client)
        done = subprocess.run(argv, capture_output=True, text=True, check=True)
        after = snapshot(client)
        calls = sum(
            after.calls.get(n, 0) - before.calls.get(n, 0)
            for n in after.calls
            if n.split("|")[0] not in HARNESS_COMMANDS
        )
        rows = parse_benchmark_csv(done.stdout)
        rps = rows[0][1] if rows else 0.0
        cpu = max(after.cpu_s - before.cpu_s, 1e-9)
        requests = after.reads - before.reads - 1
        found.append(Headroom(name, 16, rps, requests / cpu, calls / cpu))
    bench.flush()
    client.close()
    return found


def _n(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.3g}"


def render(
    results: Mapping[str, Mapping[str, PerMessage]],
    idle: Mapping[str, PerMessage],
    head: Sequence[Headroom],
    projections: Sequence[Projection],
    header: Sequence[str],
) -> str:
    """The report: per message by phase and system, by command name, idle load, headroom,
    and the projection of the model."""
    systems = list(results)
    cases = list(dict.fromkeys(case for by_case in results.values() for case in by_case))
    lines = [*header, "", "## Per message", ""]
    lines += [
        "| phase | system | Redis commands | round trips | Redis CPU (µs) | memory held (bytes) "
        "| bytes in / out |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for case in cases:
        for system in systems:
            cost = results[system].get(case)
            if cost is None:
                continue
            memory = "" if cost.memory_bytes is None else _n(cost.memory_bytes)
            lines.append(
                f"| {case} | {system} | {_n(cost.commands)} | {_n(cost.round_trips)} | "
                f"{_n(cost.cpu_us)} | {memory} | {_n(cost.net_in_bytes)} / "
                f"{_n(cost.net_out_bytes)} |"
            )
    lines += ["", "## Commands per message, by name", ""]
    for case in cases:
        for system in systems:
            cost = results[system].get(case)
            if cost is not None:
                named = ", ".join(f"{n} {_n(v)}" for n, v in cost.by_command.items() if v >= 0.01)
                lines.append(f"- {case}, {system}: {named}")
    lines += ["", "## Workers idle, per second", ""]
    for system, cost in idle.items():
        named = ", ".join(f"{n} {_n(v)}" for n, v in cost.by_command.items())
        lines.append(
            f"- {system}: {_n(cost.commands)} commands/s, {_n(cost.round_trips)} round trips/s, "
            f"{_n(cost.cpu_us / 1000)} ms of Redis CPU per s ({named})"
        )
    if head:
        lines += [
            "",
            "## Headroom: redis-benchmark on the same server",
            "",
            "| test | clients | requests/s (wall clock) | requests per second of Redis CPU "
            "| commands per second of Redis CPU |",
            "|---|---:|---:|---:|---:|",
            *(
                f"| {h.test} | {h.clients} | {_n(h.rps)} | {_n(h.requests_per_cpu_s)} | "
                f"{_n(h.commands_per_cpu_s)} |"
                for h in head
            ),
        ]
    lines += [
        "",
        f"## The model: fintask's end-to-end cost (send + drain), busiest hour {PEAK_FACTOR}x "
        "the average",
        "",
        "| messages a day | rate | msg/s | Redis commands/s | round trips/s | Redis cores "
        "| one busiest hour waiting (GiB) |",
        "|---:|---|---:|---:|---:|---:|---:|",
        *(
            f"| {p.daily:.0e} | {'busiest hour' if p.peak else 'average'} | {_n(p.rate)} | "
            f"{_n(p.commands_per_s)} | {_n(p.round_trips_per_s)} | {p.redis_cores:.2f} | "
            f"{p.hour_backlog_gib:.2f} |"
            for p in projections
        ),
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    about = __doc__.split("\n\n")[0]
    parser = argparse.ArgumentParser(prog="python -m bench.capacity", description=about)
    parser.add_argument("--messages", type=int, default=5_000, help="messages per phase")
    parser.add_argument("--steady-messages", type=int, default=1_000)
    parser.add_argument(
        "--steady-rate", type=float, default=200.0, help="msg/s of the steady phase"
    )
    parser.add_argument("--idle-s", type=float, default=3.0)
    parser.add_argument("--benchmark-requests", type=int, default=100_000)
    add_publish_options(parser, "capacity")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = start_probe("bench.capacity", argv, args)
    if run is None:
        return 2
    results: dict[str, dict[str, PerMessage]] = {}
    idle: dict[str, PerMessage] = {}
    with (
        tempfile.TemporaryDirectory(prefix="fintask-capacity-") as tmp,
        RedisServer(data_dir=Path(tmp), persistent=False) as server,
    ):
        bench = Bench(redis_url=server.url, full=False, repeat=0, logs=run.logs)
        with redis.Redis.from_url(server.url) as client:
            redis_version = str(client.info("server")["redis_version"])
        for system in SYSTEMS:
            print(f"{system.name}: {system.setting()}", file=sys.stderr, flush=True)
            probe = Probe(bench, system, args.messages)
            probe.sends()
            probe.workers_phases(args.steady_messages, args.steady_rate, args.idle_s)
            probe.close()
            results[system.name], idle[system.name] = probe.results, probe.idle
        assert server.port is not None
        head = headroom(bench, server.port, args.benchmark_requests)
        redis_info = redis_info_text(server.url)
    end_to_end = results["fintask"]["end to end: send + drain"]
    projections = [
        project(daily, end_to_end, peak=peak, peak_factor=PEAK_FACTOR)
        for daily in DAILY_VOLUMES
        for peak in (False, True)
    ]
    load_after = load_average()
    header = [
        f"# Capacity probe, {time.strftime('%Y-%m-%d')}",
        "",
        f"`{run.exact}`, commit `{run.commit}`, Redis {redis_version}, {machine()}; load "
        f"average {run.load_before} before and {load_after} after ({run.elapsed_s():.0f} s; "
        "the machine's 2 cores are shared with other sessions' work, see `machine.txt`). "
        f"{args.messages:,} messages per phase; workers: {SYSTEMS[0].setting()} (the Procfile's "
        "`worker`). What each phase measures: `bench/capacity.py`'s docstring.",
    ]
    text = render(results, idle, head, projections, header)
    document = {
        "command": run.exact,
        "commit": run.commit,
        "redis_version": redis_version,
        "messages": args.messages,
        "results": {
            s: {c: dataclasses.asdict(v) for c, v in r.items()} for s, r in results.items()
        },
        "idle_per_second": {s: dataclasses.asdict(v) for s, v in idle.items()},
        "headroom": [dataclasses.asdict(h) for h in head],
        "projections": [dataclasses.asdict(p) for p in projections],
    }
    run.finish(
        "capacity",
        report=text,
        files={"capacity.json": json.dumps(document, indent=2) + "\n"},
        commands=bench.commands,
        redis_info=redis_info,
        load_after=load_after,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
