"""The alerts of ``ops/alerts.yml`` as the console evaluates them (``app.control.alerts``).

The file is the source of truth: every alert in it is evaluated here or listed as not
evaluable with a reason, and each threshold written in ``app.control.alerts`` (PyYAML is not a
dependency) is the one of the rule's expression. Then each rule fires when its condition holds
and not at its threshold, over an overview built as ``read_overview`` builds one.
"""

from __future__ import annotations

import datetime as dt
import html
import re
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest
from dramatiq.common import current_millis
from sqlalchemy.orm import Session

from app.control import alerts
from app.control.alerts import Readings, evaluate, read_readings
from app.control.overview import MINUTES, Overview, QueueOverview
from app.control.queue_counts import QueueCounts
from app.db.models import OutboxMessage
from app.db.session import default_engine, transaction
from tests.support.console import signed_in

pytest_plugins = ["tests.support.inspection_fixtures"]

ALERTS_YML = Path(__file__).resolve().parents[2] / "ops" / "alerts.yml"
NOW_MS = current_millis()
QUEUE = "maintenance"

_RULE = re.compile(r"^ *- alert: (\w+)\n(.*?)(?=^ *- alert: |\Z)", re.M | re.S)


def file_rules() -> dict[str, dict[str, str]]:
    """Each alert of ``ops/alerts.yml``: its expression, ``for:`` and severity."""
    rules = {}
    for name, body in _RULE.findall(ALERTS_YML.read_text()):
        expr = re.search(r"expr: (?:\|\n)?(.*?)\n *for:", body, re.S)
        wait = re.search(r"^ *for: (\S+)", body, re.M)
        severity = re.search(r"^ *severity: (\w+)", body, re.M)
        assert expr and wait and severity, f"{name}: no expr, for or severity in {ALERTS_YML}"
        assert name not in rules, f"{name} is in {ALERTS_YML} twice"
        rules[name] = {"expr": expr.group(1), "for": wait.group(1), "severity": severity.group(1)}
    return rules


#: Per alert, a pattern over its expression and what each of its matches must equal.
THRESHOLDS: dict[str, list[tuple[str, object]]] = {
    "FintaskHighErrorRate": [
        (r"\)\s*>\s*([\d.]+)\s*and", alerts.ERROR_SHARE_MAX),
        (r"\[(\d+)m\]", alerts.ERROR_WINDOW_MIN),
        (r"dramatiq_messages_total\[\d+m\]\)\) > ([\d.]+)\s*$", alerts.ERROR_RATE_MIN_PER_S),
    ],
    "FintaskQueueBacklog": [(r'state="ready"\}\) > (\d+)', alerts.BACKLOG_READY_MAX)],
    "FintaskOldestMessageTooOld": [
        (r'queue_name!="(\w+)"', alerts.URGENT_QUEUE),
        (r"\) > (\d+)", alerts.OLDEST_AGE_MAX_S),
    ],
    "FintaskUrgentMessagesWaiting": [
        (r'queue_name="(\w+)"', alerts.URGENT_QUEUE),
        (r"\) > (\d+)", alerts.URGENT_AGE_MAX_S),
    ],
    "FintaskNoConsumers": [(r"fintask_consumers_alive\) < (\d+)", alerts.CONSUMERS_MIN)],
    "FintaskQueueStalled": [
        (r'state="ready"\}\) > (\d+)', 0),
        (r"\[(\d+)m\]", alerts.STALLED_WINDOW_MIN),
    ],
    "FintaskDeadLettersGrowing": [
        (r'state="dead"\}\[(\d+)m\]\)\)', alerts.DEAD_LETTERS_WINDOW_MIN),
        (r"\)\) > (\d+)", 0),
    ],
    "FintaskOutboxMessagesFailed": [
        (r"fintask_outbox_failed_messages\[(\d+)m\]", alerts.OUTBOX_FAILED_WINDOW_MIN),
        (r"\)\) > (\d+)", 0),
    ],
}


def test_every_alert_of_the_file_is_evaluated_or_said_not_to_be_and_why():
    evaluated = [rule.name for rule in alerts.RULES]
    not_evaluable = [rule.name for rule in alerts.NOT_EVALUABLE]

    assert sorted(evaluated + not_evaluable) == sorted(file_rules())
    assert all(rule.reason for rule in alerts.NOT_EVALUABLE)
    assert evaluated == [name for name in file_rules() if name in evaluated]  # the file's order


def test_each_rule_waits_and_pages_as_the_file_says():
    rules = file_rules()
    for rule in alerts.RULES:
        assert (rule.wait, rule.severity) == (rules[rule.name]["for"], rules[rule.name]["severity"])


