"""The task bodies every system runs, written once: a no-op, an I/O task and a CPU task.

Every body records its start next to the send time its message carried
(:mod:`bench.latency_record`), so the harness counts runs and times them on one clock.

- ``noop(sent_at, payload)``: nothing else; ``payload`` (none, 1 kB or 16 kB, as a list of
  strings of at most 1,000 characters: fintask's guardrails refuse longer strings, so every
  system carries the same list) only travels in the message, so its cost is the system's
  serialising and moving it.
- ``io(sent_at, payload, n)``: asks the scenario's sink (:class:`Sink`, a loopback TCP server)
  to answer after 5-20 ms, the delay drawn from the message's number ``n``, so every system
  waits the same delays for the same messages.
- ``cpu(sent_at, payload, n)``: about 1 ms of pure-Python arithmetic (a fixed count, so a busy
  machine makes it slower rather than shorter).

The bodies come in two forms over the same pure parts: blocking (Dramatiq, Celery, Huey, RQ run
tasks on threads or processes) and ``async`` (taskiq and arq run coroutines on an event loop,
as their users write tasks). This module imports nothing but ``redis``, so arq's own venv
(redis-py 5) imports it too.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import zlib
from collections.abc import Callable, Sequence

import redis
import redis.asyncio

from bench.latency_record import record_line, worker_queue

#: Environment variable carrying the benchmark Redis URL to worker modules.
REDIS_VARIABLE = "BENCH_REDIS_URL"
#: Environment variable carrying the sink's ``host:port`` to worker modules.
SINK_VARIABLE = "BENCH_SINK"
#: Environment variable naming a worker's concurrency per process where the system reads it
#: from its module (arq's ``max_jobs``) rather than from a command-line flag.
CONCURRENCY_VARIABLE = "BENCH_CONCURRENCY"

#: The tasks, by name; the same names in every system's worker module.
TASKS = ("noop", "io", "cpu")
#: The I/O task's delays: 5 ms to 20 ms, one per message number.
IO_DELAYS_MS = tuple(range(5, 21))
#: The CPU task's loop count: about 1 ms of CPU time on the benchmark machine.
CPU_ITERATIONS = 8_000


#: The longest string in a payload: fintask's guardrails (``MAX_STRING_CHARS``) refuse longer.
PAYLOAD_CHUNK = 1_000


def payload(size_bytes: int) -> list[str]:
    """A message payload of ``size_bytes`` ASCII characters in strings of ``PAYLOAD_CHUNK``
    (the same for every system)."""
    text = ("fintask-bench-" * (size_bytes // 14 + 1))[:size_bytes]
    return [text[i : i + PAYLOAD_CHUNK] for i in range(0, size_bytes, PAYLOAD_CHUNK)]


def io_delay_ms(n: int) -> int:
    """The sink's delay for message ``n``: spread over 5-20 ms, and the same in every run."""
    return IO_DELAYS_MS[(n * 7) % len(IO_DELAYS_MS)]


def spin(data: Sequence[str]) -> int:
    """The CPU task's work: a checksum of the payload, then a fixed arithmetic loop."""
    total = zlib.crc32("".join(data).encode())
    for i in range(CPU_ITERATIONS):
        total = (total + i * i) % 1_000_003
    return total


def sink_address() -> tuple[str, int]:
    """The sink's address, from the worker's environment."""
    host, port = os.environ[SINK_VARIABLE].rsplit(":", 1)
    return host, int(port)


class Blocking:
    """The bodies for systems that run tasks on threads or processes.

    ``consumer`` names the process a run counts for (the readiness probe waits for every one):
    its pid, or for RQ's forking worker the pid of the worker that forked the work horse.
    """

    def __init__(self, consumer: Callable[[], int] = os.getpid) -> None:
        self.queue, self.key = worker_queue()
        self.client = redis.Redis.from_url(os.environ[REDIS_VARIABLE])
        self.consumer = consumer

    def record(self, sent_at: float) -> None:
        self.client.rpush(self.key, record_line(sent_at, self.consumer()))

    def noop(self, sent_at: float, payload: Sequence[str] = ()) -> None:
        self.record(sent_at)

    def io(self, sent_at: float, payload: Sequence[str], n: int) -> None:
        self.record(sent_at)
        with socket.create_connection(sink_address()) as connection:
            connection.sendall(f"{io_delay_ms(n)}\n".encode())
            connection.recv(16)

    def cpu(self, sent_at: float, payload: Sequence[str], n: int) -> None:
        self.record(sent_at)
        spin(payload)


class Async:
    """The same bodies as coroutines, for taskiq and arq (one client per event loop)."""

    def __init__(self) -> None:
        self.queue, self.key = worker_queue()
        self.url = os.environ[REDIS_VARIABLE]
        self.clients: dict[int, redis.asyncio.Redis] = {}

    def client(self) -> redis.asyncio.Redis:
        loop = id(asyncio.get_running_loop())
        if loop not in self.clients:
            self.clients[loop] = redis.asyncio.Redis.from_url(self.url)
        return self.clients[loop]

    async def record(self, sent_at: float) -> None:
        await self.client().rpush(self.key, record_line(sent_at, os.getpid()))

    async def noop(self, sent_at: float, payload: Sequence[str] = ()) -> None:
        await self.record(sent_at)

    async def io(self, sent_at: float, payload: Sequence[str], n: int) -> None:
        await self.record(sent_at)
        reader, writer = await asyncio.open_connection(*sink_address())
        writer.write(f"{io_delay_ms(n)}\n".encode())
        await reader.read(16)
        writer.close()
        await writer.wait_closed()

    async def cpu(self, sent_at: float, payload: Sequence[str], n: int) -> None:
        await self.record(sent_at)
        spin(payload)


class Sink:
    """The I/O task's far end: a loopback TCP server that answers each request after the delay
    it names, on an event loop in a thread of the harness (so its CPU is not the workers')."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.address = ""

    def __enter__(self) -> Sink:
        self.thread.start()
        if not self.ready.wait(10):
            raise RuntimeError("the I/O sink did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            asyncio.start_server(self._answer, "127.0.0.1", 0, backlog=1024)
        )
        host, port = server.sockets[0].getsockname()[:2]
        self.address = f"{host}:{port}"
        self.ready.set()
        self.loop.run_forever()
        server.close()
        self.loop.run_until_complete(server.wait_closed())
        self.loop.close()

    @staticmethod
    async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        await asyncio.sleep(int(line or b"0") / 1000)
        writer.write(b"ok\n")
        await writer.drain()
        writer.close()
