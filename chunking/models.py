"""The run table: one row per chunked run, holding its cursor, its fencing sequence and progress.

It lives on chunking's own ``MetaData`` so the library imports nothing of its host; the host
adds :data:`metadata` to the list its Alembic environment compares and migrates. The naming
convention gives constraints stable names on every backend, so migrations can refer to them.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: Integer ids that autoincrement everywhere: BIGINT, and SQLite's INTEGER rowid alias.
BigId = BigInteger().with_variant(Integer(), "sqlite")

#: Constraint names Alembic can refer to on every backend (a host may share them).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class ChunkingBase(DeclarativeBase):
    """Declarative base of chunking's tables, with constraint names Alembic can refer to."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


#: The metadata a host passes to Alembic next to its own (``target_metadata``).
metadata = ChunkingBase.metadata


def utcnow() -> dt.datetime:
    """The current time as an aware UTC datetime."""
    return dt.datetime.now(dt.UTC)


class UtcDateTime(TypeDecorator[dt.datetime]):
    """An aware UTC datetime on every backend (SQLite itself keeps no time zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: chunking stores aware UTC timestamps")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class RunStatus(enum.StrEnum):
    """Where a run stands. Only a ``running`` run accepts chunk messages."""

    RUNNING = "running"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    DONE = "done"
    FAILED = "failed"


#: The states a run never leaves.
FINISHED_STATUSES = (RunStatus.CANCELLED, RunStatus.DONE)

_STATUS_VALUES = ", ".join(f"'{status.value}'" for status in RunStatus)


class ChunkRun(ChunkingBase):
    """One run of a :class:`~chunking.run.ChunkedRun`.

    ``seq`` is the fencing token: the chunk message for a run carries ``(id, seq)`` and only a
    message whose ``seq`` matches, on a ``running`` row, may advance it (compare-and-set), so a
    redelivered or duplicated message can never fork the run into two chains.
    """

    __tablename__ = "chunking_runs"
    __table_args__ = (CheckConstraint(f"status IN ({_STATUS_VALUES})", name="status"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    #: Optional identity (``weekly-report:2026-W48``): one run per key, however often started.
    key: Mapped[str | None] = mapped_column(String(200), unique=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    cursor: Mapped[Any] = mapped_column(JSON(none_as_null=True), nullable=True)
    seq: Mapped[int] = mapped_column(default=0)
    status: Mapped[str] = mapped_column(String(20), default=RunStatus.RUNNING, index=True)
    processed: Mapped[int] = mapped_column(BigInteger, default=0)
    estimated_total: Mapped[int | None] = mapped_column(BigInteger)
    #: Consecutive failures of the current chunk; past the actor's max_retries the run fails.
    failures: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    #: When the run last started or resumed, and its count then: the base of rate and ETA.
    resumed_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    processed_at_resume: Mapped[int] = mapped_column(BigInteger, default=0)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    #: The batch that fans the run's members in (``ChunkedRun(fan_in=...)``), if any.
    batch_id: Mapped[str | None] = mapped_column(String(64))
    #: Members the committed chunks sent: the next chunk's first ordinal in the batch.
    members: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    #: What the host recorded when the run's batch completed (``record_summary``), once.
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
