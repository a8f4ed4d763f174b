"""A chunked run: the framework's half of "enumerate items after a cursor, process them".

The user supplies an :class:`~chunking.enumerators.Enumerator` ("which items come after this
cursor") and a :class:`Processor` ("what to do with these items"); :class:`ChunkedRun` owns
the rest, in the spirit of Shopify's job-iteration and Sidekiq's iterable jobs:

- One chunk per message. The message carries only ``(run_id, seq)``; the cursor lives in the
  run row, so a message is a few bytes whatever the run.
- Fencing. A chunk first compare-and-sets the run row (``seq = seq + 1 WHERE seq = :seq AND
  status = 'running'``). A redelivered or duplicated message for a ``seq`` that already
  advanced matches no row and is acknowledged and ignored, so a run is always one chain.
- Checkpointing. The processor runs in the same transaction as the claim and the cursor
  update; its database effects commit with the checkpoint or not at all. Item messages it
  queues with :meth:`ChunkContext.enqueue`, and the next chunk's message, go to the
  after-commit sender, so nothing is sent for work that did not commit.
- Interruption and resumption. A worker killed mid-chunk rolls the chunk back; the broker
  redelivers its message, whose ``seq`` still matches, and the chunk is redone from the last
  committed cursor. Effects outside the transaction (an e-mail, an HTTP call) may therefore
  happen twice and must be idempotent: key them by ``(run_id, item)`` or do them in an item
  actor that is. Shutdown needs no hook: a chunk is the unit of interruption.
- Pacing and backpressure: see :mod:`chunking.pacing`.
- Fan-in (``fan_in=FanIn(...)``): the run gets a batch (``chunking.batches``) when it starts;
  every message a chunk enqueues, and every unit of work it numbers with
  :meth:`ChunkContext.member`, is a member, numbered from the run row's ``members`` in the
  chunk's transaction, so a chunk redone after a rollback numbers its members again from the
  same ordinal; the last chunk seals the batch with the run's total, and its callbacks fire
  when the last member is done, with ``run_id`` among their arguments.
"""

from __future__ import annotations

import enum
import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import dramatiq
from dramatiq import Broker, Message
from dramatiq.threading import Interrupt
from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from chunking.after_commit import EnqueueAfterCommit, SendAfterCommit
from chunking.batches import Batches, Callback, member_kwargs
from chunking.depth import DepthSource, queue_depth_for
from chunking.enumerators import Enumerator, Estimator
from chunking.jsonvalue import JSONValue
from chunking.models import ChunkRun, RunStatus, utcnow
from chunking.pacing import Backpressure

#: Declares an actor from keyword options, as ``dramatiq.actor(actor_name=..., queue_name=...,
#: **options)`` does: returns the decorator that declares the function.
DeclareActor = Callable[..., Callable[[Callable[..., None]], "dramatiq.Actor[..., None]"]]

#: The longest error text kept on a run row.
MAX_ERROR_LENGTH = 2_000


class ChunkOutcome(enum.StrEnum):
    """What handling one chunk message did."""

    ADVANCED = "advanced"  # processed a chunk and scheduled the next
    DONE = "done"  # processed the last chunk (or found none) and finished the run
    STALE = "stale"  # not the run's current (run_id, seq), or the run is not running: ignored
    DEFERRED = "deferred"  # the target queue is above its high-water mark: same seq, later


@dataclass(frozen=True)
class FanIn:
    """A chunked run's batch: its callbacks (each also gets ``run_id``) and where it is kept."""

    batches: Batches
    on_success: Callback | None = None
    on_failure: Callback | None = None
    on_complete: Callback | None = None

    def create(self, name: str, run_id: int) -> str:
        """Create the batch of run ``run_id``; return its id."""
        return self.batches.create(
            name=f"{name}:{run_id}",
            on_success=_with_run(self.on_success, run_id),
            on_failure=_with_run(self.on_failure, run_id),
            on_complete=_with_run(self.on_complete, run_id),
        )


