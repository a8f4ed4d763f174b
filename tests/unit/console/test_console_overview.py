"""The console's Overview (``/console``): each queue's messages by state, its consumers and its
rates per minute, the workers alive, the runs in progress and the alerts firing, as an operator
reads them on the page and in its live region. Messages are put in the test's own Redis as
producers put them (``WakeupRedisBroker``), dead letters as a failing worker makes them."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from typing import Any

import dramatiq
import redis
from dramatiq import Message
from dramatiq.common import current_millis

from app import control_state
from app.control import alerts
from app.control.actions import queue_names
from app.control.queue_counts import SPLIT_MAX
from app.db.session import transaction
from app.middleware.fleet import publish_record, queue_series
from app.middleware.metrics import CONSUMERS_KEY, heartbeats_key
from app.minute_counts import MinuteTally
from app.wakeup_broker import WakeupRedisBroker
from app.web.console.sparkline import sparkline
from chunking import ChunkRun, RunStatus
from chunking.redis_keys import NAMESPACE, delay_queue_key, queue_key
from tests.support.console import console_app, signed_in

pytest_plugins = ["tests.support.inspection_fixtures"]

QUEUE = "maintenance"
LIVE = "/console/overview/live"


class OverviewPage(HTMLParser):
    """The overview as an operator reads it: each queue's cells, the alerts, the runs."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.queues: dict[str, dict[str, str]] = {}
        self.alerts: set[tuple[str, str]] = set()
        self.runs: dict[str, dict[str, str]] = {}
        self.cards: dict[str, str] = {}
        self._row: dict[str, str] | None = None
        self._field: str | None = None
        self._card: str | None = None
        self._text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        if tag == "tr" and "data-queue" in found:
            self._row = self.queues.setdefault(found["data-queue"], {})
        elif tag == "tr" and "data-run-id" in found:
            self._row = self.runs.setdefault(found["data-run-id"], {})
        elif tag == "td" and self._row is not None and "data-field" in found:
            self._field, self._text = found["data-field"], []
        elif tag == "li" and "data-alert" in found:
            self.alerts.add((found["data-alert"], found["data-target"]))
        elif tag == "div" and "data-card" in found:
            self._card = found["data-card"]
        elif tag == "div" and self._card is not None and found.get("class") == "figure":
            self._field, self._text = "card", []
        elif tag == "span" and self._row is not None and found.get("class") == "badge paused":
            self._row["paused"] = "yes"

    def handle_endtag(self, tag: str) -> None:
        text = " ".join("".join(self._text).split())
        if tag == "td" and self._field is not None and self._row is not None:
            self._row[self._field] = text
            self._field = None
        elif tag == "div" and self._field == "card" and self._card is not None:
            self.cards[self._card], self._field, self._card = text, None, None
        elif tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._field is not None:
            self._text.append(data)


def an_actor_of(queue_name: str) -> str:
    broker = dramatiq.get_broker()
    return next(
        n for n in broker.get_declared_actors() if broker.get_actor(n).queue_name == queue_name
    )


def send(
    redis_url: str,
    count: int = 1,
    *,
    delay_ms: int | None = None,
    retries: int = 0,
    sent_ago_ms: int = 0,
) -> None:
    """Put ``count`` messages of ``QUEUE`` in Redis as a producer does."""
    producer = WakeupRedisBroker(url=redis_url, middleware=[])
    options = {"retries": retries} if retries else {}
    for _ in range(count):
        message = Message(
            QUEUE,
            an_actor_of(QUEUE),
            (),
            {"user_id": 7},
            dict(options),
            message_timestamp=current_millis() - sent_ago_ms,
        )
        producer.enqueue(message, delay=delay_ms)
    producer.client.close()


def a_consumer(
    client: redis.Redis, worker_id: str = "w-1", queues: list[str] | None = None
) -> None:
    """A worker process as it shows itself: a broker heartbeat of a registered consumer, and
    its fleet record."""
    now_ms = current_millis()
    client.zadd(heartbeats_key(NAMESPACE), {worker_id: now_ms})
    client.hset(CONSUMERS_KEY, worker_id, json.dumps({"host": "host-a", "booted_at_ms": now_ms}))
    record: dict[str, Any] = {
        "worker_id": worker_id,
        "host": "host-a",
        "pid": 4242,
        "process_type": "worker",
        "queues": queues if queues is not None else [QUEUE],
        "threads": 8,
        "started_at_ms": now_ms - 60_000,
        "heartbeat_at_ms": now_ms,
        "stopped": False,
        "running": [],
    }
    publish_record(client, record, stopped=False)


