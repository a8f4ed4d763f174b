"""The console's Workers page: each worker process as its record shows it, what it runs now and
for how long, and what a gone worker left waiting for recovery. Records are written to the
test's own Redis as workers publish them (``app.middleware.fleet.publish_record``)."""

from __future__ import annotations

import re
from typing import Any

from dramatiq.common import current_millis

from app.middleware.fleet import live_key, publish_record
from app.web.console.render import timestamp
from chunking.redis_keys import acks_key
from tests.support.console import row, signed_in


def record(worker_id: str, **fields: Any) -> dict[str, Any]:
    """A worker record as ``FleetControl.record`` writes it."""
    now_ms = current_millis()
    return {
        "worker_id": worker_id,
        "host": "host-a",
        "pid": 4242,
        "process_type": "worker",
        "queues": ["emails", "maintenance"],
        "threads": 8,
        "prefetch": 2,
        "started_at_ms": now_ms - 3_600_000,
        "heartbeat_at_ms": now_ms,
        "control_version": 1,
        "stopped": False,
        "processed": 1234,
        "failed": 5,
        "rss_bytes": 150 * 1024 * 1024,
        "running": [],
        **fields,
    }


def test_an_alive_worker_shows_its_record_and_what_it_runs_for_how_long(
    database, redis_env, client
):
    running = {
        "message_id": "msg-running-1",
        "actor_name": "send_email",
        "queue_name": "emails",
        "started_at_ms": current_millis() - 10 * 60_000,
    }
    publish_record(client, record("w-alive", running=[running]), stopped=False)
    browser, _ = signed_in("viewer")

    page = browser.get("/console/workers")

    assert page.status_code == 200
    shown = row(page.text, "data-worker-id", "w-alive")
    assert '<span class="badge alive">alive</span>' in shown
    for cell in ("host-a", "4242", "worker", "emails, maintenance", ">8<", "150.0 MiB", "1234"):
        assert cell in shown
    assert 'href="/console/messages/msg-running-1"' in shown
    assert "send_email on emails, for 10 min" in shown


def test_a_gone_worker_shows_its_last_heartbeat_and_the_messages_waiting_for_recovery(
    database, redis_env, client
):
    heartbeat_at_ms = current_millis() - 40_000
    last = record("w-gone", heartbeat_at_ms=heartbeat_at_ms)
    publish_record(client, last, stopped=False)
    client.delete(live_key("w-gone"))  # its record expired: no shutdown was published
    client.sadd(acks_key("emails", "w-gone"), "m1", "m2")
    client.sadd(acks_key("maintenance", "w-gone"), "m3")
    publish_record(client, record("w-stopped", stopped=True), stopped=True)
    browser, _ = signed_in("viewer")

    page = browser.get("/console/workers")

    gone = row(page.text, "data-worker-id", "w-gone")
    assert '<span class="badge gone">gone</span>' in gone
    heartbeat = gone.split('data-field="heartbeat">')[1].split("</td>")[0]
    assert heartbeat.startswith(timestamp(heartbeat_at_ms))
    assert re.search(r"\(4\d s ago\)", heartbeat)  # 40-odd seconds ago
    assert "3 messages waiting for recovery" in gone
    assert '<a href="/console/queues/emails?state=held">emails</a> 2' in gone
    assert '<a href="/console/queues/maintenance?state=held">maintenance</a> 1' in gone
    stopped = row(page.text, "data-worker-id", "w-stopped")
    assert '<span class="badge stopped">stopped</span>' in stopped
    assert "waiting for recovery" not in stopped


def test_the_live_region_answers_the_table_alone(database, redis_env, client):
    publish_record(client, record("w-live"), stopped=False)
    browser, _ = signed_in("viewer")

    page = browser.get("/console/workers")
    live = browser.get("/console/workers/live", headers={"X-Console-Fetch": "1"})

    assert 'data-refresh="/console/workers/live"' in page.text
    assert live.status_code == 200
    assert 'data-worker-id="w-live"' in live.text
    assert "<html" not in live.text


def test_no_workers_is_said_in_words(database, redis_env):
    browser, _ = signed_in("viewer")

    page = browser.get("/console/workers")

    assert page.status_code == 200
    assert "No workers have reported in the last day." in page.text
    assert 'id="workers"' not in page.text
