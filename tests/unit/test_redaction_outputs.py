"""Every way text leaves a process redacts it: log records in both formats, Sentry events
before they are sent, and the dead letters (and jobs) the CLI shows. Crafted records, events and
dead letters here; ``tests/integration/test_redaction_worker.py`` shows it of a real worker."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from app.cli.main import main
from app.db.models import Job, ProviderAccount, User
from app.db.session import transaction
from app.dead_letters import reason_key
from app.logs import JsonFormatter, RedactingFormatter
from app.sentry import FILTERED, scrub_event
from chunking.redis_keys import dead_letters_key, dead_messages_key
from tests.unit.test_control_api import EMAIL, QUEUE, TRACEBACK, dead_letter

CARD = "4111 1111 1111 1111"
IBAN = "GB82 WEST 1234 5698 7654 32"
#: Every datum above, and the placeholder that must stand in its place.
PLACEHOLDERS = {EMAIL: "<email>", CARD: "<card>", IBAN: "<iban>"}
#: A message id whose first three groups are a Luhn-valid card number: an id all the same.
MESSAGE_ID = "41111111-1111-1111-a000-000000000000"


def assert_redacted(text: str, *data: str) -> None:
    """None of ``data`` (default: all of it) is in ``text``; each one's placeholder is."""
    for datum in data or tuple(PLACEHOLDERS):
        assert datum not in text
        assert datum.replace(" ", "") not in text
        assert PLACEHOLDERS[datum] in text, f"{PLACEHOLDERS[datum]} is not in {text!r}"


def failed_record(logger: str = "fintask.test_redaction") -> logging.LogRecord:
    """A record as ``logger.exception("...", EMAIL)`` makes it, with its stack too, while
    handling an exception that quotes an IBAN and, on a line of its own, a card number."""
    try:
        raise ValueError(f"payout to {IBAN} refused\n{CARD} declined")
    except ValueError:
        exc_info = sys.exc_info()
    return logging.LogRecord(
        logger,
        logging.ERROR,
        __file__,
        1,
        "bounced %s (message %s)",
        (EMAIL, MESSAGE_ID),
        exc_info,
        sinfo=f"Stack (most recent call last):\n  charging {CARD}",
    )


def test_a_json_record_is_redacted_in_every_field_and_stays_one_json_line():
    line = JsonFormatter().format(failed_record())

    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == f"bounced <email> (message {MESSAGE_ID})"
    assert "ValueError: payout to <iban> refused\n<card> declined" in entry["exception"]
    assert entry["stack"].endswith("charging <card>")
    assert_redacted(line)


def test_a_text_record_keeps_its_format_and_loses_its_data():
    formatter = RedactingFormatter(
        inner=logging.Formatter("[%(name)s] [%(levelname)s] %(message)s")
    )

    text = formatter.format(failed_record())

    assert text.startswith(
        f"[fintask.test_redaction] [ERROR] bounced <email> (message {MESSAGE_ID})"
    )
    assert "ValueError: payout to <iban> refused\n<card> declined" in text
    assert text.endswith("charging <card>")
    assert_redacted(text)


def test_a_handler_without_a_format_of_its_own_is_redacted_too():
    record = logging.makeLogRecord({"msg": "mail to %s", "args": (EMAIL,)})

    assert RedactingFormatter(inner=None).format(record) == "mail to <email>"


def sentry_event() -> dict[str, Any]:
    """An event as sentry-sdk hands it to ``before_send``: a failed message's exception, with
    the log lines before it as breadcrumbs, and the data a flow put on the scope."""
    return {
        "event_id": "9f2c" * 8,
        "level": "error",
        "message": f"charging {CARD} failed",
        "logentry": {
            "message": "bounced %s",
            "params": [EMAIL],
            "formatted": f"bounced {EMAIL}",
        },
        "exception": {
            "values": [
                {"type": "SendFailed", "value": f"550 <{EMAIL}>: no such user"},
                {
                    "type": "PayoutRefused",
                    "value": f"account {IBAN} is closed",
                    "stacktrace": {
                        "frames": [
                            {
                                "function": "pay_out",
                                "context_line": f'    raise PayoutRefused("{IBAN}")',
                                "pre_context": [f'CARD = "{CARD}"'],
                            }
                        ]
                    },
                },
            ]
        },
        "breadcrumbs": {
            "values": [
                {"category": "fintask", "message": f"card {CARD} declined", "data": {}},
                {"category": "httpx", "message": "POST", "data": {"body": f"to={EMAIL}"}},
            ]
        },
        "extra": {"dramatiq_message_id": MESSAGE_ID, "recipient": EMAIL},
        "tags": {"iban": IBAN},
        "contexts": {
            "trace": {"trace_id": "ab" * 16, "span_id": "4242424242424242"},
            "payout": {"account": IBAN},
            "dramatiq": {
                "type": "dramatiq",
                "data": {
                    "message_id": MESSAGE_ID,
                    "actor_name": "pay_out",
                    "kwargs": {"email": EMAIL},
                },
            },
        },
        "request": {"data": {"email": EMAIL}},
    }


