"""Batches as an operator reads them: progress with rate, ETA and percent, failed members a
page at a time, and the members the control plane takes out of a queue settled as cancelled.

The kernel imports no workload, so every function takes the store (``chunking.Batches``) as a
parameter: the edges pass fintask's, ``pipelines.batches.BATCHES``.

The rate counts members done per second since the batch was created. The library records no
time for a batch's first member (its meta hash keeps only created, sealed, completed and
cancelled), and a batch is created right before its first page is added (``create`` then
``add``, or a chunked run's first chunk), so the creation is the nearest moment it keeps to
"work began". A batch that sat open and empty for a while shows a lower rate than its workers
reach, never a higher one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from app.cursors import InvalidCursor, decode_cursor, encode_cursor
from app.timestamps import rfc3339
from chunking import Batches, FailureKind, UnknownBatch
from chunking.batch_progress import BatchProgress, FailedMember
from chunking.batches import member_of

#: Failed members on one page, about (``HSCAN``'s ``COUNT`` is a hint, not a bound).
FAILED_PAGE = 100

#: The reason a member taken out of its queue before any worker saw it is kept with.
TAKEN_OUT = "taken out of its queue by an operator before it ran ({how})"


@dataclass(frozen=True)
class BatchView:
    """A batch's progress and how fast it goes.

    ``done`` is succeeded + failed. ``rate_per_s`` is members done per second since the batch
    was created (until now, or until it completed), None before the first one or for a
    cancelled batch (its cancelled members were counted at once, not worked through).
    ``eta_s`` is pending / rate for a sealed batch with members pending (None while its total
    is unknown, open, or there is no rate yet; 0 once complete). ``percent`` is done / total,
    None while the batch is open (its total is not known).
    """

    progress: BatchProgress
    done: int
    percent: float | None
    rate_per_s: float | None
    eta_s: float | None

    @classmethod
    def of(cls, progress: BatchProgress, *, now: dt.datetime) -> BatchView:
        """The view of ``progress`` as of ``now`` (aware UTC)."""
        done = progress.succeeded + progress.failed
        rate = _rate_per_s(progress, done, now)
        return cls(progress, done, _percent(progress, done), rate, _eta_s(progress, rate))

    def as_dict(self) -> dict[str, Any]:
        """The view as the API answers it: timestamps in RFC 3339."""
        shown = asdict(self.progress)
        for key in ("created_at", "sealed_at", "completed_at", "cancelled_at"):
            shown[key] = rfc3339(shown[key])
        shown["parent"] = list(self.progress.parent) if self.progress.parent else None
        shown["failed_by_kind"] = dict(self.progress.failed_by_kind)
        shown["complete"] = self.progress.complete
        return {
            **shown,
            "done": self.done,
            "percent": self.percent,
            "rate_per_s": self.rate_per_s,
            "eta_s": self.eta_s,
        }


@dataclass(frozen=True)
class FailedPage:
    """A page of a batch's failed members, by ordinal; ``next_cursor`` None on the last."""

    items: list[FailedMember]
    next_cursor: str | None


def _rate_per_s(progress: BatchProgress, done: int, now: dt.datetime) -> float | None:
    if progress.cancelled or done <= 0:
        return None
    until = progress.completed_at or now
    elapsed_s = (until - progress.created_at).total_seconds()
    return done / elapsed_s if elapsed_s > 0 else None


def _percent(progress: BatchProgress, done: int) -> float | None:
    if progress.complete:
        return 100.0
    if progress.total is None:
        return None
    return 100.0 if progress.total == 0 else min(100.0, 100.0 * done / progress.total)


def _eta_s(progress: BatchProgress, rate: float | None) -> float | None:
    if progress.complete:
        return 0.0
    if progress.state != "sealed" or progress.pending <= 0 or not rate:
        return None
    return progress.pending / rate


def batch_view(batches: Batches, batch_id: str, *, now: dt.datetime) -> BatchView:
    """Batch ``batch_id`` as of ``now``; ``UnknownBatch`` naming it if it is not kept."""
    progress = batches.progress(batch_id)
    if progress is None:
        raise UnknownBatch(
            f"no batch {batch_id!r}: never created, or expired a week after it completed"
        )
    return BatchView.of(progress, now=now)


def recent_batches(batches: Batches, *, now: dt.datetime, limit: int = 50) -> list[BatchView]:
    """The ``limit`` most recently created batches still kept, newest first."""
    return [BatchView.of(progress, now=now) for progress in batches.recent(limit=limit)]


def failed_page(
    batches: Batches, batch_id: str, *, cursor: str | None, count: int = FAILED_PAGE
) -> FailedPage:
    """A page of batch ``batch_id``'s failed members (reasons as the library kept them:
    redacted by fintask's ``describe``). ``cursor`` is a ``next_cursor`` this list handed out
    (``InvalidCursor`` otherwise); ``UnknownBatch`` if the batch is not kept."""
    if batches.progress(batch_id) is None:
        raise UnknownBatch(
            f"no batch {batch_id!r}: never created, or expired a week after it completed"
        )
    scan = 0 if cursor is None else _scan_cursor(decode_cursor(cursor))
    next_scan, members = batches.failed_members(batch_id, cursor=scan, count=count)
    return FailedPage(members, encode_cursor({"scan": next_scan}) if next_scan else None)


def _scan_cursor(key: object) -> int:
    scan = key.get("scan") if isinstance(key, dict) else None
    if not isinstance(scan, int) or isinstance(scan, bool) or scan <= 0:
        raise InvalidCursor()
    return scan


@dataclass(frozen=True)
class _Payload:
    """What ``member_of`` reads of a message: its keyword arguments."""

    kwargs: Mapping[str, Any]


def settle_taken_out(
    batches: Batches, messages: Iterable[Mapping[str, Any] | None], *, how: str
) -> int:
    """Record as cancelled every batch member among ``messages`` (decoded payloads) that the
    control plane took out of a queue before any worker fetched it; how many were members.

    No worker will ever see them, so without this their batch would wait for them until it is
    cancelled. One script call per member (``Batches.settle``): recording one twice changes
    nothing, so a member a worker also recorded counts once.
    """
    settled = 0
    for message in messages:
        kwargs = message.get("kwargs") if message is not None else None
        member = member_of(_Payload(kwargs)) if isinstance(kwargs, Mapping) else None
        if member is None:
            continue
        batch_id, ordinal = member
        message_id = message.get("message_id") if message is not None else None
        batches.settle(
            batch_id,
            ordinal,
            failed=FailureKind.CANCELLED,
            reason=TAKEN_OUT.format(how=how),
            message_id=str(message_id or ""),
        )
        settled += 1
    return settled
