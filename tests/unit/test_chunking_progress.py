"""Progress arithmetic, the backpressure policy, and a run over a datetime range."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import Engine, MetaData, create_engine, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import chunking
from chunking import (
    Backpressure,
    ChunkContext,
    ChunkedRun,
    ChunkOutcome,
    ChunkRun,
    DateTimeRange,
    Progress,
    RunStatus,
    SpanEnumerator,
    run_progress,
    start_run,
)
from chunking.models import UtcDateTime

T0 = dt.datetime(2024, 3, 1, 12, 0, tzinfo=dt.UTC)
US = dt.timedelta(microseconds=1)


def a_run(**fields: object) -> ChunkRun:
    defaults: dict[str, object] = {
        "id": 1,
        "name": "report_chunk",
        "status": RunStatus.RUNNING,
        "seq": 10,
        "processed": 1_000,
        "estimated_total": 4_000,
        "processed_at_resume": 0,
        "created_at": T0,
        "updated_at": T0 + dt.timedelta(seconds=9),
        "resumed_at": T0,
        "finished_at": None,
        "error": None,
    }
    return ChunkRun(**{**defaults, **fields})


def test_progress_of_a_running_run_gives_percent_rate_and_eta():
    # Given a run that did 1,000 of an estimated 4,000 items in its first 10 seconds
    progress = Progress.of(a_run(), now=T0 + dt.timedelta(seconds=10))

    # Then it is a quarter done at 100 items/s, with 30 s to go
    assert (progress.percent, progress.rate_per_s, progress.eta_s) == (25.0, 100.0, 30.0)


def test_the_rate_of_a_resumed_run_counts_only_since_it_resumed():
    # Given a run paused for an hour at 1,000 items, resumed, then 500 more items in 5 s
    resumed = T0 + dt.timedelta(hours=1)
    run = a_run(processed=1_500, processed_at_resume=1_000, resumed_at=resumed)

    progress = Progress.of(run, now=resumed + dt.timedelta(seconds=5))

    # Then the pause does not drag the rate down
    assert progress.rate_per_s == 100.0
    assert progress.eta_s == 25.0


def test_a_paused_run_has_no_eta_and_an_unknown_total_no_percent():
    paused = Progress.of(a_run(status=RunStatus.PAUSED), now=T0 + dt.timedelta(days=1))
    unknown = Progress.of(a_run(estimated_total=None), now=T0 + dt.timedelta(seconds=10))

    assert paused.eta_s is None and paused.rate_per_s == pytest.approx(1_000 / 9)
    assert unknown.percent is None and unknown.eta_s is None


@pytest.mark.parametrize(
    ("depth", "delay_ms"),
    [(0, 0), (100, 0), (101, 1_010), (200, 2_000), (250, 2_500), (10_000, 5_000)],
)
def test_the_backpressure_delay_grows_with_the_excess_over_the_mark_and_is_capped(depth, delay_ms):
    policy = Backpressure(
        target_queue="items",
        high_water=100,
        depth=lambda queue: 0,
        base_delay_ms=1_000,
        max_delay_ms=5_000,
    )

    assert policy.delay_for_depth(depth) == delay_ms


class Base(DeclarativeBase):
    metadata = MetaData()


class Login(Base):
    __tablename__ = "logins"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), index=True)


class Seen(Base):
    __tablename__ = "seen"

    id: Mapped[int] = mapped_column(primary_key=True)
    login_id: Mapped[int]


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = create_engine("sqlite://")
    chunking.metadata.create_all(engine)
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


def test_a_datetime_range_run_sees_every_row_once_even_on_microsecond_boundaries(engine):
    # Given logins on both sides of every one-minute boundary, to the microsecond
    minute = dt.timedelta(minutes=1)
    stamps = [T0 + k * minute + d for k in range(1, 30) for d in (-US, dt.timedelta(0), US)]
    with Session(engine) as session, session.begin():
        session.add_all(Login(at=at) for at in stamps)

    # And a run over [T0, T0 + 30 min) in one-minute chunks that marks what each chunk selects
    def process(ctx: ChunkContext, spans: list[DateTimeRange]) -> int:
        (span,) = spans
        ids = list(ctx.session.scalars(select(Login.id).where(span.where(Login.at))))
        ctx.session.add_all(Seen(login_id=i) for i in ids)
        return len(ids)

    chunked_run = ChunkedRun(
        name="logins_chunk",
        enumerate=SpanEnumerator(
            bounds=lambda params: DateTimeRange.from_json(params["window"]), step=minute
        ),
        process=process,
        session_factory=lambda: Session(engine),
        broker=StubBroker(),
        time_limit=10_000,
        max_age=60_000,
        max_retries=0,
        min_backoff=1_000,
        max_backoff=1_000,
    )
    window = DateTimeRange(start=T0, end=T0 + 30 * minute).to_json()
    with Session(engine) as session, session.begin():
        run_id = start_run(session, chunked_run, params={"window": window})

    # When its chunks are handled one after the other
    outcomes = [chunked_run.handle(run_id, seq) for seq in range(30)]

    # Then 30 chunks covered every login exactly once
    assert outcomes == [ChunkOutcome.ADVANCED] * 29 + [ChunkOutcome.DONE]
    with Session(engine) as session:
        assert session.scalar(select(func.count(Seen.id))) == len(stamps)
        assert session.scalar(select(func.count(func.distinct(Seen.login_id)))) == len(stamps)
        progress = run_progress(session, run_id)
        assert progress is not None and progress.processed == len(stamps)
        assert run_progress(session, 404) is None
