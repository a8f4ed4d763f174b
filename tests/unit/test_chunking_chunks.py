"""Chunk types: every value of a sparse, gappy set is covered exactly once, at any chunk size.

Each walk resumes from the previous chunk read back from JSON text, as a run resumes from the
cursor in its row, so the round trip itself is under test at every step.
"""

from __future__ import annotations

import datetime as dt
import json
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Integer, MetaData, create_engine, delete, insert, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from chunking import (
    DateRange,
    DateTimeRange,
    IntRange,
    Keyset,
    KeysetEnumerator,
    Span,
    SpanEnumerator,
    chunk_from_json,
)
from chunking.models import UtcDateTime

EPOCH = dt.datetime(2024, 2, 28, 23, 59, 59, 999_999, tzinfo=dt.UTC)
US = dt.timedelta(microseconds=1)
#: More chunks than any example needs: past this a walk is not advancing.
MAX_CHUNKS = 5_000


class Base(DeclarativeBase):
    metadata = MetaData()


class Row(Base):
    __tablename__ = "rows"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), index=True)


ENGINE = create_engine("sqlite://")
Base.metadata.create_all(ENGINE)


def via_json(value: dict[str, Any]) -> dict[str, Any]:
    """What a cursor looks like after a trip through a JSON column or message."""
    return json.loads(json.dumps(value))


def walk(bounds: Span[Any, Any], step: Any) -> Iterator[Span[Any, Any]]:
    """The chunks of ``bounds``, each found from the previous one read back from JSON."""
    chunk = bounds.chunk_after(None, step)
    for _ in range(MAX_CHUNKS):
        if chunk is None:
            return
        yield chunk
        chunk = bounds.chunk_after(chunk_from_json(via_json(chunk.to_json())), step)  # type: ignore[arg-type]
    raise AssertionError(f"no end after {MAX_CHUNKS} chunks: the cursor does not advance")


def assert_each_covered_once(values: list[Any], chunks: list[Span[Any, Any]]) -> None:
    ordered = sorted(values)
    hits: Counter[Any] = Counter()
    for chunk in chunks:
        # Ask `in` about the values bisection puts inside the chunk and their two neighbours.
        low = max(0, bisect_left(ordered, chunk.start) - 1)
        high = bisect_left(ordered, chunk.end) + 1
        hits.update(value for value in ordered[low:high] if value in chunk)
    assert hits == Counter(set(values)), "a value was missed or covered twice"
    for before, after in pairwise(chunks):
        assert before.end == after.start, f"gap or overlap between {before} and {after}"