def _with_run(callback: Callback | None, run_id: int) -> Callback | None:
    if callback is None:
        return None
    kwargs = {**callback.kwargs, "run_id": run_id}
    return Callback(callback.actor_name, callback.queue_name, kwargs, callback.options)


@dataclass
class ChunkContext:
    """What a processor sees: the chunk's transaction, its run, and a way to send messages.

    In a run with a fan-in, every message it enqueues is a member of the run's batch, and
    :meth:`member` numbers any other unit of work the chunk makes a member.
    """

    session: Session
    run_id: int
    seq: int
    params: Mapping[str, Any]
    cursor: JSONValue
    outgoing: list[Message[Any]] = field(default_factory=list)
    batch_id: str | None = None
    first_ordinal: int = 0
    members: int = 0

    def enqueue(self, *messages: Message[Any]) -> None:
        """Send per-item messages once this chunk commits (in bulk, not one by one)."""
        if self.batch_id is None:
            self.outgoing.extend(messages)
            return
        for message in messages:
            marker = self.member()
            self.outgoing.append(message.copy(kwargs={**message.kwargs, **(marker or {})}))

    def member(self) -> dict[str, Any] | None:
        """The keyword argument that makes the next unit of work a member of the run's batch
        (``batch_member``), or None in a run without a fan-in. Ask only for work that will
        be sent or reported: a member never reported keeps the batch from completing."""
        if self.batch_id is None:
            return None
        ordinal = self.first_ordinal + self.members
        self.members += 1
        return member_kwargs(self.batch_id, ordinal)


class Processor(Protocol):
    """Do the work for ``items`` (a batch's items) inside ``ctx.session``'s transaction.

    Return how many items count as processed (None: all of them). ``items`` is typed ``Any``
    so a processor may declare what its enumerator yields (``list[int]``, ``list[DateRange]``).
    It must not commit or roll back: the framework's checkpoint shares its transaction.
    """

    def __call__(self, ctx: ChunkContext, items: Any, /) -> int | None: ...


