"""Scenario 3: send-to-start latency, paced and under open-loop sustained load.

Every message carries a time stamp; the no-op task records its start beside it (one clock, one
machine); a latency is the difference, pooled into its (case, system) HdrHistogram over the
repetitions (:meth:`bench.harness.Bench.record_latencies`). One repetition, with every system's
workers (each family at its best throughput setting, and fintask's ``worker_urgent`` shape)
running at once, each on a queue of its own:

- Paced, 2 msg/s ("quiet hours"): every system gets its stream at the same time, the streams
  interleaved; then 500 msg/s, system by system while the others idle. The stamp is the time
  of the send call, as an application would see it.
- Open loop, system by system: 25, 50, 75 and 90 % of the system's measured maximum
  (:func:`bench.scenarios.noop.best_systems`; quick mode 50 and 90 %). The sender follows a
  fixed schedule whatever the workers do and stamps each message with its *scheduled* time,
  sending every message due at each tick in one pipelined batch; a stalled system therefore
  shows its stall in the latencies instead of slowing the sender down (no coordinated
  omission).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass

import redis

from bench.harness import Bench, Medians, Scenario
from bench.histograms import QUOTABLE
from bench.latency_record import starts_key
from bench.scenarios import noop
from bench.scenarios.noop import Sender
from bench.systems import System, wait_until_count

#: fintask's ``worker_urgent`` Procfile process: the one whose latency a fraud alert meets.
WORKER_URGENT = System("fintask worker_urgent", "fintask", processes=1, threads=4, prefetch=4)
QUIET_RATE = 2.0
BUSY_RATE = 500.0
#: Open-loop loads, as fractions of each system's measured maximum throughput; quick mode
#: runs two of them, the middle and the heaviest.
LOADS = (0.25, 0.5, 0.75, 0.9)
QUICK_LOADS = (0.5, 0.9)
#: Latency targets of fintask at the paced rates (issue 17): p50 and p99, in ms.
TARGET_P50_MS = 2.0
TARGET_P99_MS = 5.0


@dataclass(frozen=True)
class Windows:
    """How long each part of a repetition sends, in seconds, and which loads it offers."""

    quiet_s: float
    busy_s: float
    load_s: float
    loads: tuple[float, ...] = LOADS

    @property
    def grace_s(self) -> float:
        """How long after its window a load's last messages may start and still count as
        kept up with: a system that keeps up holds at most a prefetch's worth at the end."""
        return max(1.0, 0.1 * self.load_s)


def windows(bench: Bench) -> Windows:
    """Full mode: long enough for :data:`QUOTABLE` latencies per paced cell over the run's
    repetitions (334 s at 2 msg/s and 3 repetitions), 60 s per load. Quick: a second or two,
    and two of the loads, to stay within its 30 s a repetition with seven systems."""
    if not bench.full:
        return Windows(quiet_s=2.0, busy_s=0.5, load_s=0.5, loads=QUICK_LOADS)

    def reaching(rate: float, floor_s: float) -> float:
        return max(floor_s, math.ceil(QUOTABLE / (rate * bench.repeats)) + 1)

    return Windows(reaching(QUIET_RATE, 30.0), reaching(BUSY_RATE, 10.0), load_s=60.0)


@dataclass
class Schedule:
    """The send times of a fixed-rate stream: ``start + i / rate`` for ``i < count``."""

    rate: float
    count: int
    start: float
    sent: int = 0

    @classmethod
    def of(cls, rate: float, seconds: float, start: float) -> Schedule:
        return cls(rate, max(1, round(rate * seconds)), start)

    def at(self, index: int) -> float:
        return self.start + index / self.rate

    @property
    def end(self) -> float:
        """When the window closes (one interval after the last send)."""
        return self.at(self.count)

    def next_at(self) -> float | None:
        """When the next message is due (None once every message is sent)."""
        return self.at(self.sent) if self.sent < self.count else None

    def due(self, now: float) -> list[float]:
        """The send times due by ``now`` and not yet sent, which are then sent."""
        times = []
        while self.sent < self.count and self.at(self.sent) <= now:
            times.append(self.at(self.sent))
            self.sent += 1
        return times


