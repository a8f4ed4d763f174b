"""Local receivers for the demo and the tests: an SMTP sink and an HTTP sink.

They stand in for the mail relay, the push gateway and users' webhooks, and write everything
they receive as JSON lines, so a test reads exactly what arrived (and how many times).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from email import message_from_bytes
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

_write_lock = threading.Lock()


def _append(path: Path, record: dict[str, Any]) -> None:
    with _write_lock, path.open("a") as file:
        file.write(json.dumps(record) + "\n")


def read_records(path: Path) -> list[dict[str, Any]]:
    """Everything a sink wrote to ``path`` (an empty list before the first arrival).

    A reader can meet a line the sink is still writing; only lines ended by a newline count.
    """
    if not path.exists():
        return []
    *complete, _partial = path.read_text().split("\n")
    return [json.loads(line) for line in complete if line.strip()]


class _MailHandler:
    def __init__(self, path: Path, delay_s: float) -> None:
        self.path = path
        self.delay_s = delay_s

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        # A slow relay, before the message is transmitted: the tests kill a worker while it
        # waits here, when no mail can have been taken yet.
        await asyncio.sleep(self.delay_s)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content if isinstance(envelope.content, bytes) else b""
        parsed = message_from_bytes(content, policy=default_policy)
        _append(
            self.path,
            {
                "to": list(envelope.rcpt_tos),
                "subject": str(parsed["Subject"]),
                "message_id": str(parsed["Message-ID"]),
                "body": parsed.get_body().get_content() if parsed.get_body() else "",  # type: ignore[union-attr]
                "received_at": time.time(),
                # The client's port: which of its connections the mail came over.
                "client_port": session.peer[1] if isinstance(session.peer, tuple) else None,
            },
        )
        return "250 Message accepted for delivery"


class SmtpSink:
    """An SMTP server on ``127.0.0.1:port`` appending each accepted mail to ``path``."""

    def __init__(self, *, path: Path, port: int, delay_s: float = 0.0) -> None:
        self.path = path
        self.port = port
        self._controller = Controller(_MailHandler(path, delay_s), hostname="127.0.0.1", port=port)

    def start(self) -> SmtpSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()


class HttpSink:
    """An HTTP server on 127.0.0.1:``port`` appending each POST (path, key, JSON) to ``path``."""

    def __init__(self, *, path: Path, port: int) -> None:
        self.path = path
        sink_path = path

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                _append(
                    sink_path,
                    {
                        "path": self.path,
                        "idempotency_key": self.headers.get("Idempotency-Key"),
                        "json": json.loads(body or b"null"),
                        "received_at": time.time(),
                    },
                )
                self.send_response(202)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = port
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def start(self) -> HttpSink:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve_sinks(*, directory: Path, smtp_port: int, http_port: int, smtp_delay_s: float) -> None:
    """Run both sinks until SIGTERM or SIGINT (the Procfile's ``sinks`` process)."""
    import signal

    directory.mkdir(parents=True, exist_ok=True)
    smtp = SmtpSink(path=directory / "mail.jsonl", port=smtp_port, delay_s=smtp_delay_s).start()
    http = HttpSink(path=directory / "http.jsonl", port=http_port).start()
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    stopped.wait()
    http.stop()
    smtp.stop()
