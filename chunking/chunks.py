"""Every chunk type, and reading any of them back from its JSON dict."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chunking.keyset import Keyset
from chunking.spans import DateRange, DateTimeRange, IntRange

Chunk = IntRange | DateRange | DateTimeRange | Keyset

_KINDS: dict[str, type[Chunk]] = {c.kind: c for c in (IntRange, DateRange, DateTimeRange, Keyset)}


def chunk_from_json(data: Mapping[str, Any]) -> Chunk:
    """The chunk a ``to_json()`` dict describes, whatever its kind."""
    try:
        chunk_type = _KINDS[data["kind"]]
    except (KeyError, TypeError):
        raise ValueError(f"not a chunk: {data!r}") from None
    return chunk_type.from_json(data)