def test_before_send_redacts_every_text_of_an_event_and_keeps_its_ids():
    event = scrub_event(sentry_event(), {})

    assert_redacted(json.dumps(event))
    message = event["exception"]["values"]
    assert message[0]["value"] == "550 <<email>>: no such user"
    assert message[1]["value"] == "account <iban> is closed"
    assert message[1]["stacktrace"]["frames"][0]["pre_context"] == ['CARD = "<card>"']
    crumbs = event["breadcrumbs"]["values"]
    assert [c["message"] for c in crumbs] == ["card <card> declined", "POST"]
    assert crumbs[1]["data"] == {"body": "to=<email>"}
    assert event["extra"] == {"dramatiq_message_id": MESSAGE_ID, "recipient": "<email>"}
    assert event["logentry"] == {
        "message": "bounced %s",
        "params": ["<email>"],
        "formatted": "bounced <email>",
    }
    assert event["message"] == "charging <card> failed"
    assert event["tags"] == {"iban": "<iban>"}
    assert event["contexts"]["payout"] == {"account": "<iban>"}
    # The arguments are still dropped, as before; the ids Sentry links events by are kept.
    dramatiq_data = event["contexts"]["dramatiq"]["data"]
    assert (dramatiq_data["message_id"], dramatiq_data["kwargs"]) == (MESSAGE_ID, FILTERED)
    assert event["event_id"] == "9f2c" * 8
    assert event["contexts"]["trace"] == {"trace_id": "ab" * 16, "span_id": "4242424242424242"}
    assert "request" not in event


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite alone: what is shown is what matters, not the database it came from."""
    return f"sqlite:///{tmp_path / 'fintask.db'}"


def fintask(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


class SendFailed(Exception):
    """The mail server refused the recipient."""


def test_a_dead_letters_reason_is_stored_redacted(database, redis_env, client: redis.Redis):
    dead = dead_letter(redis_env, SendFailed(f"550 <{EMAIL}>: no such user"))

    stored = client.get(reason_key(QUEUE, str(dead.options["redis_message_id"])))

    assert stored == b"SendFailed: 550 <<email>>: no such user"


def test_fintask_dlq_shows_a_dead_letter_redacted_whatever_redis_holds(
    database, redis_env, client: redis.Redis
):
    dead = dead_letter(
        redis_env,
        SendFailed("refused"),
        args=(EMAIL,),
        kwargs={"account": IBAN},
        options={"retries": 1, "traceback": TRACEBACK.replace(EMAIL, CARD)},
    )
    # As a release before this one kept it: the exception's text as it was.
    redis_id = str(dead.options["redis_message_id"])
    client.set(reason_key(QUEUE, redis_id), f"SendFailed: 550 <{EMAIL}>: no such user")

    listed = fintask("dlq", "list", "--queue", QUEUE)
    listed_json = fintask("dlq", "list", "--queue", QUEUE, "--json")
    shown = fintask("dlq", "show", dead.message_id)
    details = json.loads(fintask("dlq", "show", dead.message_id, "--json"))

    assert_redacted(listed, EMAIL)
    assert_redacted(listed_json, EMAIL)
    assert_redacted(shown)
    assert details["reason"] == "SendFailed: 550 <<email>>: no such user"
    assert details["message"]["args"] == ["<email>"]
    assert details["message"]["kwargs"] == {"account": "<iban>"}
    assert "the mail server refused <card>" in details["message"]["options"]["traceback"]
    assert details["message_id"] == dead.message_id


def test_fintask_dlq_shows_a_payload_that_is_no_message_redacted(
    database, redis_env, client: redis.Redis
):
    client.zadd(dead_letters_key(QUEUE), {"poison-1": 1_700_000_000_000})
    client.hset(dead_messages_key(QUEUE), "poison-1", f"not json: to {EMAIL}")

    details = json.loads(fintask("dlq", "show", "poison-1", "--json"))

    assert details["payload"] == "not json: to <email>"


def test_fintask_jobs_shows_a_jobs_error_redacted(database, redis_env):
    with transaction() as session:
        user = User(email="bob@example.org", name="Bob")
        session.add(user)
        session.flush()
        account = ProviderAccount(user_id=user.id, provider="sandbox", external_id="acc-1")
        session.add(account)
        session.flush()
        session.add(
            Job(
                id=str(uuid.uuid4()),
                kind="refresh",
                account_id=account.id,
                status="failed",
                error=f"the provider refused {IBAN}",
                deadline_at=dt.datetime.now(dt.UTC),
            )
        )

    table = fintask("jobs")
    [job] = json.loads(fintask("jobs", "--json"))["items"]

    assert_redacted(table, IBAN)
    assert job["error"] == "the provider refused <iban>"