def processed(client: redis.Redis, *, done: int, failed: int = 0, minutes_ago: int = 1) -> None:
    """Messages of ``QUEUE`` done and failed, counted as a worker's FleetControl counts them."""
    tally = MinuteTally()
    at_ms = current_millis() - minutes_ago * 60_000
    tally.add(queue_series(QUEUE), "done", done, now_ms=at_ms)
    if failed:
        tally.add(queue_series(QUEUE), "failed", failed, now_ms=at_ms)
    tally.flush(client)


def test_a_page_without_a_session_sends_the_browser_to_sign_in(database, redis_env):
    client = console_app()

    page = client.get("/console")
    live = client.get(LIVE, headers={"X-Console-Fetch": "1"})

    assert page.status_code == 303
    assert page.headers["location"] == "/console/sign-in?next=/console"
    assert live.status_code == 401  # the page's script then reloads to the sign-in form


def test_a_viewer_sees_every_queue_with_its_messages_by_state(
    database, redis_env, dead_letters, client
):
    dead_letters.make(QUEUE)
    send(redis_env, 3, sent_ago_ms=125_000)
    send(redis_env, delay_ms=600_000)
    send(redis_env, 2, delay_ms=600_000, retries=1)
    control_state.pause_queue(client, "emails")
    browser, _ = signed_in("viewer")

    answer = browser.get("/console")

    assert answer.status_code == 200
    assert "<h1>Overview</h1>" in answer.text
    page = OverviewPage(answer.text)
    assert sorted(page.queues) == queue_names(dramatiq.get_broker())
    row = page.queues[QUEUE]
    assert (row["ready"], row["delayed"], row["retrying"], row["dead"]) == ("3", "1", "2", "1")
    assert row["oldest_age"].startswith("2 min")
    assert page.queues["emails"]["paused"] == "yes"
    assert "paused" not in row
    assert page.queues["emails"]["ready"] == "0"
    assert page.queues["emails"]["oldest_age"] == "—"


def test_consumers_rates_and_workers_alive_are_shown_with_a_sparkline(database, redis_env, client):
    a_consumer(client)
    processed(client, done=12, failed=2)
    processed(client, done=5, minutes_ago=30)
    browser, _ = signed_in("viewer")

    answer = browser.get("/console")

    page = OverviewPage(answer.text)
    row = page.queues[QUEUE]
    assert (row["consumers"], row["done_per_min"], row["failed_per_min"]) == ("1", "12", "2")
    assert page.queues["emails"]["consumers"] == "0"
    assert row["sparkline"] == "last hour: 17 done, 2 failed; busiest minute 12"
    cell = re.search(r'<tr data-queue="maintenance".*?</tr>', answer.text, re.S)
    assert cell is not None
    assert '<svg class="sparkline"' in cell.group()
    assert '<polyline class="done" points="' in cell.group()
    assert '<polyline class="failed" points="' in cell.group()
    assert " style=" not in answer.text  # the console's CSP allows no inline style
    assert (page.cards["workers"], page.cards["consumers"]) == ("1", "1")
    assert 'data-worker-id="w-1"' in answer.text


def test_alerts_appear_while_their_condition_holds_and_not_otherwise(
    database, redis_env, dead_letters, client
):
    dead_letters.make(QUEUE)
    send(redis_env, 2)
    browser, _ = signed_in("viewer")

    before = OverviewPage(browser.get("/console").text)
    a_consumer(client)
    processed(client, done=40, minutes_ago=0)
    after = OverviewPage(browser.get(LIVE).text)

    # (Its two messages were sent just now: the queue has not stalled, which needs them to
    # have waited ten minutes: tests/unit/test_control_alerts.py.)
    assert before.alerts == {
        ("FintaskNoConsumers", "fleet"),
        ("FintaskDeadLettersGrowing", QUEUE),
    }
    assert before.cards["alerts"] == "2"
    assert after.alerts == {("FintaskDeadLettersGrowing", QUEUE)}