def drive(
    schedule: Schedule,
    send: Callable[[list[float]], None],
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> float:
    """Hand ``send`` every batch of send times as it falls due, until the schedule is done;
    return how far the sender fell behind it at worst (s): the oldest due time of a batch
    against the clock when the batch was taken."""
    lag = 0.0
    while (next_at := schedule.next_at()) is not None:
        pause = next_at - clock()
        if pause > 0:
            sleep(pause)
        now = clock()
        due = schedule.due(now)
        if due:
            lag = max(lag, now - due[0])
            send(due)
    return lag


def latencies_ms(
    records: Sequence[tuple[float, float]], stamps: Sequence[float], now: float
) -> list[float]:
    """Start minus stamp of every recorded run, and for every message not started by ``now``
    ``now`` minus its stamp: a lower bound, so a backlog is not dropped from the tail. Which
    messages are missing is not known; taking the latest stamps makes the bound the lowest."""
    found = [(start - sent) * 1000 for start, sent in records]
    missing = sorted(stamps)[len(records) :]
    return found + [(now - sent) * 1000 for sent in missing]


@dataclass(frozen=True)
class Outcome:
    """One stream's latencies and how many of its messages started in time."""

    latencies_ms: list[float]
    in_time: int
    count: int


def collect(client: redis.Redis, queue: str, stamps: Sequence[float], until: float) -> Outcome:
    """Wait until every message stamped ``stamps`` has started or ``until`` passes, then read
    the latencies; then wait (not measured) for any backlog to drain and clear the records."""
    count = noop.recorded(client, queue)
    wait_until_count(count, len(stamps), timeout_s=max(0.0, until - time.time()))
    records = noop.starts(client, queue)
    outcome = Outcome(
        latencies_ms(records, stamps, time.time()),
        sum(1 for start, _ in records if start <= until),
        len(stamps),
    )
    if len(records) < len(stamps):
        drained = wait_until_count(count, len(stamps), timeout_s=max(30.0, until - stamps[0]))
        if drained < len(stamps):
            raise RuntimeError(f"{queue}: {len(stamps) - drained} messages never started")
    client.delete(starts_key(queue))
    return outcome


def paced(senders: Sequence[Sender], rate: float, seconds: float) -> list[list[float]]:
    """Send ``rate`` msg/s to each of ``senders`` for ``seconds``, the streams interleaved,
    each message stamped when its send call starts; the stamps, by sender."""
    stamps: list[list[float]] = [[] for _ in senders]
    turn = itertools.cycle(range(len(senders)))

    def send(due: list[float]) -> None:
        for _ in due:
            i = next(turn)
            stamps[i].append(time.time())
            senders[i].send(stamps[i][-1])

    drive(Schedule.of(rate * len(senders), seconds, time.time() + 0.05), send)
    return stamps


def open_loop(sender: Sender, rate: float, seconds: float) -> tuple[Schedule, list[float], float]:
    """Send on a fixed schedule, stamped with it; the schedule, the stamps and the sender's
    worst lag (s)."""
    schedule = Schedule.of(rate, seconds, time.time() + 0.05)
    stamps: list[float] = []

    def send(due: list[float]) -> None:
        sender.producer.send_batched(sender.queue, "noop", ((t,) for t in due))
        stamps.extend(due)

    lag = drive(schedule, send)
    return schedule, stamps, lag


def run_latency(bench: Bench) -> None:
    """Paced streams for every system at once, then each system alone at 500 msg/s and under
    the open-loop loads."""
    bench.flush()
    window = windows(bench)
    best = noop.best_systems(bench.history, bench)
    maxima = {system.name: rate for system, rate in best}
    systems = bench.order([*(system for system, _ in best), WORKER_URGENT])
    with ExitStack() as stack:
        client = stack.enter_context(bench.client())
        senders = []
        for system in systems:
            senders.append(Sender(system, bench.redis_url))
            stack.callback(senders[-1].close)  # arq's producer is a process of its own
            noop.note_producer(bench, "latency", system, senders[-1])
        for system in systems:
            stack.enter_context(noop.running(bench, system, "latency"))
        for system, sender in zip(systems, senders, strict=True):
            noop.await_ready(system, sender, client)
        quiet = paced(senders, QUIET_RATE, window.quiet_s)
        for system, sender, stamps in zip(systems, senders, quiet, strict=True):
            outcome = collect(client, sender.queue, stamps, time.time() + 60)
            keep(bench, system, f"{QUIET_RATE:g} msg/s", outcome)
        for system, sender in zip(systems, senders, strict=True):
            [stamps] = paced([sender], BUSY_RATE, window.busy_s)
            outcome = collect(client, sender.queue, stamps, time.time() + 60)
            keep(bench, system, f"{BUSY_RATE:g} msg/s", outcome)
            if system.name in maxima:
                load(bench, system, sender, client, maxima[system.name], window)


def load(
    bench: Bench,
    system: System,
    sender: Sender,
    client: redis.Redis,
    maximum: float,
    window: Windows,
) -> None:
    """The open-loop loads, lightest first; a system that did not keep up with one is not
    given the next (its backlog has drained, but a heavier load would only fail longer)."""
    warm_up(sender, client)
    for fraction in window.loads:
        case = f"open loop {fraction:.0%}"
        rate = fraction * maximum
        schedule, stamps, lag = open_loop(sender, rate, window.load_s)
        outcome = collect(client, sender.queue, stamps, schedule.end + window.grace_s)
        keep(bench, system, case, outcome)
        share = 100 * outcome.in_time / outcome.count
        setting = system.setting()
        for metric, unit, value in (
            ("offered", "msg/s", rate),
            ("started in time", "%", share),
            ("sender lag", "ms", lag * 1000),
        ):
            bench.record("latency", case, metric, unit, system.name, value, setting=setting)
        if outcome.in_time < outcome.count:
            break


def warm_up(sender: Sender, client: redis.Redis, messages: int = 20) -> None:
    """One unmeasured batch down the batched path, run and cleared: a producer's first batch
    pays its set-up (connections, declarations, an event loop), up to a second here, which
    would otherwise land in the lightest load's tail."""
    sender.producer.send_batched(sender.queue, "noop", ((time.time(),) for _ in range(messages)))
    wait_until_count(noop.recorded(client, sender.queue), messages, timeout_s=30)
    client.delete(starts_key(sender.queue))


def keep(bench: Bench, system: System, case: str, outcome: Outcome) -> None:
    """The stream's latencies into their pooled cell."""
    latencies = outcome.latencies_ms
    bench.record_latencies("latency", case, system.name, latencies, setting=system.setting())


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def latency_verdicts(medians: Medians) -> list[str]:
    """fintask's paced latency against its targets, from the pooled cells."""
    lines = []
    for system in (s for s in medians.systems() if s.startswith("fintask")):
        for case in (f"{QUIET_RATE:g} msg/s", f"{BUSY_RATE:g} msg/s"):
            p50 = medians.get(case, "p50", system)
            p99 = medians.get(case, "p99", system)
            count = medians.get(case, "samples", system)
            if p50 is None or p99 is None or count is None:
                continue
            thin = "" if count >= QUOTABLE else f"; only {count:,.0f} samples, not quotable"
            ok = p50 <= TARGET_P50_MS and p99 <= TARGET_P99_MS
            lines.append(
                f"{system} at {case}: p50 {p50:.2f} ms, p99 {p99:.2f} ms over {count:,.0f} "
                f"latencies (target p50 <= {TARGET_P50_MS:g} ms, p99 <= {TARGET_P99_MS:g} ms"
                f"{thin}): {_met(ok)}"
            )
    return lines


SCENARIO = Scenario(
    number=3,
    key="latency",
    title="End-to-end latency, send to start: paced and open-loop",
    run=run_latency,
    about=(
        "Each message carries a time stamp and the no-op task records its start beside it, on "
        "one clock; a latency is the difference. Every latency of a (case, system) is pooled "
        "over the repetitions into one HdrHistogram, so p99 is read from thousands of values "
        "in full mode rather than being a small sample's maximum; the maximum is shown apart. "
        "Each family runs at its best throughput setting (scenario 1's sweep), beside "
        "fintask's `worker_urgent` shape (1 x 4, prefetch 4); all run at once, each on a "
        "queue of its own. **Paced** (2 msg/s, every system's stream at the same time, "
        "interleaved; 500 msg/s, one system at a time while the others idle): the stamp is "
        "the moment of the send call, as an application sees it, so a sender that falls "
        "behind also sends later. **Open loop** (25 / 50 / 75 / 90 % of the system's "
        "measured maximum, 60 s each in full mode; quick mode 50 and 90 %, 0.5 s each; one "
        "system at a time): the sender keeps a "
        "fixed schedule whatever the workers do, sends every message due at a tick in one "
        "pipelined batch, and stamps each with its *scheduled* time, so a stall shows in the "
        "latencies instead of slowing the sender (no coordinated omission); a message not "
        "started when the window plus its grace (10 %, at least 1 s) ends is counted at the "
        "lower bound of its latency. `started in time` is the share of a load's messages "
        "that started by then (100 %: the system kept up); a system that did not keep up "
        "with one load is not given the next. `offered` is the load; `sender lag` is the "
        "sender's worst delay behind its schedule, already inside the latencies: beyond a "
        "few ms, the harness's producer (one Python thread, the system's own client) could "
        "not offer that load, and the row measures the producer as much as the workers."
    ),
    ratios=(),
    verdicts=latency_verdicts,
)
