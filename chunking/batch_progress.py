"""A batch as a reader wants it: its counts, its state and times, its failed members."""

from __future__ import annotations

import datetime as dt
import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass


class FailureKind(enum.StrEnum):
    """Why a member counts as failed (``failed:<kind>`` in the batch's counts)."""

    DEAD_LETTERED = "dead_lettered"  # out of retries, or refused by a middleware for good
    EXPIRED = "expired"  # older than its ``max_age`` (Celery's ``expires``) when it came up
    CANCELLED = "cancelled"  # revoked by an operator, or pending when its batch was cancelled
    FAILED = "failed"  # reported failed by its host (a job that failed, a child batch)


@dataclass(frozen=True)
class BatchProgress:
    """A snapshot of one batch.

    ``pending`` counts members added and not yet done (none once the batch completed);
    ``total`` is known once the batch is sealed. ``state`` is ``open`` (members may be added),
    ``sealed``, ``firing`` (complete, its callbacks being enqueued) or ``fired``.
    """

    batch_id: str
    name: str
    state: str
    added: int
    total: int | None
    succeeded: int
    failed: int
    failed_by_kind: Mapping[str, int]
    pending: int
    cancelled: bool
    parent: tuple[str, int] | None
    created_at: dt.datetime
    sealed_at: dt.datetime | None
    completed_at: dt.datetime | None
    cancelled_at: dt.datetime | None

    @property
    def complete(self) -> bool:
        """Whether every member is done (or the batch was cancelled)."""
        return self.state in ("firing", "fired")

    @classmethod
    def of(cls, batch_id: str, fields: Mapping[bytes, bytes]) -> BatchProgress:
        """The progress a batch's meta hash (``HGETALL``) describes."""
        meta = {key.decode(): value.decode() for key, value in fields.items()}
        total = int(meta["total"]) if "total" in meta else None
        added = int(meta["added"])
        done = int(meta["done"])
        parent = json.loads(meta["parent"]) if "parent" in meta else None
        state = meta["state"]
        return cls(
            batch_id=batch_id,
            name=meta.get("name", ""),
            state=state,
            added=added,
            total=total,
            succeeded=int(meta["succeeded"]),
            failed=int(meta["failed"]),
            failed_by_kind={
                key.removeprefix("failed:"): int(value)
                for key, value in meta.items()
                if key.startswith("failed:")
            },
            pending=0 if state in ("firing", "fired") else max(0, (total or added) - done),
            cancelled="cancelled_ms" in meta,
            parent=(str(parent[0]), int(parent[1])) if parent else None,
            created_at=_at(int(meta["created_ms"])),
            sealed_at=_time(meta.get("sealed_ms")),
            completed_at=_time(meta.get("completed_ms")),
            cancelled_at=_time(meta.get("cancelled_ms")),
        )


@dataclass(frozen=True)
class FailedMember:
    """A member that failed for good: its ordinal, its message id (if it was a message), the
    kind of failure and the reason (redacted and capped by the host's ``describe``)."""

    ordinal: int
    message_id: str
    kind: str
    reason: str

    @classmethod
    def of(cls, ordinal: bytes | int, record: bytes) -> FailedMember:
        """The member a failures-hash entry describes."""
        fields = json.loads(record)
        return cls(int(ordinal), fields["message_id"], fields["kind"], fields["reason"])


def _at(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def _time(ms: str | None) -> dt.datetime | None:
    return None if ms is None else _at(int(ms))
