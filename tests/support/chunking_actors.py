"""The actors module of the real worker in chunking's kill test (``test_chunking_kill``).

The worker is started as the Procfile starts one, ``fintask process worker -- dramatiq
app.broker:setup_broker tests.support.chunking_actors ...``: its broker is fintask's own
(``WakeupRedisBroker`` with the ``worker`` middleware stack, ``DeadWorkerRecovery`` included)
with the production heartbeat timeout and maintenance chance, nothing tuned. The run is
declared only when ``CHUNKING_DB_URL`` is set (in the worker), so the test process can import
the tables and :func:`declare` and declare the run on a producer broker of its own.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from dramatiq import Broker
from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from app.broker import setup_broker
from chunking import ChunkContext, ChunkedRun, KeysetEnumerator

QUEUE = "chunking_kill"
NAME = "kill_test_chunk"


class Base(DeclarativeBase):
    metadata = MetaData()


class Item(Base):
    __tablename__ = "kill_items"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)


class Effect(Base):
    """One item's effect, deliberately not unique: a doubled effect would show."""

    __tablename__ = "kill_effects"

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int]


def _sqlite_pragmas(dbapi_connection: Any, _record: object) -> None:
    dbapi_connection.execute("PRAGMA journal_mode=WAL")
    dbapi_connection.execute("PRAGMA busy_timeout=30000")


def sqlite_engine(url: str) -> Engine:
    """A SQLite engine the test and the worker can share: WAL, waiting for the write lock."""
    engine = create_engine(url, connect_args={"timeout": 30})
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def declare(
    *, broker: Broker, sessions: sessionmaker[Session], started_log: Path, chunk_s: float
) -> ChunkedRun:
    """The run under test: each chunk logs "seq start-time", writes effects, then dawdles."""

    def process(ctx: ChunkContext, ids: list[int]) -> None:
        with started_log.open("a") as log:
            log.write(f"{ctx.seq} {time.time()}\n")
        ctx.session.add_all(Effect(item_id=i) for i in ids)
        ctx.session.flush()
        time.sleep(chunk_s)

    return ChunkedRun(
        name=NAME,
        enumerate=KeysetEnumerator(column=Item.id),
        process=process,
        session_factory=sessions,
        broker=broker,
        queue_name=QUEUE,
        chunk_size=50,
        time_limit=60_000,
        max_age=3_600_000,
        max_retries=3,
        min_backoff=100,
        max_backoff=1_000,
    )


if db_url := os.environ.get("CHUNKING_DB_URL"):
    # The worker's entry point has built the broker already (``app.broker:setup_broker``);
    # setup_broker is made once a process, so this is that same broker.
    kill_test_run = declare(
        broker=setup_broker(),
        sessions=sessionmaker(sqlite_engine(db_url), expire_on_commit=False),
        started_log=Path(os.environ["CHUNKING_STARTED_LOG"]),
        chunk_s=float(os.environ["CHUNKING_CHUNK_S"]),
    )
