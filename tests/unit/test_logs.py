"""LOG_FORMAT=json: one JSON line per record, naming the message being processed."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage

from app.logs import JsonFormatter, configure_logging
from app.settings import SettingsError


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """A JSON-formatted handler on a logger of the test's own."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("fintask.test_logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_record_logged_while_a_message_runs_names_the_message(captured):
    broker = StubBroker(middleware=[CurrentMessage()])
    broker.emit_after("process_boot")

    @dramatiq.actor(broker=broker, queue_name="logs")
    def log_something(**kwargs: Any) -> None:
        logging.getLogger("fintask.test_logs").info("statement ready")

    message = log_something.send()
    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=1)
    worker.start()
    broker.join("logs")
    worker.join()
    worker.stop()
    logging.getLogger("fintask.test_logs").info("outside any message")

    inside, outside = records(captured)
    assert inside["message"] == "statement ready"
    assert (inside["message_id"], inside["actor_name"], inside["queue_name"]) == (
        message.message_id,
        "log_something",
        "logs",
    )
    assert outside["message"] == "outside any message"
    assert "message_id" not in outside


def test_a_traceback_stays_on_the_records_one_line(captured):
    try:
        raise ValueError("bad row\nsecond line")
    except ValueError:
        logging.getLogger("fintask.test_logs").exception("transform failed")

    [record] = records(captured)
    assert captured.getvalue().count("\n") == 1
    assert record["level"] == "ERROR"
    assert "ValueError: bad row" in record["exception"]


@pytest.fixture
def root_handlers() -> Iterator[list[logging.Handler]]:
    """The root logger's handlers, restored with their formatters after the test."""
    root = logging.getLogger()
    saved = [(h, h.formatter) for h in root.handlers]
    yield root.handlers
    for handler in list(root.handlers):
        if handler not in [h for h, _ in saved]:
            root.removeHandler(handler)
    for handler, formatter in saved:
        handler.setFormatter(formatter)


def test_json_replaces_the_format_of_the_handlers_already_set_up(root_handlers):
    handler = logging.StreamHandler(io.StringIO())
    logging.getLogger().addHandler(handler)

    switched = configure_logging({"LOG_FORMAT": "json"})

    assert switched
    assert isinstance(handler.formatter, JsonFormatter)


def test_text_or_unset_keeps_each_handlers_format_and_redacts_it(root_handlers, capsys):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    # A logger with a handler of its own, as gunicorn's and uvicorn's have.
    own = logging.getLogger("fintask.test_logs.own")
    own_stream = io.StringIO()
    own.addHandler(logging.StreamHandler(own_stream))
    own.propagate = False

    try:
        assert not configure_logging({})
        assert not configure_logging({"LOG_FORMAT": "text"})
        logging.getLogger("fintask.test_logs").warning("bounced %s", "ada@example.com")
        own.warning("card %s declined", "4111 1111 1111 1111")
        # What a process with no handler at all writes its warnings with.
        assert logging.lastResort is not None
        logging.lastResort.handle(logging.makeLogRecord({"msg": "to GB82WEST12345698765432"}))
    finally:
        own.handlers.clear()
        own.propagate = True

    assert stream.getvalue() == "WARNING fintask.test_logs: bounced <email>\n"
    assert own_stream.getvalue() == "card <card> declined\n"
    assert capsys.readouterr().err == "to <iban>\n"


def test_a_typo_in_the_format_is_refused(root_handlers):
    with pytest.raises(SettingsError, match="LOG_FORMAT='jsno'"):
        configure_logging({"LOG_FORMAT": "jsno"})
