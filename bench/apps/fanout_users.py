"""What every fan-out strategy shares: the users table, the e-mail's effect, the settings.

The table ``bench_users`` is seeded once with the largest case; a case of ``n`` users is the
first ``n`` active users by id (``id <= max_id(n)``), so every case walks the same sparse keys.
Ids are ``3g - g % 2`` for ``g = 1, 2, ...`` (gaps of 2 and 4) and every 11th row is inactive,
so the first ``n + n // 10`` rows hold exactly ``n`` active users when ``n`` is a multiple of 10.

The "e-mail" is a Redis script that sets the user's bit in a bitmap and counts the calls, and
the calls that found the bit already set: delivered = ``BITCOUNT``, duplicates must stay 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import redis
from sqlalchemy import BigInteger, Boolean, MetaData, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

#: Where the per-user e-mail messages go (Dramatiq queue, and Celery's queue of chunk tasks).
EMAIL_QUEUE = "fanout_emails"
CHUNK_QUEUE = "fanout_chunks"
CELERY_QUEUE = "fanout_celery"

#: Users per chunk, for Celery's ``chunks()`` and for fintask's run alike.
CHUNK_SIZE = 1_000
#: fintask's run holds its next chunk back while the e-mail queue is deeper than this; the
#: scenario may pass another mark (a quick run's sizes are near this one) in this variable.
HIGH_WATER = 5_000
HIGH_WATER_VARIABLE = "BENCH_FANOUT_HIGH_WATER"

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


class Mailbox:
    """The e-mails' effect in Redis: one bit per user, and counters of calls and duplicates."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._send = client.register_script(_SEND_SCRIPT)

    def send(self, user_id: int) -> None:
        """Deliver the e-mail of ``user_id``: set its bit, count a duplicate if it was set."""
        self._send(keys=[SENT_KEY, CALLS_KEY, DUPLICATES_KEY], args=[user_id])

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


@dataclass(frozen=True)
class ProducerReport:
    """What a producer process prints on its last line: its own peak memory and its count."""

    peak_rss_mb: float
    sent: int

    @classmethod
    def of_this_process(cls, sent: int) -> ProducerReport:
        """This process's peak resident memory and ``sent``.

        The peak is Linux's ``VmHWM``, the high-water mark of this program's memory since
        exec. ``ru_maxrss`` would not do: Linux keeps it across exec, so a producer started
        from the harness reports at least the harness's own size.
        """
        status = Path("/proc/self/status").read_text()
        peak_kib = next(
            int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")
        )
        return cls(peak_rss_mb=peak_kib / 1024, sent=sent)

    def emit(self) -> None:
        """Print the report as the process's last line of output."""
        print(json.dumps({"peak_rss_mb": self.peak_rss_mb, "sent": self.sent}), flush=True)

    @classmethod
    def parse(cls, output: str) -> ProducerReport:
        """The report a producer printed (its last line of output)."""
        data = json.loads(output.strip().splitlines()[-1])
        return cls(peak_rss_mb=float(data["peak_rss_mb"]), sent=int(data["sent"]))
