"""What every fan-out strategy shares: the users table, the e-mail's effect, the settings.

The table ``bench_users`` is seeded once with the largest case; a case of ``n`` users is the
first ``n`` active users by id (``id <= max_id(n)``), so every case walks the same sparse keys.
Ids are ``3g - g % 2`` for ``g = 1, 2, ...`` (gaps of 2 and 4) and every 11th row is inactive,
so the first ``n + n // 10`` rows hold exactly ``n`` active users when ``n`` is a multiple of 10.

The "e-mail" is a Redis script that sets the user's bit in a bitmap and counts the calls, and
the calls that found the bit already set: delivered = ``BITCOUNT``, duplicates must stay 0.
A hand-written walker reads its pages with :func:`next_page` and holds back above
:func:`high_water`, the mark fintask's runs use too.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis
import redis.asyncio
from sqlalchemy import BigInteger, Boolean, MetaData, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

#: The queues, the same names in every system (each system's keys differ in Redis): one
#: message per user, one message per page of ``CHUNK_SIZE`` users, and the walkers (fintask's
#: chunk messages, the hand-written walkers' next-page messages).
EMAIL_QUEUE = "fanout_emails"
PAGE_QUEUE = "fanout_pages"
CHUNK_QUEUE = "fanout_chunks"
QUEUES = (EMAIL_QUEUE, PAGE_QUEUE, CHUNK_QUEUE)

#: Users per page: Celery's ``chunks()``, fintask's runs and the walkers alike.
CHUNK_SIZE = 1_000
#: A walker holds its next page back while the queue its page goes to is deeper than this many
#: e-mails (a per-page walker: this many e-mails' worth of pages); the scenario may pass
#: another mark (a quick run's sizes are near this one) in this variable.
HIGH_WATER = 5_000
HIGH_WATER_VARIABLE = "BENCH_FANOUT_HIGH_WATER"
#: How long a walker held back waits before it looks again, the same for every walker
#: (fintask's backpressure delay pinned to it, not grown with the excess).
BACKPRESSURE_MS = 200
#: The one queue of the peers' fan-out (Huey's, RQ's, taskiq's, arq's): e-mails, pages, the walker.
PEER_QUEUE = "fanout"

#: Environment variable carrying the benchmark database's SQLAlchemy URL to workers.
DB_VARIABLE = "BENCH_FANOUT_DB_URL"

SENT_KEY = "bench:fanout:sent"
CALLS_KEY = "bench:fanout:calls"
DUPLICATES_KEY = "bench:fanout:duplicates"
READY_KEY = "bench:fanout:ready"
KEYS = (SENT_KEY, CALLS_KEY, DUPLICATES_KEY, READY_KEY)

# KEYS: sent bitmap, calls counter, duplicates counter; ARGV: the user id.
_SEND_SCRIPT = """
local before = redis.call('SETBIT', KEYS[1], ARGV[1], 1)
redis.call('INCR', KEYS[2])
if before == 1 then redis.call('INCR', KEYS[3]) end
return before
"""


class FanoutBase(DeclarativeBase):
    """The benchmark's own tables, apart from fintask's."""

    metadata = MetaData()


class BenchUser(FanoutBase):
    __tablename__ = "bench_users"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    active: Mapped[bool] = mapped_column(Boolean)


def rows_for(users: int) -> int:
    """How many seeded rows hold the first ``users`` active users."""
    return users + users // 10


def max_id(users: int) -> int:
    """The id of the last of the first ``users`` active users' rows: a case's upper bound."""
    g = rows_for(users)
    return 3 * g - g % 2


#: Seeds ``rows_for(n)`` rows with the id and activity pattern above, in one statement.
SEED_SQL = """
INSERT INTO bench_users (id, active)
SELECT 3 * g - mod(g, 2), mod(g, 11) <> 0 FROM generate_series(1, %(rows)s) AS g
"""


def active_ids(session: Session, users: int) -> list[int]:
    """Every id a case e-mails, loaded into one list: what the naive producers do."""
    statement = (
        select(BenchUser.id)
        .where(BenchUser.active.is_(True), BenchUser.id <= max_id(users))
        .order_by(BenchUser.id)
    )
    return list(session.scalars(statement))


def high_water(*, per_page: bool) -> int:
    """The walkers' mark, in messages of the queue they watch (pages count ``CHUNK_SIZE``)."""
    mark = int(os.environ.get(HIGH_WATER_VARIABLE, HIGH_WATER))
    return max(1, mark // CHUNK_SIZE) if per_page else mark


def next_page(session: Session, after_id: int, last_id: int) -> list[int]:
    """The next ``CHUNK_SIZE`` active ids after ``after_id`` up to ``last_id``, by keyset: what
    a hand-written walker reads per step (fintask's run reads the same with its enumerator)."""
    statement = (
        select(BenchUser.id)
        .where(BenchUser.active.is_(True), BenchUser.id > after_id, BenchUser.id <= last_id)
        .order_by(BenchUser.id)
        .limit(CHUNK_SIZE)
    )
    return list(session.scalars(statement))


def wait_below_mark(depth: Callable[[], int], *, per_page: bool) -> None:
    """Hold a walker in its task, ``BACKPRESSURE_MS`` at a time, while ``depth()`` is above the
    mark: for a system that defers a message only through a scheduler (RQ's needs a scheduler
    process, Huey's ticks once a second), waiting in the task is the nearest thing."""
    while depth() > high_water(per_page=per_page):
        time.sleep(BACKPRESSURE_MS / 1000)


class Mailbox:
    """The e-mails' effect in Redis: one bit per user, and counters of calls and duplicates."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._send = client.register_script(_SEND_SCRIPT)

    def send(self, user_id: int) -> None:
        """Deliver the e-mail of ``user_id``: set its bit, count a duplicate if it was set."""
        self._send(keys=[SENT_KEY, CALLS_KEY, DUPLICATES_KEY], args=[user_id])

    def send_page(self, user_ids: list[int]) -> None:
        """Deliver a page's e-mails one by one, as a per-page task's loop does."""
        for user_id in user_ids:
            self.send(user_id)

    def calls(self) -> int:
        """How many e-mails were sent, duplicates included."""
        return int(self.client.get(CALLS_KEY) or 0)

    def counts(self) -> tuple[int, int]:
        """(distinct users e-mailed, duplicate e-mails)."""
        pipeline = self.client.pipeline(transaction=False)
        pipeline.bitcount(SENT_KEY)
        pipeline.get(DUPLICATES_KEY)
        delivered, duplicates = pipeline.execute()
        return int(delivered), int(duplicates or 0)

    def mark_ready(self, pid: int) -> None:
        """Note that worker process ``pid`` has run a task (the harness waits for all)."""
        self.client.sadd(READY_KEY, pid)

    def clear(self) -> None:
        """Forget every e-mail and readiness mark, before the next case."""
        self.client.delete(*KEYS)


class AsyncMailbox:
    """:class:`Mailbox`'s sends for coroutine tasks (taskiq, arq): the same script and keys on an
    asyncio client, so a worker's other tasks run while one waits on Redis."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self.client = client
        self._send = client.register_script(_SEND_SCRIPT)

    async def send(self, user_id: int) -> None:
        """Deliver the e-mail of ``user_id`` (:meth:`Mailbox.send`)."""
        await self._send(keys=[SENT_KEY, CALLS_KEY, DUPLICATES_KEY], args=[user_id])

    async def send_page(self, user_ids: list[int]) -> None:
        """Deliver a page's e-mails one by one, as a per-page task's loop does."""
        for user_id in user_ids:
            await self.send(user_id)

    async def mark_ready(self, pid: int) -> None:
        """Note that worker process ``pid`` has run a task (:meth:`Mailbox.mark_ready`)."""
        await self.client.sadd(READY_KEY, pid)


@dataclass(frozen=True)
class ProducerReport:
    """What a producer process prints on its last line: its peak memory, CPU time and count."""

    peak_rss_mb: float
    cpu_s: float
    sent: int

    @classmethod
    def of_this_process(cls, sent: int) -> ProducerReport:
        """This process's peak resident memory, its user+system time, and ``sent``.

        The peak is Linux's ``VmHWM``, the high-water mark of this program's memory since
        exec. ``ru_maxrss`` would not do: Linux keeps it across exec, so a producer started
        from the harness reports at least the harness's own size.
        """
        status = Path("/proc/self/status").read_text()
        peak_kib = next(
            int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")
        )
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return cls(peak_kib / 1024, usage.ru_utime + usage.ru_stime, sent)

    def emit(self) -> None:
        """Print the report as the process's last line of output."""
        print(json.dumps(dataclasses.asdict(self)), flush=True)

    @classmethod
    def parse(cls, output: str) -> ProducerReport:
        """The report a producer printed (its last line of output)."""
        return cls(**json.loads(output.strip().splitlines()[-1]))


def walker_producer(description: str, start_walk: Callable[[int, bool], object]) -> None:
    """A peer walker's producer process (``walk|walk-pages USERS``): send the first walker
    message, ``start_walk(last_id, per_page)``, then print the process's peak memory."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("strategy", choices=("walk", "walk-pages"))
    parser.add_argument("users", type=int)
    arguments = parser.parse_args()
    start_walk(max_id(arguments.users), arguments.strategy == "walk-pages")
    ProducerReport.of_this_process(sent=1).emit()
