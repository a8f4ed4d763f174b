"""``python -m bench.profile``: where a no-op message's CPU goes, in fintask's worker and
producer, with py-spy.

Two subjects, each on a private ``redis-server``: the *worker*, the Procfile's shape (2
processes x 8 threads, prefetch 16, the bench's no-op task) draining a backlog of no-ops sent
beforehand, sampled from its first run to its last; and the *producer*, one process sending the
same no-ops through ``chunking.enqueue_many`` on fintask's broker with its enqueue-side stack.
``--payload-bytes N`` makes every no-op carry scenario 9's payload of N bytes (``bench.work``):
where a 16 kB message's extra cost goes. Each is run twice: once for py-spy's flame graph
(``<subject>.svg``), once for its raw stacks (``<subject>.txt``), from which the table is made.
py-spy samples only the thread holding the GIL (``--gil``), so a sample is Python (or C called
from it) at work, not a thread waiting.

The table gives each component's share of the samples, by the innermost frame that belongs to
a known component (a middleware hook's Redis call counts as the Redis client's; everything
under the task, its run's record in Redis included, counts as the task's), and turns it
into microseconds per message with the processes' measured CPU time (user + system, read from
``/proc``) over the messages they handled. ``--publish`` writes
``bench/results/profile-<date>/`` with the files every published run keeps
(:mod:`bench.publish`); without it, ``bench/results/local-profile-<date>/``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from app.local.redis_server import RedisServer
from app.settings import PROJECT_ROOT
from bench.harness import Bench, cpu_seconds
from bench.publish import add_publish_options, load_average, redis_info_text, start_probe
from bench.scenarios.noop import Sender, queue_of, recorded, running
from bench.systems import System, wait_until_count
from bench.systems.redis_cost import CountedReads
from bench.work import payload

SCENARIO = "profile"
WORKER = System("fintask", "fintask", processes=2, threads=8, prefetch=16)
#: Samples per second and process: enough for a share of a percent over a few seconds.
RATE = 250

#: The components of a message's cost, by the file a frame runs in (py-spy's short names):
#: the first pattern matching a frame, from the innermost frame out, names its component.
COMPONENTS: tuple[tuple[str, str], ...] = (
    ("Redis client (redis-py, hiredis)", r"^(redis|hiredis)/"),
    ("JSON (message codec)", r"^(json|orjson)/|^app/json_codec\.py"),
    (
        "metrics (prometheus_client)",
        r"^prometheus_client/|^(dramatiq|app)/middleware/prometheus\.py|^app/metric_batch\.py",
    ),
    ("fintask middleware", r"^app/middleware/|^chunking/batch_members\.py"),
    ("Dramatiq middleware", r"^dramatiq/middleware/"),
    ("fintask broker and consumer", r"^app/|^chunking/"),
    ("Dramatiq worker, broker and message", r"^dramatiq/"),
    ("logging", r"^logging/"),
    ("threads and queues", r"^(threading|queue)\.py"),
)
OTHER = "other (standard library, uuid, dataclasses...)"
#: The bench's task: it claims every frame it encloses (its run record's Redis call included).
TASK = ("the task itself (its run's record included)", r"^bench/apps/")

_FRAME = re.compile(r"\((?P<file>[^():]+):\d+\)$")


def component_of(stack: str) -> str:
    """The component of a raw py-spy stack (``frame;frame;...``, innermost last)."""
    files = [found["file"] for frame in stack.split(";") if (found := _FRAME.search(frame))]
    if any(re.search(TASK[1], file) for file in files):
        return TASK[0]
    for file in reversed(files):
        for name, pattern in COMPONENTS:
            if re.search(pattern, file):
                return name
    return OTHER


def shares(raw: str) -> Counter[str]:
    """Samples per component in py-spy's raw output (one ``stack count`` per line)."""
    counted: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            counted[component_of(stack)] += int(count)
    return counted


@dataclass(frozen=True)
class Profiled:
    """One subject's run: its samples by component, and the CPU it spent on its messages."""

    subject: str
    messages: int
    cpu_s: float
    samples: Counter[str]

    def rows(self) -> list[tuple[str, float, float]]:
        """(component, share of samples, µs per message), largest first."""
        total = sum(self.samples.values()) or 1
        per_message_us = self.cpu_s * 1e6 / self.messages
        return [
            (name, count / total, count / total * per_message_us)
            for name, count in self.samples.most_common()
        ]


