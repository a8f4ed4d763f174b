"""Structured logs: one JSON object per line, naming the message a worker thread is running.

With ``LOG_FORMAT=json`` every record carries ``message_id``, ``actor_name`` and ``queue_name``
when it is logged while a message runs (read from Dramatiq's ``CurrentMessage``, which must be
in the middleware stack), so a log search for one message id finds everything that happened to
it, in every process. One line per record, a traceback included, so that Dramatiq's worker
processes, whose output the master relays line by line, never split a record.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from collections.abc import Mapping

from dramatiq.middleware import CurrentMessage

from app.settings import load_settings


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line, with the current Dramatiq message when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
            "thread": record.threadName,
        }
        message = CurrentMessage.get_current_message()
        if message is not None:
            entry["message_id"] = message.message_id
            entry["actor_name"] = message.actor_name
            entry["queue_name"] = message.queue_name
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def configure_logging(environ: Mapping[str, str] | None = None) -> bool:
    """Switch the root logger's handlers to JSON when ``LOG_FORMAT=json``; True if it did.

    ``LOG_FORMAT`` is read through the settings of ``environ`` (default: ``os.environ``), so a
    typo fails like any other setting. Call it after the process's own logging setup
    (Dramatiq's worker processes set theirs up before they import the broker module), so that
    the handlers and levels it chose are kept and only their format changes. A process with no
    handler yet gets one on stderr.
    """
    if load_settings(environ).log_format == "text":
        return False
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    for handler in root.handlers:
        handler.setFormatter(JsonFormatter())
    return True
