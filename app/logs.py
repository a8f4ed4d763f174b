"""Logs without personal data, and, with ``LOG_FORMAT=json``, one JSON object per line naming
the message a worker thread is running.

Every handler a process has set up when it calls ``configure_logging`` writes its records
redacted (``app.redaction``): the formatted message with its arguments, the exception and its
traceback, the stack, whatever the format puts on the line. It is done in the formatters, not
by rewriting records, so Sentry's logging integration still gets them as logged (``app.sentry``
redacts its events itself), and Dramatiq's and third-party loggers' lines are redacted like
fintask's.

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
from collections.abc import Iterator, Mapping

from dramatiq.middleware import CurrentMessage

from app.redaction import redact, redact_data
from app.settings import load_settings


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line, with the current Dramatiq message when there is one,
    every field redacted."""

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
        # Each value, not the line: redacting JSON text could cut an escape (``\n``) in two.
        return json.dumps(redact_data(entry), default=str)


class RedactingFormatter(logging.Formatter):
    """``inner``'s line (Python's default format when None), redacted: a text format keeps
    its layout and loses its PII."""

    def __init__(self, *, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.inner.format(record))


def configure_logging(environ: Mapping[str, str] | None = None) -> bool:
    """Redact every log handler's output; switch the root logger's handlers to JSON when
    ``LOG_FORMAT=json``. True if it switched to JSON.

    ``LOG_FORMAT`` is read through the settings of ``environ`` (default: ``os.environ``), so a
    typo fails like any other setting. Call it after the process's own logging setup
    (Dramatiq's worker processes set theirs up before they import the broker module; gunicorn
    and uvicorn before they load the app), so that the handlers and levels it chose are kept
    and only their format changes: every handler of every logger, and ``logging.lastResort``
    (what a process with no handler writes its warnings with). With JSON, a process with no
    handler yet gets one on stderr. A handler added afterwards is not redacted.
    """
    as_json = load_settings(environ).log_format == "json"
    if as_json:
        root = logging.getLogger()
        if not root.handlers:
            logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        for handler in root.handlers:
            handler.setFormatter(JsonFormatter())
    for handler in _every_handler():
        if not isinstance(handler.formatter, JsonFormatter | RedactingFormatter):
            handler.setFormatter(RedactingFormatter(inner=handler.formatter))
    return as_json


def _every_handler() -> Iterator[logging.Handler]:
    """The handlers of the root logger, of every logger created so far, and the last resort."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        if isinstance(logger, logging.Logger):
            yield from logger.handlers
    if logging.lastResort is not None:
        yield logging.lastResort