@pytest.mark.parametrize("name", sorted(THRESHOLDS))
def test_each_threshold_is_the_one_of_the_rules_expression(name):
    expr = file_rules()[name]["expr"]
    for pattern, expected in THRESHOLDS[name]:
        found = re.findall(pattern, expr, re.M)
        assert found, f"{name}: {pattern!r} matches nothing in {expr!r}"
        for value in found:
            written = value if isinstance(expected, str) else float(value)
            assert written == expected, f"{name}: the file says {value}, alerts.py {expected}"


def test_every_evaluated_rule_has_its_thresholds_checked_against_the_file():
    assert sorted(THRESHOLDS) == sorted(rule.name for rule in alerts.RULES)


def minutes(recent: Sequence[int] = ()) -> list[int]:
    """An hour of counts per minute ending with ``recent`` (its last: the minute in progress)."""
    return [0] * (MINUTES - len(recent)) + list(recent)


def queue(
    name: str = QUEUE,
    *,
    ready: int = 0,
    oldest_age_s: float = 0.0,
    paused: bool = False,
    done: Sequence[int] = (),
    failed: Sequence[int] = (),
) -> QueueOverview:
    counts = QueueCounts(
        queue_name=name,
        ready=ready,
        delayed=0,
        retrying=0,
        in_delay_list=0,
        held=0,
        dead=0,
        oldest_age_s=oldest_age_s,
        paused=paused,
    )
    return QueueOverview(counts=counts, consumers=1, done=minutes(done), failed=minutes(failed))


def overview(*queues: QueueOverview, consumers_alive: int = 1) -> Overview:
    return Overview(
        queues=list(queues),
        consumers_alive=consumers_alive,
        workers=[],
        workers_gone=0,
        runs=[],
        runs_in_progress=0,
        read_at_ms=NOW_MS,
    )


def firing(
    seen: Overview,
    *,
    new_dead_letters: dict[str, int] | None = None,
    outbox_failed_at: dt.datetime | None = None,
) -> set[tuple[str, str]]:
    """The (alert, target) pairs that fire over ``seen``."""
    readings = Readings(new_dead_letters or {}, outbox_failed_at)
    return {(alert.rule.name, alert.target) for alert in evaluate(seen, readings)}


def test_a_quiet_fleet_fires_nothing():
    assert firing(overview(queue(), queue("emails", done=[3, 4]))) == set()


def test_a_backlog_fires_past_its_threshold_only():
    at = overview(queue(ready=alerts.BACKLOG_READY_MAX, done=[100]))
    past = overview(queue(ready=alerts.BACKLOG_READY_MAX + 1, done=[100]))

    assert firing(at) == set()
    assert firing(past) == {("FintaskQueueBacklog", QUEUE)}


def test_an_old_message_fires_for_its_queue_and_urgent_notifications_have_their_own_rule():
    limit, urgent_limit = alerts.OLDEST_AGE_MAX_S, alerts.URGENT_AGE_MAX_S
    urgent = alerts.URGENT_QUEUE

    assert firing(overview(queue(ready=1, oldest_age_s=limit, done=[1]))) == set()
    assert firing(overview(queue(ready=1, oldest_age_s=limit + 1, done=[1]))) == {
        ("FintaskOldestMessageTooOld", QUEUE)
    }
    assert firing(overview(queue(urgent, ready=1, oldest_age_s=urgent_limit, done=[1]))) == set()
    assert firing(overview(queue(urgent, ready=1, oldest_age_s=limit + 1, done=[1]))) == {
        ("FintaskUrgentMessagesWaiting", urgent)
    }


def test_no_consumer_alive_fires_for_the_fleet():
    assert firing(overview(queue(), consumers_alive=0)) == {("FintaskNoConsumers", "fleet")}
    assert firing(overview(queue(), consumers_alive=1)) == set()


def test_a_queue_with_ready_messages_stalls_once_nothing_was_processed_for_the_window():
    window = alerts.STALLED_WINDOW_MIN
    # One count per minute, the last in progress: ``window`` whole minutes back is index -(w+1).
    done_in_window = [1] + [0] * window
    done_before = [1] + [0] * (window + 1)

    waited = window * 60.0
    assert firing(overview(queue(ready=5, oldest_age_s=waited, done=done_in_window))) == set()
    # failed ones ran too
    assert firing(overview(queue(ready=5, oldest_age_s=waited, failed=done_in_window))) == set()
    assert firing(overview(queue(ready=5, oldest_age_s=waited, done=done_before))) == {
        ("FintaskQueueStalled", QUEUE)
    }
    assert firing(overview(queue(ready=0))) == set()


def test_messages_that_have_not_waited_the_window_have_not_stalled():
    # A queue just filled, or a fleet that began counting a minute ago: nothing to say yet.
    young = alerts.STALLED_WINDOW_MIN * 60.0 - 1
    assert firing(overview(queue(ready=5, oldest_age_s=young))) == set()