def render(profiles: Iterable[Profiled], header: list[str]) -> str:
    """The report: per subject, its CPU per message and the table of components."""
    lines = [*header]
    for profile in profiles:
        per_message = profile.cpu_s * 1e6 / profile.messages
        lines += [
            "",
            f"## {profile.subject}: {per_message:,.1f} µs of CPU per message",
            "",
            f"{profile.messages:,} messages, {profile.cpu_s:.2f} s of CPU, "
            f"{sum(profile.samples.values()):,} samples. Flame graph: `{profile.subject}.svg`; "
            f"raw stacks: `{profile.subject}.txt`.",
            "",
            "| component | share of samples | µs per message |",
            "|---|---:|---:|",
        ]
        lines += [f"| {name} | {share:.1%} | {us:,.1f} |" for name, share, us in profile.rows()]
    return "\n".join(lines) + "\n"


class Spy:
    """py-spy recording ``pids`` (and their children) until :meth:`stop`."""

    def __init__(self, pids: list[int], output: Path, fmt: str) -> None:
        self.outputs = [output.with_suffix(f".{pid}{output.suffix}") for pid in pids]
        options = ["--subprocesses", "--gil", "--nonblocking", "--rate", str(RATE), "--format"]
        self.processes = [
            subprocess.Popen(
                [str(py_spy()), "record", "--pid", str(pid), *options, fmt, "--output", str(path)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for pid, path in zip(pids, self.outputs, strict=True)
        ]

    def stop(self) -> list[Path]:
        """Stop sampling; the files py-spy wrote."""
        for process in self.processes:
            process.send_signal(signal.SIGINT)
        for process in self.processes:
            _, errors = process.communicate(timeout=60)
            if process.returncode not in (0, -signal.SIGINT):
                raise RuntimeError(f"py-spy failed: {errors.decode(errors='replace')[-500:]}")
        return self.outputs


def py_spy() -> Path:
    """The py-spy executable of this virtualenv (the bench dependency group installs it)."""
    return Path(sys.executable).with_name("py-spy")


def noop_arguments(now: float, payload_bytes: int) -> tuple[Any, ...]:
    """A profiled no-op's arguments: its send time, and the scenario 9 payload when asked."""
    return (now, payload(payload_bytes)) if payload_bytes else (now,)


def profile_worker(
    bench: Bench, messages: int, payload_bytes: int, fmt: str, output: Path
) -> Profiled:
    """The Procfile's worker draining ``messages`` no-ops, sampled from first run to last."""
    bench.flush()
    client = bench.client()
    sender = Sender(WORKER, bench.redis_url)
    arguments = noop_arguments(time.time(), payload_bytes)
    sender.producer.send_batched(sender.queue, "noop", (arguments for _ in range(messages)))
    sender.close()
    count = CountedReads(recorded(client, queue_of(WORKER)))
    with running(bench, WORKER, SCENARIO) as started:
        if wait_until_count(count, 1, timeout_s=120, interval_s=0.01) < 1:
            raise RuntimeError("fintask: no message ran within 120 s of the spawn")
        pids = [process.pid for process in started.processes]
        spy = Spy(pids, output, fmt)
        cpu_before, done_before = cpu_seconds(pids), count()
        if wait_until_count(count, messages, timeout_s=600) < messages:
            raise RuntimeError(f"fintask: the {messages:,} no-ops did not drain in 600 s")
        cpu = cpu_seconds(pids) - cpu_before
        files = spy.stop()
    bench.flush()
    client.close()
    return Profiled("worker", messages - done_before, cpu, _merged(files, output))


def profile_producer(
    bench: Bench, messages: int, payload_bytes: int, fmt: str, output: Path
) -> Profiled:
    """One process bulk-enqueueing ``messages`` no-ops through fintask's broker."""
    bench.flush()
    command = [sys.executable, "-m", "bench.profile", "--produce", str(messages)]
    command += ["--payload-bytes", str(payload_bytes)]
    env = {**os.environ, "BENCH_PROFILE_REDIS": bench.redis_url}
    producer = subprocess.Popen(
        command, env=env, cwd=PROJECT_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert producer.stdin is not None and producer.stdout is not None
    producer.stdout.readline()  # connected and warmed up: sampling starts here
    spy = Spy([producer.pid], output, fmt)
    time.sleep(0.5)  # py-spy attached
    cpu_before = cpu_seconds([producer.pid])
    producer.stdin.write(b"go\n")
    producer.stdin.flush()
    producer.stdout.readline()  # sent
    cpu = cpu_seconds([producer.pid]) - cpu_before
    files = spy.stop()
    producer.stdin.close()
    producer.wait()
    bench.note_command(SCENARIO, "fintask", command, setting="producer")
    bench.flush()
    return Profiled("producer", messages, cpu, _merged(files, output))


def produce(messages: int, payload_bytes: int) -> None:
    """The producer subject: warm up, say so, wait for the go, send, say so."""
    sender = Sender(WORKER, os.environ["BENCH_PROFILE_REDIS"])
    arguments = noop_arguments(time.time(), payload_bytes)
    sender.producer.send_batched(sender.queue, "noop", (arguments for _ in range(1_000)))
    print("ready", flush=True)
    sys.stdin.readline()
    sender.producer.send_batched(sender.queue, "noop", (arguments for _ in range(messages)))
    print("sent", flush=True)
    sender.close()


def _merged(files: list[Path], output: Path) -> Counter[str]:
    """Join the per-process files into ``output``; raw stacks are counted, SVGs kept apart."""
    if output.suffix == ".svg":
        for n, path in enumerate(files):
            path.rename(output if n == 0 else output.with_suffix(f".{n}.svg"))
        return Counter()
    text = "".join(path.read_text() for path in files)
    output.write_text(text)
    for path in files:
        path.unlink()
    return shares(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--messages", type=int, default=50_000, help="no-ops per subject")
    parser.add_argument(
        "--payload-bytes",
        type=int,
        default=0,
        help="each no-op carries scenario 9's payload of this size (default: none)",
    )
    add_publish_options(parser, "profile")
    parser.add_argument("--produce", type=int, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.produce is not None:
        produce(args.produce, args.payload_bytes)
        return 0
    if not py_spy().exists():
        print(f"py-spy is not installed at {py_spy()} (make install installs it)")
        return 2
    probe = start_probe("bench.profile", argv, args)
    if probe is None:
        return 2
    out = Path(tempfile.mkdtemp(prefix="fintask-profile-"))
    subjects: list[tuple[str, Callable[[Bench, int, int, str, Path], Profiled]]] = [
        ("worker", profile_worker),
        ("producer", profile_producer),
    ]
    profiles = []
    with (
        tempfile.TemporaryDirectory(prefix="fintask-profile-redis-") as tmp,
        RedisServer(data_dir=Path(tmp), persistent=False) as server,
    ):
        bench = Bench(redis_url=server.url, full=False, repeat=0, logs=probe.logs)
        with redis.Redis.from_url(server.url) as client:
            redis_version = str(client.info("server")["redis_version"])
        for subject, run in subjects:
            print(f"{subject}: flame graph, then raw stacks", file=sys.stderr, flush=True)
            run(bench, args.messages, args.payload_bytes, "flamegraph", out / f"{subject}.svg")
            raw = out / f"{subject}.txt"
            profiles.append(run(bench, args.messages, args.payload_bytes, "raw", raw))
        redis_info = redis_info_text(server.url)
    load_after = load_average()
    carrying = f" carrying {args.payload_bytes:,} bytes" if args.payload_bytes else ""
    suffix = f"-{args.payload_bytes}b" if args.payload_bytes else ""
    header = [
        f"# Profile of a no-op message{carrying}, {time.strftime('%Y-%m-%d')}",
        "",
        f"`{probe.exact}`, commit `{probe.commit}`, Redis {redis_version}; load average "
        f"{probe.load_before} before and {load_after} after ({probe.elapsed_s():.0f} s). "
        f"Worker: {WORKER.setting()} (the Procfile's `worker`); producer: "
        "`chunking.enqueue_many` on fintask's broker. What the table counts: "
        "`bench/profile.py`'s docstring.",
    ]
    text = render(profiles, header)
    probe.finish(
        "profile",
        suffix=suffix,
        report=text,
        files={},
        moved=list(out.iterdir()),
        commands=bench.commands,
        redis_info=redis_info,
        load_after=load_after,
    )
    shutil.rmtree(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
