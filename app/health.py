"""End-to-end health: a ping message that a worker answers, proving someone consumes the queue."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import redis

PONG_TTL_S = 300


def new_ping_token() -> str:
    """A fresh token for one ping."""
    return uuid.uuid4().hex


def _pong_key(token: str) -> str:
    return f"fintask:pong:{token}"


def record_pong(client: redis.Redis, token: str, answered_by: str) -> None:
    """What a worker does with a ping: leave a pong naming itself for the sender to find."""
    client.set(_pong_key(token), answered_by, ex=PONG_TTL_S)


def wait_for_pong(
    client: redis.Redis,
    token: str,
    *,
    timeout_s: float,
    sleep: Callable[[float], None] = time.sleep,
) -> str | None:
    """Who answered the ping ``token``, or None if nobody did within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answer = client.get(_pong_key(token))
        if answer is not None:
            return answer.decode() if isinstance(answer, bytes) else str(answer)
        sleep(0.05)
    return None