@st.composite
def sparse_with_step(draw: st.DrawFn, *, scales: list[int]) -> tuple[list[int], int]:
    """Sparse offsets and a step giving at most ~300 chunks, at a coarse or a fine scale."""
    scale = draw(st.sampled_from(scales))
    offsets = draw(st.lists(st.integers(0, scale), min_size=1, max_size=50, unique=True))
    step = draw(st.integers(max(1, max(offsets) // 300), scale + 1))
    return offsets, step


@given(sparse=sparse_with_step(scales=[100, 20_000]))
@settings(deadline=None)
def test_int_ranges_cover_every_value_exactly_once(sparse):
    # Given a gappy set of ints (negative ones too) and any chunk size
    offsets, step = sparse
    values = [offset - 10_000 for offset in offsets]
    bounds = IntRange(start=min(values), end=max(values) + 1)

    # When the range is walked chunk by chunk through JSON
    chunks = list(walk(bounds, step))

    # Then every value lies in exactly one chunk, and the chunks tile the range
    assert_each_covered_once(values, chunks)
    assert chunks[0].start == bounds.start and chunks[-1].end == bounds.end
    assert all(len(range(c.start, c.end)) <= step for c in chunks)


@given(sparse=sparse_with_step(scales=[60, 12_000]))
@settings(deadline=None)
def test_date_ranges_cover_every_day_exactly_once(sparse):
    offsets, days = sparse
    values = [dt.date(1999, 12, 31) + dt.timedelta(days=offset) for offset in offsets]
    bounds = DateRange(start=min(values), end=max(values) + dt.timedelta(days=1))

    chunks = list(walk(bounds, dt.timedelta(days=days)))

    assert_each_covered_once(values, chunks)


#: Instants a few µs apart and instants seconds apart, as offsets in µs from EPOCH.
sparse_instants = sparse_with_step(scales=[2_000, 5_000_000])
zones = st.sampled_from(
    [dt.UTC, dt.timezone(dt.timedelta(hours=5, minutes=30)), dt.timezone(-dt.timedelta(hours=8))]
)


def with_boundaries(offsets: list[int], step_us: int) -> list[dt.datetime]:
    """The sparse instants plus the instants on and 1 µs before every chunk boundary."""
    top = max(offsets)
    boundaries = [k * step_us + d for k in range(1, top // step_us + 1) for d in (-1, 0)]
    return sorted({EPOCH + US * o for o in [*offsets, *(b for b in boundaries if 0 <= b <= top)]})


@given(sparse=sparse_instants, zone=zones)
@settings(deadline=None)
def test_datetime_ranges_cover_every_instant_exactly_once_to_the_microsecond(sparse, zone):
    # Given instants with microseconds, some on and just before chunk boundaries, and bounds
    # written in another time zone
    offsets, step_us = sparse
    values = with_boundaries(offsets, step_us)
    bounds = DateTimeRange(start=values[0].astimezone(zone), end=(values[-1] + US).astimezone(zone))

    # When walked in steps of any number of microseconds
    chunks = list(walk(bounds, dt.timedelta(microseconds=step_us)))

    # Then no instant is lost or doubled, and the chunks are UTC
    assert_each_covered_once(values, chunks)
    assert all(c.start.tzinfo is dt.UTC for c in chunks)


@given(sparse=sparse_instants)
@settings(max_examples=60, deadline=None)
def test_datetime_ranges_select_every_row_exactly_once_in_sql(sparse):
    # Given rows stamped at sparse instants, some on chunk boundaries
    offsets, step_us = sparse
    values = with_boundaries(offsets, step_us)
    with Session(ENGINE) as session, session.begin():
        session.execute(delete(Row))
        session.execute(insert(Row), [{"id": i, "at": at} for i, at in enumerate(values)])

    # When each chunk selects its rows with span.where(column)
    bounds = DateTimeRange(start=values[0], end=values[-1] + US)
    with Session(ENGINE) as session:
        selected = [
            row_id
            for chunk in walk(bounds, dt.timedelta(microseconds=step_us))
            for row_id in session.scalars(select(Row.id).where(chunk.where(Row.at)))
        ]

    # Then every row comes back exactly once
    assert sorted(selected) == list(range(len(values)))


@given(
    ids=st.lists(st.integers(1, 10**9), min_size=0, max_size=80, unique=True),
    size=st.integers(1, 50),
)
@settings(max_examples=60, deadline=None)
def test_keyset_enumeration_returns_every_sparse_id_once_in_order(ids, size):
    # Given a table whose ids are sparse and gappy
    with Session(ENGINE) as session, session.begin():
        session.execute(delete(Row))
        if ids:
            session.execute(insert(Row), [{"id": i, "at": EPOCH} for i in ids])

    # When it is enumerated in keyset batches, the cursor going through JSON each time
    enumerator = KeysetEnumerator(column=Row.id)
    seen: list[int] = []
    cursor = None
    with Session(ENGINE) as session:
        while (batch := enumerator(session, cursor, params={}, limit=size)) is not None:
            assert 0 < len(batch.items) <= size
            seen.extend(batch.items)
            cursor = via_json(batch.cursor)  # type: ignore[arg-type]
            if batch.last:
                break

        # Then each id comes exactly once, in order, and the estimate agreed
        assert enumerator.estimate(session, {}) == len(ids)
    assert seen == sorted(ids)


@given(sparse=sparse_with_step(scales=[300, 5_000]))
@settings(max_examples=60, deadline=None)
def test_int_ranges_select_every_sparse_id_once_in_sql(sparse):
    ids, step = sparse
    with Session(ENGINE) as session, session.begin():
        session.execute(delete(Row))
        session.execute(insert(Row), [{"id": i, "at": EPOCH} for i in ids])

    enumerator = SpanEnumerator(bounds=lambda p: IntRange.from_json(p["range"]), step=step)
    params = {"range": IntRange(start=min(ids), end=max(ids) + 1).to_json()}
    selected: list[int] = []
    cursor = None
    with Session(ENGINE) as session:
        while (batch := enumerator(session, cursor, params=params, limit=1)) is not None:
            (chunk,) = batch.items
            selected.extend(session.scalars(select(Row.id).where(chunk.where(Row.id))))
            cursor = via_json(batch.cursor)  # type: ignore[arg-type]

    assert sorted(selected) == sorted(ids)


@pytest.mark.parametrize(
    "chunk",
    [
        IntRange(start=-5, end=7),
        DateRange(start=dt.date(2024, 2, 28), end=dt.date(2024, 3, 1)),
        DateTimeRange(start=EPOCH, end=EPOCH + US),
        Keyset(after=None, limit=10),
        Keyset(after="user-0042", limit=3),
    ],
)
def test_every_chunk_round_trips_through_plain_json(chunk):
    assert chunk_from_json(via_json(chunk.to_json())) == chunk


def test_a_datetime_chunk_travels_as_a_utc_iso_string_with_microseconds():
    chunk = DateTimeRange(start=EPOCH, end=EPOCH + dt.timedelta(hours=1))

    assert chunk.to_json()["start"] == "2024-02-28T23:59:59.999999+00:00"


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: DateTimeRange(start=dt.datetime(2024, 1, 1), end=EPOCH), ValueError),
        (lambda: DateRange(start=EPOCH, end=EPOCH), TypeError),
        (lambda: IntRange(start=3, end=2), ValueError),
        (lambda: IntRange(start=0, end=9).chunk_after(None, 0), ValueError),
        (
            lambda: DateRange(start=dt.date(2024, 1, 1), end=dt.date(2024, 2, 1)).chunk_after(
                None, dt.timedelta(hours=12)
            ),
            ValueError,
        ),
        (lambda: Keyset(after=1, limit=0), ValueError),
        (lambda: chunk_from_json({"kind": "pickle"}), ValueError),
    ],
)
def test_chunks_refuse_what_would_silently_miscount(make, error):
    with pytest.raises(error):
        make()
