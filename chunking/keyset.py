"""Keyset chunks over sparse keys: ``WHERE key > :after ORDER BY key LIMIT :n``, never OFFSET.

OFFSET makes the database walk every skipped row again, so chunk k of a million-row table
costs O(k); a keyset chunk costs one index range scan whatever its position, and its cursor
(the last key seen) survives rows being added or deleted behind it. Gaps in the keys (deleted
users, sequence jumps) cost nothing: a chunk is always ``limit`` keys, never an empty range.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Self

from sqlalchemy import ColumnExpressionArgument, Select, select

from chunking.columns import SqlColumn
from chunking.jsonvalue import JSONValue

#: A key a keyset walks: an integer id or an orderable string (a UUID, a natural key).
Key = int | str


@dataclass(frozen=True)
class Keyset:
    """The next ``limit`` keys greater than ``after`` (from the smallest when ``after`` is None)."""

    after: Key | None
    limit: int

    kind: ClassVar[str] = "keyset"

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit <= 0:
            raise ValueError(f"a keyset limit is a positive int, not {self.limit!r}")

    def select(self, column: SqlColumn, *where: ColumnExpressionArgument[bool]) -> Select[Any]:
        """The query for this chunk's keys, in key order."""
        statement = select(column).where(*where).order_by(column).limit(self.limit)
        if self.after is not None:
            statement = statement.where(column > self.after)
        return statement

    def following(self, last: Key) -> Self:
        """The chunk after one whose greatest key was ``last``."""
        return replace(self, after=last)

    def to_json(self) -> dict[str, JSONValue]:
        """A plain JSON dict: ``{"kind": "keyset", "after": ..., "limit": ...}``."""
        return {"kind": self.kind, "after": self.after, "limit": self.limit}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        """The chunk :meth:`to_json` wrote; a dict of another kind is a ``ValueError``."""
        if data.get("kind") != cls.kind:
            raise ValueError(f"not a keyset chunk: {data!r}")
        return cls(after=data["after"], limit=data["limit"])
