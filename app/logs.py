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

from app.settings import SettingsError

#: The values ``LOG_FORMAT`` accepts.
LOG_FORMATS = ("text", "json")


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


def configure_logging(environ: Mapping[str, str]) -> bool:
    """Switch the root logger's handlers to JSON when ``LOG_FORMAT=json``; True if it did.

    Call it after the process's own logging setup (Dramatiq's worker processes set theirs up
    before they import the broker module), so that the handlers and levels it chose are kept
    and only their format changes. A process with no handler yet gets one on stderr.
    """
    log_format = environ.get("LOG_FORMAT", "").strip().lower() or "text"
    if log_format not in LOG_FORMATS:
        raise SettingsError(f"LOG_FORMAT={log_format!r}: expected one of {', '.join(LOG_FORMATS)}")
    if log_format == "text":
        return False
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    for handler in root.handlers:
        handler.setFormatter(JsonFormatter())
    return True