def test_a_long_queue_fires_its_backlog_and_shows_its_delay_list_unsplit(
    database, redis_env, client
):
    # Past these lengths only a list's length is read: ids alone make them what they are.
    client.rpush(queue_key(QUEUE), *(f"r{i}" for i in range(alerts.BACKLOG_READY_MAX + 1)))
    client.rpush(delay_queue_key(QUEUE), *(f"d{i}" for i in range(SPLIT_MAX + 1)))
    a_consumer(client)
    processed(client, done=1, minutes_ago=0)
    browser, _ = signed_in("viewer")

    page = OverviewPage(browser.get("/console").text)

    assert page.alerts == {("FintaskQueueBacklog", QUEUE)}
    row = page.queues[QUEUE]
    assert (row["ready"], row["delayed"], row["retrying"]) == ("10001", "10001 with retrying", "—")


def test_a_quiet_fleet_shows_no_alert_and_says_so(database, redis_env, client):
    a_consumer(client)
    browser, _ = signed_in("viewer")

    answer = browser.get("/console")

    assert OverviewPage(answer.text).alerts == set()
    assert re.search(r'<ul id="alerts"[^>]*>\s*<li class="empty muted">No alert fires', answer.text)
    assert "Prometheus waits" not in answer.text.split('id="alert-rules"')[0]


def test_the_live_region_answers_the_changing_part_alone_read_anew(database, redis_env):
    browser, _ = signed_in("viewer")
    page = browser.get("/console").text
    send(redis_env, 4)

    live = browser.get(LIVE)

    assert f'<div id="overview-live" data-refresh="{LIVE}">' in page
    assert live.status_code == 200
    assert "<html" not in live.text and "<h1>" not in live.text
    assert 'id="alert-rules"' not in live.text  # the rules do not change: only the page has them
    assert OverviewPage(page).queues[QUEUE]["ready"] == "0"
    assert OverviewPage(live.text).queues[QUEUE]["ready"] == "4"


def test_runs_in_progress_are_listed_with_their_progress_and_finished_ones_are_not(
    database, redis_env
):
    with transaction() as session:
        running = ChunkRun(name="weekly_report_chunk", processed=50, estimated_total=200)
        paused = ChunkRun(name="etl_chunk", status=RunStatus.PAUSED, processed=7)
        done = ChunkRun(name="etl_chunk", status=RunStatus.DONE, processed=9, estimated_total=9)
        session.add_all([running, paused, done])
    browser, _ = signed_in("viewer")

    answer = browser.get("/console")

    page = OverviewPage(answer.text)
    assert sorted(page.runs) == sorted([str(running.id), str(paused.id)])
    assert page.runs[str(running.id)]["status"] == "running"
    assert page.runs[str(running.id)]["progress"] == "25 % · 50 of 200"
    assert page.runs[str(paused.id)]["status"] == "paused"
    assert '<progress value="50" max="200"></progress>' in answer.text
    assert page.cards["runs"] == "2"


def test_an_idle_fleet_says_what_is_not_there(database, redis_env):
    browser, _ = signed_in("operator")

    answer = browser.get("/console")

    assert "No chunked run is running or paused." in answer.text
    assert "No worker process is alive: no message is being consumed." in answer.text
    assert OverviewPage(answer.text).cards["workers"] == "0"


def test_a_sparkline_draws_every_series_on_the_scale_of_the_largest_count():
    line = sparkline({"done": [0, 5, 10], "failed": [0, 0, 5]}, width=100, height=20)

    assert (line.peak, line.width, line.view_width) == (10, 100, 2)
    assert [(s.css_class, s.points, s.total) for s in line.lines] == [
        ("done", "0,18.5 1,10 2,1.5", 15),
        ("failed", "0,18.5 1,18.5 2,10", 5),
    ]


def test_a_sparkline_of_nothing_is_its_first_series_flat_at_the_bottom():
    line = sparkline({"done": [0, 0, 0, 0], "failed": [0, 0, 0, 0]}, height=10)

    assert line.peak == 0
    assert [(s.css_class, s.points) for s in line.lines] == [("done", "0,8.5 1,8.5 2,8.5 3,8.5")]