def test_a_stalled_queue_that_is_paused_says_so():
    paused = queue(ready=5, oldest_age_s=alerts.STALLED_WINDOW_MIN * 60.0, paused=True)
    (alert,) = evaluate(overview(paused), Readings({}, None))

    assert alert.rule.name == "FintaskQueueStalled"
    assert "5 messages wait but none was processed for 10 minutes (the queue is paused)" in (
        alert.text
    )


def test_a_high_error_rate_fires_past_its_share_at_more_than_its_minimum_rate():
    # 5 whole minutes and the one in progress: 300 s for the rate.
    assert firing(overview(queue(done=[94], failed=[6]))) == {("FintaskHighErrorRate", QUEUE)}
    assert firing(overview(queue(done=[95], failed=[5]))) == set()  # 5 % is not more than 5 %
    assert firing(overview(queue(done=[2], failed=[1]))) == set()  # 3 runs in 300 s: 0.01/s
    assert firing(overview(queue(done=[3], failed=[1]))) == {("FintaskHighErrorRate", QUEUE)}
    failed_long_ago = [50] + [0] * (alerts.ERROR_WINDOW_MIN + 1)
    assert firing(overview(queue(done=[10], failed=failed_long_ago))) == set()


def test_new_dead_letters_fire_for_their_queue():
    seen = overview(queue(), queue("emails"))

    assert firing(seen, new_dead_letters={QUEUE: 2, "emails": 0}) == {
        ("FintaskDeadLettersGrowing", QUEUE)
    }


def test_an_outbox_failure_fires_within_its_window_only():
    now = dt.datetime.fromtimestamp(NOW_MS / 1000, dt.UTC)
    window = dt.timedelta(minutes=alerts.OUTBOX_FAILED_WINDOW_MIN)

    assert firing(overview(), outbox_failed_at=now - window + dt.timedelta(seconds=5)) == {
        ("FintaskOutboxMessagesFailed", "outbox")
    }
    assert firing(overview(), outbox_failed_at=now - window - dt.timedelta(seconds=5)) == set()


def test_critical_alerts_come_first():
    backlog = queue(
        ready=alerts.BACKLOG_READY_MAX + 1, oldest_age_s=alerts.STALLED_WINDOW_MIN * 60.0
    )
    seen = overview(backlog, consumers_alive=0)

    names = [alert.rule.name for alert in evaluate(seen, Readings({}, None))]

    assert names == ["FintaskNoConsumers", "FintaskQueueStalled", "FintaskQueueBacklog"]


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite alone: the readings are one query of the outbox."""
    return f"sqlite:///{tmp_path / 'fintask.db'}"


def test_a_dead_letter_is_new_for_the_window_after_it_died(database, dead_letters, client):
    dead_letters.make(QUEUE)
    now_ms = current_millis()
    window_ms = alerts.DEAD_LETTERS_WINDOW_MIN * 60_000

    with Session(default_engine()) as session:
        now = read_readings(client, session, [QUEUE, "emails"], now_ms=now_ms)
        later = read_readings(client, session, [QUEUE], now_ms=now_ms + window_ms + 1_000)

    assert now.new_dead_letters == {QUEUE: 1, "emails": 0}
    assert later.new_dead_letters == {QUEUE: 0}


def test_the_latest_outbox_failure_is_read_from_the_database(database, client):
    failed_at = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=3)
    with transaction() as session:
        for minutes_earlier in (0, 60):
            session.add(
                OutboxMessage(
                    message_id=str(uuid.uuid4()),
                    actor_name="send_email",
                    queue_name="emails",
                    kwargs={},
                    failed_at=failed_at - dt.timedelta(minutes=minutes_earlier),
                    error="ActorNotFound: send_email",
                )
            )

    with Session(default_engine()) as session:
        readings = read_readings(client, session, [], now_ms=current_millis())

    assert readings.outbox_failed_at == failed_at


def test_the_overview_page_lists_every_rule_of_the_file_with_how_or_why_not(database, redis_env):
    browser, _ = signed_in("viewer")

    page = browser.get("/console").text

    for name in file_rules():
        row = re.search(rf'<tr data-rule="{name}" data-evaluated="(yes|no)">(.*?)</tr>', page, re.S)
        assert row, f"{name} is not on the overview's list of rules"
        if row.group(1) == "no":
            reason = next(r.reason for r in alerts.NOT_EVALUABLE if r.name == name)
            assert f"not evaluated here: {reason}" in html.unescape(row.group(2))
        else:
            wait = file_rules()[name]["for"]
            assert f"<td>{wait}</td>" in row.group(2)
