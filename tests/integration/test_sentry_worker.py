"""A real worker reports a failure to Sentry once, naming the message, without its arguments.

Sentry here is a small HTTP server on a free port that records the envelopes sentry-sdk posts
(``SENTRY_DSN=http://public@127.0.0.1:PORT/1``): no network, the SDK's real transport.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker

from app.db.migrate import upgrade
from tests.support.processes import dramatiq_worker, fintask_env, running, wait_until


class FakeSentry(ThreadingHTTPServer):
    """Records every envelope item posted to it; ``events`` are the error events."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _EnvelopeHandler)
        self.items: list[tuple[dict[str, Any], bytes]] = []
        self.raw: list[bytes] = []
        self.lock = threading.Lock()

    @property
    def dsn(self) -> str:
        return f"http://public@127.0.0.1:{self.server_address[1]}/1"

    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(body) for header, body in self.items if header["type"] == "event"]

    def events_for(self, message_id: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e["extra"]["dramatiq_message_id"] == message_id]


class _EnvelopeHandler(BaseHTTPRequestHandler):
    server: FakeSentry

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        with self.server.lock:
            self.server.raw.append(body)
            self.server.items += parse_envelope(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def parse_envelope(body: bytes) -> list[tuple[dict[str, Any], bytes]]:
    """The items of a Sentry envelope: a header line, then per item a header line and payload."""
    _, _, rest = body.partition(b"\n")
    items = []
    while rest.strip():
        line, _, rest = rest.partition(b"\n")
        header = json.loads(line)
        if "length" in header:
            payload, rest = rest[: header["length"]], rest[header["length"] :].removeprefix(b"\n")
        else:
            payload, _, rest = rest.partition(b"\n")
        items.append((header, payload))
    return items


@pytest.fixture
def sentry() -> Iterator[FakeSentry]:
    server = FakeSentry()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_failing_message_gives_exactly_one_scrubbed_event(sentry, redis_url, tmp_path):
    database_url = f"sqlite:///{tmp_path / 'fintask.db'}"
    upgrade(database_url)
    env = fintask_env(
        REDIS_URL=redis_url,
        DATABASE_URL=database_url,
        FINTASK_VAR_DIR=str(tmp_path),
        SENTRY_DSN=sentry.dsn,
        NO_PROXY="127.0.0.1,localhost",
    )
    producer = RedisBroker(url=redis_url, middleware=[])
    producer.declare_queue("fraud")
    email = "ada@example.com"

    def send_failing() -> Message[Any]:
        # The account does not exist: the fraud check raises NoResultFound.
        kwargs = {"account_id": 999_999, "email": email}
        message = Message("fraud", "check_new_account", (), kwargs, {"max_retries": 0})
        producer.enqueue(message)
        return message

    worker = dramatiq_worker("fraud", processes=1, threads=1)
    with running(worker, env, tmp_path / "worker.log"):
        first = send_failing()
        wait_until(lambda: sentry.events_for(first.message_id), what="the failure's event")
        # One thread runs one message at a time and the SDK sends in order: once the second
        # message's event is in, everything the first one could report has arrived too.
        second = send_failing()
        wait_until(lambda: sentry.events_for(second.message_id), what="the second event")
    producer.close()

    [event] = sentry.events_for(first.message_id)
    assert len(sentry.events()) == 2
    data = event["contexts"]["dramatiq"]["data"]
    assert (data["actor_name"], data["message_id"]) == ("check_new_account", first.message_id)
    assert (data["kwargs"], data["args"]) == ("[Filtered]", "[Filtered]")
    assert event["exception"]["values"][-1]["type"] == "NoResultFound"
    assert not any(email.encode() in body for body in sentry.raw)
