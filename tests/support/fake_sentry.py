"""Sentry in a test: a small HTTP server on a free port that records the envelopes sentry-sdk
posts (``SENTRY_DSN=http://public@127.0.0.1:PORT/1``): no network, the SDK's real transport."""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


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
        """The events of the runs of one Dramatiq message (others have no message id)."""
        events = self.events()
        return [e for e in events if e.get("extra", {}).get("dramatiq_message_id") == message_id]


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


@contextmanager
def fake_sentry() -> Iterator[FakeSentry]:
    """A ``FakeSentry`` serving from a thread until the block ends."""
    server = FakeSentry()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
