"""The user's half of a chunked run: "which items come after this cursor".

An enumerator gets the run's cursor (None on the first chunk) and returns the next
:class:`Batch`: the items to process and the cursor that points just past them. The framework
stores that cursor in the same transaction as the items' effects, so a resumed run continues
exactly where the last committed chunk ended. Two ready-made enumerators cover the usual
cases: :class:`KeysetEnumerator` (sparse ids) and :class:`SpanEnumerator` (int, date and
datetime ranges).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol

from sqlalchemy import ColumnExpressionArgument, func, select
from sqlalchemy.orm import Session

from chunking.columns import SqlColumn
from chunking.jsonvalue import JSONValue
from chunking.keyset import Keyset
from chunking.spans import B, S, Span

Params = Mapping[str, Any]


@dataclass(frozen=True)
class Batch:
    """One chunk of work: its items, the cursor just past them, and whether it is the last."""

    items: Sequence[Any]
    cursor: JSONValue
    last: bool = False


class Enumerator(Protocol):
    """Return the batch after ``cursor`` (None when nothing is left), at most ``limit`` items."""

    def __call__(
        self, session: Session, cursor: JSONValue, /, *, params: Params, limit: int
    ) -> Batch | None: ...


class Estimator(Protocol):
    """Return how many items a run with ``params`` will process, for progress and ETA."""

    def __call__(self, session: Session, params: Params, /) -> int | None: ...


class KeysetEnumerator:
    """Items are the keys of ``column`` (ids), ``limit`` at a time, filtered by ``where``.

    The cursor is a :class:`Keyset` dict holding the last key processed. The batch that comes
    back short is the last one, so a run ends without an extra empty chunk.
    """

    def __init__(
        self,
        *,
        column: SqlColumn,
        where: Callable[[Params], Sequence[ColumnExpressionArgument[bool]]] | None = None,
    ) -> None:
        self.column = column
        self.where = where

    def __call__(
        self, session: Session, cursor: JSONValue, *, params: Params, limit: int
    ) -> Batch | None:
        # The stored cursor keeps its position; the limit is today's chunk size.
        after = Keyset.from_json(cursor).after if isinstance(cursor, dict) else None
        chunk = Keyset(after=after, limit=limit)
        keys = list(session.scalars(chunk.select(self.column, *self._conditions(params))))
        if not keys:
            return None
        return Batch(items=keys, cursor=chunk.following(keys[-1]).to_json(), last=len(keys) < limit)

    def estimate(self, session: Session, params: Params) -> int:
        """How many keys the run will walk (counted once, when it starts)."""
        statement = select(func.count(self.column)).where(*self._conditions(params))
        return int(session.scalar(statement) or 0)

    def _conditions(self, params: Params) -> Sequence[ColumnExpressionArgument[bool]]:
        return self.where(params) if self.where else ()


class SpanEnumerator(Generic[B, S]):
    """Items are consecutive sub-ranges of ``step`` of the range ``bounds(params)``, one a batch.

    The cursor is the last sub-range processed, as its JSON dict. ``limit`` does not apply:
    the step sets the size, and the processor usually selects rows with ``span.where(column)``.
    """

    def __init__(self, *, bounds: Callable[[Params], Span[B, S]], step: S) -> None:
        self.bounds: Callable[[Params], Span[B, S]] = bounds
        self.step: S = step

    def __call__(
        self, session: Session, cursor: JSONValue, *, params: Params, limit: int
    ) -> Batch | None:
        bounds = self.bounds(params)
        previous = type(bounds).from_json(cursor) if isinstance(cursor, dict) else None
        chunk = bounds.chunk_after(previous, self.step)
        if chunk is None:
            return None
        return Batch(items=[chunk], cursor=chunk.to_json(), last=chunk.end >= bounds.end)
