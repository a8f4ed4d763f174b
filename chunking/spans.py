"""Half-open ranges ``[start, end)`` of integers, dates and aware UTC datetimes.

Half-open is what makes chunking exact: the end of one chunk is the start of the next, so
consecutive chunks never overlap and never leave a hole, not even a sub-second one between
``23:59:59`` and midnight. Datetimes keep their microseconds and travel as ISO 8601 strings
in UTC, so a chunk round-trips through plain JSON (the Chunkificator needed pickle for that).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Self, TypeVar

from sqlalchemy import ColumnElement, and_

from chunking.columns import SqlColumn
from chunking.jsonvalue import JSONValue

B = TypeVar("B", int, dt.date, dt.datetime)
S = TypeVar("S", int, dt.timedelta)


@dataclass(frozen=True)
class Span(Generic[B, S]):
    """The values ``start <= v < end``; subclasses fix the type of the bounds and the step."""

    start: B
    end: B

    kind: ClassVar[str]

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", self._check_bound(self.start))
        object.__setattr__(self, "end", self._check_bound(self.end))
        if self.end < self.start:
            raise ValueError(f"{type(self).__name__} ends before it starts: {self!r}")

    def __contains__(self, value: object) -> bool:
        return bool(self.start <= value < self.end)  # type: ignore[operator]

    @property
    def is_empty(self) -> bool:
        """True when no value lies in the range (``start == end``)."""
        return self.start == self.end

    def where(self, column: SqlColumn) -> ColumnElement[bool]:
        """The SQL condition ``start <= column < end`` selecting this range's rows."""
        return and_(column >= self.start, column < self.end)

    def chunk_after(self, previous: Self | None, step: S) -> Self | None:
        """The chunk of at most ``step`` that follows ``previous`` (the first when None).

        None once ``previous`` reaches the end. Each chunk starts exactly where the previous
        one ended, which is what rules out gaps and overlaps.
        """
        start = self.start if previous is None else previous.end
        if start >= self.end:
            return None
        end = min(self._advance(start, self._check_step(step)), self.end)
        return type(self)(start=start, end=end)

    def chunks(self, step: S) -> Iterator[Self]:
        """Every chunk of at most ``step`` covering this range, in order."""
        chunk = self.chunk_after(None, step)
        while chunk is not None:
            yield chunk
            chunk = self.chunk_after(chunk, step)

    def to_json(self) -> dict[str, JSONValue]:
        """A plain JSON dict: ``{"kind": ..., "start": ..., "end": ...}``."""
        return {"kind": self.kind, "start": self._encode(self.start), "end": self._encode(self.end)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        """The range :meth:`to_json` wrote; a dict of another kind is a ``ValueError``."""
        if data.get("kind") != cls.kind:
            raise ValueError(f"not a {cls.kind} range: {data!r}")
        return cls(start=cls._decode(data["start"]), end=cls._decode(data["end"]))

    @classmethod
    def _check_bound(cls, value: Any) -> B:
        raise NotImplementedError

    @classmethod
    def _check_step(cls, step: Any) -> S:
        raise NotImplementedError

    @staticmethod
    def _advance(value: B, step: S) -> B:
        return value + step  # type: ignore[operator]

    @staticmethod
    def _encode(value: B) -> JSONValue:
        raise NotImplementedError

    @staticmethod
    def _decode(value: Any) -> B:
        raise NotImplementedError


@dataclass(frozen=True)
class IntRange(Span[int, int]):
    """Integers ``start <= i < end``; the step is a count of integers."""

    kind: ClassVar[str] = "int"

    @classmethod
    def _check_bound(cls, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"IntRange bounds are ints, not {value!r}")
        return value

    @classmethod
    def _check_step(cls, step: Any) -> int:
        if isinstance(step, bool) or not isinstance(step, int) or step <= 0:
            raise ValueError(f"an IntRange step is a positive int, not {step!r}")
        return step

    @staticmethod
    def _encode(value: int) -> JSONValue:
        return value

    @staticmethod
    def _decode(value: Any) -> int:
        return int(value)


@dataclass(frozen=True)
class DateRange(Span[dt.date, dt.timedelta]):
    """Calendar dates ``start <= d < end``; the step is a whole number of days."""

    kind: ClassVar[str] = "date"

    @classmethod
    def _check_bound(cls, value: Any) -> dt.date:
        # A datetime is a date to isinstance; here it would silently compare wrongly.
        if isinstance(value, dt.datetime) or not isinstance(value, dt.date):
            raise TypeError(f"DateRange bounds are dates, not {value!r}")
        return value

    @classmethod
    def _check_step(cls, step: Any) -> dt.timedelta:
        if not isinstance(step, dt.timedelta) or step.days <= 0 or step % dt.timedelta(days=1):
            raise ValueError(f"a DateRange step is a positive whole number of days, not {step!r}")
        return step

    @staticmethod
    def _encode(value: dt.date) -> JSONValue:
        return value.isoformat()

    @staticmethod
    def _decode(value: Any) -> dt.date:
        return dt.date.fromisoformat(value)


@dataclass(frozen=True)
class DateTimeRange(Span[dt.datetime, dt.timedelta]):
    """Aware instants ``start <= t < end``, kept in UTC to the microsecond."""

    kind: ClassVar[str] = "datetime"

    @classmethod
    def _check_bound(cls, value: Any) -> dt.datetime:
        if not isinstance(value, dt.datetime):
            raise TypeError(f"DateTimeRange bounds are datetimes, not {value!r}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: DateTimeRange bounds are aware")
        return value.astimezone(dt.UTC)

    @classmethod
    def _check_step(cls, step: Any) -> dt.timedelta:
        if not isinstance(step, dt.timedelta) or step <= dt.timedelta(0):
            raise ValueError(f"a DateTimeRange step is a positive timedelta, not {step!r}")
        return step

    @staticmethod
    def _encode(value: dt.datetime) -> JSONValue:
        return value.isoformat(timespec="microseconds")

    @staticmethod
    def _decode(value: Any) -> dt.datetime:
        return dt.datetime.fromisoformat(value)
