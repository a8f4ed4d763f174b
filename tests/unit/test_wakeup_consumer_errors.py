"""The wake-up consumer reads a stalled socket as a lost connection, as it reads a dropped one.

redis-py's ``TimeoutError`` is not a ``ConnectionError``: Dramatiq's consumer lets it escape,
and the worker logs it as an unexpected crash. No Redis is needed: the broker's calls raise.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
from dramatiq import Message
from dramatiq.broker import MessageProxy
from dramatiq.errors import ConnectionClosed

from app.wakeup_broker import WakeupRedisBroker, WakeupRedisConsumer


def raising(error: Exception) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        raise error

    return call


@pytest.fixture
def consumer() -> WakeupRedisConsumer:
    broker = WakeupRedisBroker(url="redis://127.0.0.1:1/0")
    return WakeupRedisConsumer(broker, "emails", prefetch=2, timeout=100)


def proxy() -> MessageProxy:
    return MessageProxy(Message("emails", "send", (), {}, {"redis_message_id": "r-1"}))


@pytest.mark.parametrize("error", [redis.TimeoutError("stalled"), redis.ConnectionError("gone")])
@pytest.mark.parametrize(
    ("call", "patched"),
    [
        (lambda c: next(c), "fetch"),
        (lambda c: c.ack(proxy()), "ack_many"),
        (lambda c: c.nack(proxy()), "dead_letter"),
    ],
)
def test_a_lost_connection_in_any_call_is_connection_closed(consumer, call, patched, error):
    setattr(consumer.broker, patched, raising(error))

    with pytest.raises(ConnectionClosed):
        call(consumer)


def test_messages_it_could_not_return_go_back_with_the_next_consumer(consumer, monkeypatch):
    # Given a consumer holding two fetched messages it never handed out
    broker = consumer.broker
    consumer.message_cache = [("r-1", b"{}"), ("r-2", b"{}")]
    monkeypatch.setattr(broker, "do_requeue", raising(redis.TimeoutError("stalled")))

    # When it is closed while Redis does not answer
    consumer.close()

    # Then the next consumer of the queue returns them before it fetches anything
    returned: list[tuple[str, ...]] = []
    monkeypatch.setattr(broker, "do_requeue", lambda queue, *ids: returned.append(ids))
    monkeypatch.setattr(broker, "wake", lambda queue, count: None)
    monkeypatch.setattr(broker, "fetch", lambda queue, count: [])
    monkeypatch.setattr(WakeupRedisConsumer, "_wait_for_token", lambda self: None)
    successor = WakeupRedisConsumer(broker, "emails", prefetch=2, timeout=100)
    assert next(successor) is None
    assert [sorted(ids) for ids in returned] == [["r-1", "r-2"]]
