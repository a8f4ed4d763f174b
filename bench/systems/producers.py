"""Sending as an application of each system does, one message or a batch."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import dramatiq
import redis
from dramatiq import Broker, Message

from bench.systems.brokers import (
    celery_app,
    huey_app,
    process_encoder,
    producer_broker,
    taskiq_broker,
)
from bench.systems.peers import ArqProducer
from bench.systems.system import DRAMATIQ_KINDS
from chunking.bulk import enqueue_many


class Producer:
    """Sends as an application of ``kind`` does: Celery's ``send_task`` (what ``apply_async``
    publishes), ``broker.enqueue`` through a Dramatiq kind's broker (fintask's with its full
    enqueue-side stack), taskiq's kicker, a Huey task call, RQ's ``Queue.enqueue``, arq's
    ``enqueue_job`` (in arq's own venv). Task names are the same in every system's worker module;
    RQ and Huey also name a task by its module, ``bench.apps.<scenario>_<kind>``.
    """

    def __init__(
        self, kind: str, redis_url: str, *, scenario: str = "noop", **celery_conf: Any
    ) -> None:
        self.kind = kind
        self.redis_url = redis_url
        self.module = f"bench.apps.{scenario}_{kind}"
        self.app = (
            celery_app("bench_producer", redis_url, **celery_conf) if kind == "celery" else None
        )
        self.broker = producer_broker(kind, redis_url) if kind in DRAMATIQ_KINDS else None
        # Messages are encoded by the process's global encoder: each kind's is set at its send.
        self.encoder = process_encoder(kind) if kind in DRAMATIQ_KINDS else None
        self.arq = ArqProducer(redis_url) if kind == "arq" else None
        self.loop = asyncio.new_event_loop() if kind == "taskiq" else None
        self.client = redis.Redis.from_url(redis_url) if kind in ("huey", "rq") else None
        # Per queue: taskiq's brokers, Huey's apps and their task wrappers, RQ's queues.
        self.peers: dict[str, Any] = {}

    def send(
        self, queue: str, task: str, args: tuple[Any, ...] = (), *, delay_s: float | None = None
    ) -> None:
        """One message, delayed by ``delay_s`` when given (Celery's ``countdown``)."""
        if self.app is not None:
            self.app.send_task(task, args=args, queue=queue, countdown=delay_s)
        elif self.broker is not None:
            delay_ms = None if delay_s is None else round(delay_s * 1000)
            self._dramatiq().enqueue(Message(queue, task, args, {}, {}), delay=delay_ms)
        elif self.arq is not None:
            self.arq.send(queue, task, args, delay_s)
        elif self.kind == "huey":
            wrapper = self._huey_task(queue, task)
            if delay_s is None:
                wrapper(*args)
            else:
                wrapper.schedule(args, delay=delay_s)
        elif delay_s is not None:
            raise NotImplementedError(f"{self.kind}: delays need a scheduler process")
        elif self.kind == "taskiq":
            self._run_taskiq(self._taskiq_send(queue, task, [args]))
        else:
            self._rq_queue(queue).enqueue(f"{self.module}.{task}", *args, result_ttl=0)

    def send_batched(self, queue: str, task: str, arguments: Iterable[tuple[Any, ...]]) -> None:
        """One message per argument tuple, as fast as the system can: fintask's
        ``chunking.enqueue_many`` (one script call per queue and batch) for Dramatiq kinds,
        kombu's ``Producer.batch`` (pipelined publishes) for Celery, RQ's ``enqueue_many``, Huey's
        serialised messages pushed in one pipeline (Huey has no bulk call), taskiq's and arq's
        sends awaited together."""
        if self.app is not None:
            with self.app.producer_or_acquire() as producer, producer.batch():
                for args in arguments:
                    self.app.send_task(task, args=args, queue=queue, producer=producer)
        elif self.broker is not None:
            messages: Iterable[Message[Any]] = (
                Message(queue, task, args, {}, {}) for args in arguments
            )
            enqueue_many(self._dramatiq(), messages)
        elif self.arq is not None:
            self.arq.send_batched(queue, task, arguments)
        elif self.kind == "taskiq":
            self._run_taskiq(self._taskiq_send(queue, task, list(arguments)))
        elif self.kind == "huey":
            wrapper = self._huey_task(queue, task)
            huey = wrapper.huey
            data = [huey.serialize_task(wrapper.s(*args)) for args in arguments]
            assert self.client is not None
            pipe = self.client.pipeline(transaction=False)
            for start in range(0, len(data), 1000):
                pipe.lpush(huey.storage.queue_key, *data[start : start + 1000])
            pipe.execute()
        else:
            rq_queue = self._rq_queue(queue)
            function = f"{self.module}.{task}"
            jobs = [rq_queue.prepare_data(function, args, result_ttl=0) for args in arguments]
            assert self.client is not None
            for start in range(0, len(jobs), 1000):
                with self.client.pipeline() as pipe:
                    rq_queue.enqueue_many(jobs[start : start + 1000], pipeline=pipe)
                    pipe.execute()

    def _dramatiq(self) -> Broker:
        """The Dramatiq kind's broker, with the kind's encoder set for the messages to come."""
        assert self.broker is not None and self.encoder is not None
        dramatiq.set_encoder(self.encoder)
        return self.broker

    def close(self) -> None:
        if self.app is not None:
            self.app.close()
        if self.broker is not None:
            self.broker.close()
        if self.arq is not None:
            self.arq.close()
        if self.loop is not None:
            for broker in self.peers.values():
                self.loop.run_until_complete(broker.shutdown())
            self.loop.close()
        if self.client is not None:
            self.client.close()

    def _run_taskiq(self, coroutine: Any) -> None:
        assert self.loop is not None
        self.loop.run_until_complete(coroutine)

    async def _taskiq_send(self, queue: str, task: str, arguments: list[tuple[Any, ...]]) -> None:
        from taskiq.kicker import AsyncKicker

        if queue not in self.peers:
            self.peers[queue] = taskiq_broker(self.redis_url, queue)
            await self.peers[queue].startup()
        kicker: AsyncKicker[Any, Any] = AsyncKicker(task, self.peers[queue], {})
        for start in range(0, len(arguments), 200):
            await asyncio.gather(*(kicker.kiq(*args) for args in arguments[start : start + 200]))

    def _huey_task(self, queue: str, task: str) -> Any:
        key = f"{queue}\0{task}"
        if key not in self.peers:
            huey = self.peers.get(queue) or huey_app(self.redis_url, queue)
            self.peers[queue] = huey
            self.peers[key] = huey.task(name=task)(_stand_in(self.module))
        return self.peers[key]

    def _rq_queue(self, queue: str) -> Any:
        from rq import Queue

        if queue not in self.peers:
            self.peers[queue] = Queue(queue, connection=self.client)
        return self.peers[queue]


def _stand_in(module: str) -> Any:
    """The producer's stand-in body of a Huey task of ``module``: only its name (the module's
    and the task's) travels in the message."""

    def body(*args: Any) -> None:
        raise AssertionError("a Huey producer's stand-in task never runs")

    body.__module__ = module
    return body