class ChunkedRun:
    """Declares the chunk actor ``name`` on ``broker`` (the global broker by default).

    Durations are in milliseconds, as in Dramatiq. ``time_limit``, ``max_age`` (Celery's
    ``expires``), ``max_retries``, ``min_backoff`` and ``max_backoff`` are the chunk actor's
    options and have no defaults: a chunk that relies on Dramatiq's (10 minutes, 20 retries
    over about a month) is rarely what anyone meant. After ``max_retries`` consecutive
    failures of one chunk the run is marked ``failed`` (``resume_run`` restarts that chunk).
    A retried message keeps its age, so give ``max_age`` room for the whole backoff: a chunk
    message dropped by the age limit leaves its run ``running`` until ``resume_run``.

    ``session_factory`` makes the session each chunk runs in (the host's own). Set
    ``high_water`` and ``target_queue`` to hold chunks back while the queue the items go to is
    deeper than the mark; ``queue_depth`` reads that depth (the broker's own by default).
    ``send_after_commit`` defaults to enqueueing right after commit; plug an outbox there.
    ``fan_in`` gives the run a batch whose callbacks fire once every member is done.
    ``declare`` declares the chunk actor (``dramatiq.actor`` on ``broker`` by default): a host
    with its own actor decorator, or one that builds its broker later, passes that instead.
    """

    def __init__(
        self,
        *,
        name: str,
        enumerate: Enumerator,
        process: Processor,
        session_factory: Callable[[], Session],
        time_limit: int,
        max_age: int,
        max_retries: int,
        min_backoff: int,
        max_backoff: int,
        queue_name: str = "default",
        chunk_size: int = 100,
        pause_ms: int = 0,
        estimate: Estimator | None = None,
        target_queue: str | None = None,
        high_water: int | None = None,
        queue_depth: DepthSource | None = None,
        backpressure_delay_ms: int = 1_000,
        max_backpressure_delay_ms: int = 30_000,
        send_after_commit: SendAfterCommit | None = None,
        fan_in: FanIn | None = None,
        broker: Broker | None = None,
        declare: DeclareActor | None = None,
        actor_options: Mapping[str, Any] | None = None,
    ) -> None:
        if chunk_size <= 0 or pause_ms < 0 or max_retries < 0:
            raise ValueError("chunk_size must be > 0, pause_ms and max_retries >= 0")
        if (target_queue is None) != (high_water is None):
            raise ValueError("backpressure needs both target_queue and high_water")
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}.{name}")
        self.name = name
        self.enumerator = enumerate
        self.processor = process
        self.session_factory = session_factory
        self.chunk_size = chunk_size
        self.pause_ms = pause_ms
        self.max_retries = max_retries
        self.estimate = estimate
        self._send_after_commit = send_after_commit
        self.fan_in = fan_in
        self.backpressure = None
        if target_queue is not None and high_water is not None:
            self.backpressure = Backpressure(
                target_queue=target_queue,
                high_water=high_water,
                depth=queue_depth or self._broker_queue_depth,
                base_delay_ms=backpressure_delay_ms,
                max_delay_ms=max_backpressure_delay_ms,
            )

        def chunk(run_id: int, seq: int, **kwargs: Any) -> None:
            self.handle(run_id, seq)

        chunk.__name__ = chunk.__qualname__ = name
        options = {
            "time_limit": time_limit,
            "max_age": max_age,
            "max_retries": max_retries,
            "min_backoff": min_backoff,
            "max_backoff": max_backoff,
            **(actor_options or {}),
        }
        # The decorator form, not Actor(...): it checks every option against the broker's
        # middleware, so a misspelt or unsupported option fails at declaration.
        declare = declare or functools.partial(dramatiq.actor, broker=broker)
        self.actor: dramatiq.Actor[..., None] = declare(
            actor_name=name, queue_name=queue_name, **options
        )(chunk)

    @property
    def broker(self) -> Broker:
        """The broker the chunk actor is declared on (it may be declared before it is built)."""
        return self.actor.broker

    @functools.cached_property
    def send_after_commit(self) -> SendAfterCommit:
        """The host's sender, or enqueueing on the broker right after commit."""
        return self._send_after_commit or EnqueueAfterCommit(broker=self.broker)

    def _broker_queue_depth(self, queue_name: str) -> int:
        return queue_depth_for(self.broker)(queue_name)

    def message(self, run_id: int, seq: int) -> Message[Any]:
        """The chunk message for ``(run_id, seq)``: two small scalars, nothing else."""
        return self.actor.message_with_options(kwargs={"run_id": run_id, "seq": seq})

    def send_chunk(
        self, session: Session, run_id: int, seq: int, *, delay_ms: int | None = None
    ) -> None:
        """Send the chunk message for ``(run_id, seq)`` once ``session`` commits."""
        self.send_after_commit(session, [self.message(run_id, seq)], delay_ms=delay_ms)

    def handle(self, run_id: int, seq: int) -> ChunkOutcome:
        """Process the chunk ``seq`` of run ``run_id``, if it is still the run's current one."""
        with self.session_factory() as session:
            with session.begin():
                if not self._is_current(session, run_id, seq):
                    return ChunkOutcome.STALE
                delay_ms = self.backpressure.delay_ms() if self.backpressure else 0
                if delay_ms:
                    self.logger.info(
                        "Run %s: target queue full, chunk %s in %d ms.", run_id, seq, delay_ms
                    )
                    self.send_chunk(session, run_id, seq, delay_ms=delay_ms)
                    return ChunkOutcome.DEFERRED
            try:
                with session.begin():
                    return self._advance(session, run_id, seq)
            except (Exception, Interrupt) as exc:
                self._record_failure(run_id, seq, exc)
                raise

    def _is_current(self, session: Session, run_id: int, seq: int) -> bool:
        row = session.execute(
            select(ChunkRun.name, ChunkRun.status, ChunkRun.seq).where(ChunkRun.id == run_id)
        ).one_or_none()
        if row is None or row.name != self.name:
            self.logger.warning("Run %s of %r does not exist; message dropped.", run_id, self.name)
            return False
        if row.status != RunStatus.RUNNING or row.seq != seq:
            self.logger.info(
                "Run %s is %s at seq %s; message for seq %s ignored.",
                run_id,
                row.status,
                row.seq,
                seq,
            )
            return False
        return True

    def _advance(self, session: Session, run_id: int, seq: int) -> ChunkOutcome:
        # Claim first: on PostgreSQL the UPDATE holds the row lock until commit, so a duplicate
        # waits here and then matches nothing; on SQLite the first write takes the write lock.
        claim = session.execute(
            update(ChunkRun)
            .where(
                ChunkRun.id == run_id,
                ChunkRun.seq == seq,
                ChunkRun.status == RunStatus.RUNNING,
                ChunkRun.name == self.name,
            )
            .values(seq=seq + 1, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if cast(CursorResult[Any], claim).rowcount != 1:
            self.logger.info("Run %s: seq %s was claimed by another message; ignored.", run_id, seq)
            return ChunkOutcome.STALE

        run = session.get_one(ChunkRun, run_id, populate_existing=True)
        run.failures, run.error = 0, None
        batch = self.enumerator(session, run.cursor, params=run.params, limit=self.chunk_size)
        if batch is None or not batch.items:
            self._finish(run)
            return ChunkOutcome.DONE

        ctx = ChunkContext(
            session=session,
            run_id=run_id,
            seq=seq,
            params=run.params,
            cursor=run.cursor,
            batch_id=run.batch_id,
            first_ordinal=run.members,
        )
        count = self.processor(ctx, batch.items)
        run.cursor = batch.cursor
        run.processed += len(batch.items) if count is None else count
        run.members += ctx.members
        self.send_after_commit(session, ctx.outgoing)
        if batch.last:
            self._finish(run)
            return ChunkOutcome.DONE
        if self.fan_in is not None and run.batch_id is not None and ctx.members:
            self.fan_in.batches.extend(run.batch_id, run.members)
        self.send_chunk(session, run_id, seq + 1, delay_ms=self._next_delay_ms(len(ctx.outgoing)))
        return ChunkOutcome.ADVANCED

    def _next_delay_ms(self, adding: int) -> int | None:
        backpressure_ms = self.backpressure.delay_ms(adding=adding) if self.backpressure else 0
        return max(self.pause_ms, backpressure_ms) or None

    def _finish(self, run: ChunkRun) -> None:
        run.status = RunStatus.DONE
        run.updated_at = run.finished_at = utcnow()
        # Sealed before the commit, with the members the committed chunks and this one sent:
        # a rollback redoes the chunk, which seals again with its own count.
        if self.fan_in is not None and run.batch_id is not None:
            self.fan_in.batches.seal(run.batch_id, total=run.members)

    def _record_failure(self, run_id: int, seq: int, exc: BaseException) -> None:
        # Count consecutive failures of this chunk on the row itself: the run fails after the
        # actor's last retry without the host having to install CurrentMessage.
        error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_LENGTH]
        current = (ChunkRun.id == run_id, ChunkRun.seq == seq, ChunkRun.status == RunStatus.RUNNING)
        try:
            with self.session_factory() as session, session.begin():
                now = utcnow()
                session.execute(
                    update(ChunkRun)
                    .where(*current)
                    .values(failures=ChunkRun.failures + 1, error=error, updated_at=now)
                    .execution_options(synchronize_session=False)
                )
                session.execute(
                    update(ChunkRun)
                    .where(*current, ChunkRun.failures > self.max_retries)
                    .values(status=RunStatus.FAILED, finished_at=now)
                    .execution_options(synchronize_session=False)
                )
        except Exception:
            self.logger.exception("Run %s: could not record the failure of seq %s.", run_id, seq)
