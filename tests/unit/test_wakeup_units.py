"""The wake-up broker's pure parts: its dispatch arguments match Dramatiq's, and its block bound."""

from __future__ import annotations

from typing import Any

import dramatiq.brokers.redis
import pytest
from dramatiq.brokers.redis import RedisBroker

import chunking.bulk
from app.wakeup_broker import WakeupRedisBroker, block_ms, wake_key
from chunking.bulk import dispatch_args


def test_dispatch_args_are_the_ones_dramatiq_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a broker (no connection is made) with a recording dispatch script and a fixed clock
    broker = WakeupRedisBroker(url="redis://127.0.0.1:1/0", maintenance_chance=0)
    sent: list[list[Any]] = []
    broker.scripts["dispatch"] = lambda *, args, keys: sent.append(args)
    monkeypatch.setattr(broker, "_max_unpack_size", lambda: 4000)
    for module in (dramatiq.brokers.redis, chunking.bulk):
        monkeypatch.setattr(module, "current_millis", lambda: 1_700_000_000_000)

    # When Dramatiq's own dispatch builds an enqueue
    RedisBroker._dispatch(broker, "enqueue")("q.DQ", "id-1", b"data")

    # Then the wake-up broker's pipelined enqueue sends the same arguments
    assert dispatch_args(broker, "enqueue", "q.DQ", "id-1", b"data") == sent[0]


def test_wake_keys_follow_dramatiqs_key_suffixes() -> None:
    assert wake_key("dramatiq", "urgent_notifications") == "dramatiq:urgent_notifications.wake"
    assert wake_key("dramatiq", "default.DQ") == "dramatiq:default.DQ.wake"


@pytest.mark.parametrize(
    ("next_eta_ms", "expected"),
    [
        (None, 1_000),  # no delayed message held: the whole timeout
        (10_250, 250),  # a delayed message due sooner: until it is due
        (20_000, 1_000),  # one due later than the timeout: the timeout
        (9_000, 0),  # one already due: do not block at all
    ],
)
def test_an_idle_consumer_blocks_until_its_timeout_or_its_next_eta(
    next_eta_ms: int | None, expected: int
) -> None:
    assert block_ms(timeout_ms=1_000, next_eta_ms=next_eta_ms, now_ms=10_000) == expected


def test_the_brokers_connections_parse_replies_with_hiredis() -> None:
    # The lock installs hiredis: redis-py then parses every reply in C instead of Python
    broker = WakeupRedisBroker(url="redis://127.0.0.1:1/0")
    connection = broker.client.connection_pool.make_connection()
    assert type(connection._parser).__name__ == "_HiredisParser"
