"""Batch control (``app.control.batches``): progress with rate and ETA on fixed clocks, the API,
the CLI and /metrics on the test's own Redis, and the paths where a member never reaches a
worker thread (dead-lettered by the consumer, cancelled or purged from its queue, its run
cancelled), each recorded in its batch."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import redis
from click.testing import CliRunner
from dramatiq import Message
from sqlalchemy import Engine

from app.cli.main import main
from app.control.actions import Operator, WrongState
from app.control.batches import BatchView
from app.db.session import new_session, transaction
from app.wakeup_broker import WakeupRedisBroker
from chunking import Batches, BatchMembers, ChunkRun
from chunking.batch_progress import BatchProgress
from pipelines.batches import BATCHES
from tests.support.batches import a_batch
from tests.unit.test_control_api import QUEUE, an_actor_of, api, audited, token  # noqa: F401
from tests.unit.test_metrics_web import scrape, value

T0 = dt.datetime(2026, 12, 1, 20, 0, tzinfo=dt.UTC)
WHO = "token:ops"


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite alone: what matters here is Redis and the audit rows."""
    return f"sqlite:///{tmp_path / 'fintask.db'}"


@pytest.fixture
def operator(database: Engine, redis_env: str, client: redis.Redis) -> Iterator[Operator]:
    with new_session() as session:
        yield Operator(WHO, session, client, dramatiq.get_broker(), BATCHES)


def progress(**changes: Any) -> BatchProgress:
    """A sealed batch of 100 created at ``T0``, 40 succeeded and 10 failed."""
    fields: dict[str, Any] = {
        "batch_id": "b1", "name": "report", "state": "sealed", "added": 100, "total": 100,
        "succeeded": 40, "failed": 10, "failed_by_kind": {"dead_lettered": 10}, "pending": 50,
        "cancelled": False, "parent": None, "created_at": T0, "sealed_at": T0,
        "completed_at": None, "cancelled_at": None,
    }  # fmt: skip
    return BatchProgress(**{**fields, **changes})


def members_in_redis(redis_url: str, batch_id: str, count: int) -> list[Message[Any]]:
    """``count`` ready messages of ``QUEUE`` in Redis, members 0.. of ``batch_id``."""
    producer = WakeupRedisBroker(url=redis_url, middleware=[])
    actor = an_actor_of(QUEUE)
    sent = [
        producer.enqueue(Message(QUEUE, actor, (), {"batch_member": [batch_id, i]}, {}))
        for i in range(count)
    ]
    producer.client.close()
    return sent


# 1. Rate, ETA, percent -------------------------------------------------------------------------


def test_rate_counts_since_creation_and_eta_is_what_is_pending_at_that_rate():
    view = BatchView.of(progress(), now=T0 + dt.timedelta(seconds=10))

    assert (view.done, view.percent, view.rate_per_s, view.eta_s) == (50, 50.0, 5.0, 10.0)


def test_an_open_batch_has_no_eta_nor_percent_and_a_fresh_one_no_rate():
    open_batch = progress(state="open", total=None)
    fresh = progress(succeeded=0, failed=0, pending=100)

    assert BatchView.of(open_batch, now=T0 + dt.timedelta(seconds=10)).eta_s is None
    assert BatchView.of(open_batch, now=T0 + dt.timedelta(seconds=10)).percent is None
    assert BatchView.of(fresh, now=T0 + dt.timedelta(seconds=10)).rate_per_s is None
    assert BatchView.of(fresh, now=T0 + dt.timedelta(seconds=10)).eta_s is None


def test_a_complete_batch_keeps_its_average_rate_and_a_cancelled_one_has_none():
    done = progress(state="fired", succeeded=90, pending=0, completed_at=T0 + dt.timedelta(10))
    cancelled = progress(state="fired", cancelled=True, pending=0, completed_at=T0)

    later = BatchView.of(done, now=T0 + dt.timedelta(days=3))
    assert (later.percent, later.eta_s) == (100.0, 0.0)
    assert later.rate_per_s == pytest.approx(100 / (10 * 86_400))
    assert BatchView.of(cancelled, now=T0).rate_per_s is None


# 2. The API ------------------------------------------------------------------------------------


def test_a_viewer_reads_batches_their_progress_and_failed_members_page_by_page(api):  # noqa: F811
    viewer = token("viewer")
    batch_id = a_batch(250, failed=150, succeeded=50)

    listed = api.get("/api/batches", headers=viewer)
    shown = api.get(f"/api/batches/{batch_id}", headers=viewer).json()
    pages, cursor = [], None
    while True:
        page = api.get(
            f"/api/batches/{batch_id}/failed", params={"cursor": cursor} if cursor else {},
            headers=viewer,
        ).json()  # fmt: skip
        pages.append(page["items"])
        if (cursor := page["next_cursor"]) is None:
            break

    assert [b["batch_id"] for b in listed.json()["items"]] == [batch_id]
    assert shown["state"] == "sealed"
    assert (shown["succeeded"], shown["failed"], shown["pending"]) == (50, 150, 50)
    assert (shown["done"], shown["percent"]) == (200, 80.0)
    assert shown["failed_by_kind"] == {"dead_lettered": 150}
    assert shown["rate_per_s"] > 0 and shown["eta_s"] > 0
    failed = sorted(m["ordinal"] for items in pages for m in items)
    assert failed == list(range(150)) and len(pages) > 1
    assert pages[0][0]["reason"].startswith("RuntimeError: member")


def test_bad_batch_input_is_a_readable_problem(api):  # noqa: F811
    viewer = token("viewer")
    batch_id = a_batch(1)

    unknown = api.get("/api/batches/nope", headers=viewer)
    unknown_failed = api.get("/api/batches/nope/failed", headers=viewer)
    bad_cursor = api.get(f"/api/batches/{batch_id}/failed?cursor=xyz", headers=viewer)
    viewer_cancel = api.post(f"/api/batches/{batch_id}/cancel", headers=viewer)

    assert unknown.status_code == 404 and "no batch 'nope'" in unknown.json()["detail"]
    assert unknown_failed.status_code == 404
    assert bad_cursor.status_code == 400 and "pass next_cursor" in bad_cursor.json()["detail"]
    assert viewer_cancel.status_code == 403
    assert BATCHES.progress(batch_id).state == "sealed"


def test_an_operator_cancels_a_batch_once_audited_and_a_complete_one_is_a_409(api):  # noqa: F811
    operator = token("operator")
    batch_id = a_batch(3, succeeded=1)

    cancelled = api.post(f"/api/batches/{batch_id}/cancel", headers=operator)
    again = api.post(f"/api/batches/{batch_id}/cancel", headers=operator)
    unknown = api.post("/api/batches/nope/cancel", headers=operator)

    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["cancelled_members"] == 2
    assert cancelled.json()["batch"]["failed_by_kind"] == {"cancelled": 2}
    assert again.status_code == 409 and "complete already" in again.json()["detail"]
    assert unknown.status_code == 404
    assert audited("batch.cancel") == [("token:operator-token", batch_id, 2)]


# 3. The CLI ------------------------------------------------------------------------------------


def test_the_cli_lists_shows_pages_and_cancels_batches_audited(database, redis_env):
    batch_id = a_batch(4, failed=1, succeeded=1)
    runner = CliRunner()

    listed = runner.invoke(main, ["batches", "list"])
    shown = runner.invoke(main, ["batches", "show", batch_id])
    failed = runner.invoke(main, ["batches", "failed", batch_id])
    cancelled = runner.invoke(main, ["batches", "cancel", batch_id])
    again = runner.invoke(main, ["batches", "cancel", batch_id])
    unknown = runner.invoke(main, ["batches", "show", "nope"])

    assert listed.exit_code == 0 and batch_id in listed.output and "2/4 (50.0%)" in listed.output
    assert "failed by kind: dead_lettered 1" in shown.output
    assert "RuntimeError: member 0 failed" in failed.output
    assert cancelled.exit_code == 0 and "2 pending members" in cancelled.output
    assert again.exit_code == 1 and "complete already" in again.output
    assert unknown.exit_code == 1 and unknown.output.strip() == (
        "Error: no batch 'nope': never created, or expired a week after it completed"
    )
    assert [target for _, target, _ in audited("batch.cancel")] == [batch_id]


# 4. /metrics -----------------------------------------------------------------------------------


def test_metrics_count_unfinished_batches_by_state_and_their_pending_members(database, redis_env):
    a_batch(5, succeeded=2)
    a_batch(3, seal=False)
    a_batch(1, succeeded=1)

    samples = scrape()

    assert value(samples, "fintask_batches_unfinished", state="sealed") == 1
    assert value(samples, "fintask_batches_unfinished", state="open") == 1
    assert value(samples, "fintask_batch_members_pending") == 3 + 3
    assert value(samples, "fintask_metrics_source_up", source="batches") == 1


# 6. Members no worker thread sees -------------------------------------------------------------


def test_a_member_the_consumer_dead_letters_is_recorded_as_failed(redis_url, client):
    batches = Batches(client=client, prefix=f"test-batch:{uuid.uuid4().hex}")
    broker = WakeupRedisBroker(url=redis_url, middleware=[BatchMembers(batches=batches)])
    batches._broker = broker
    dramatiq.actor(lambda **kwargs: None, broker=broker, actor_name="known", queue_name="q")
    batch_id = batches.create(name="skew")
    batches.add(
        batch_id, [Message("q", "gone_actor", (), {}, {}), Message("q", "known", (1,), {}, {})]
    )
    batches.seal(batch_id)
    consumer = broker.consume("q", prefetch=2, timeout=100)
    try:
        for _ in range(100):  # each turn waits at most the consumer's 100 ms timeout
            next(consumer)
            if batches.progress(batch_id).complete:
                break
    finally:
        consumer.close()
        broker.client.close()

    done = batches.progress(batch_id)
    _, failed = batches.failed_members(batch_id)
    assert (done.state, done.failed_by_kind) == ("fired", {"dead_lettered": 2})
    assert "this release has no actor 'gone_actor'" in failed[0].reason
    assert "do not fit" in failed[1].reason
    assert client.zcard("dramatiq:q.XQ") == 2


def test_members_cancelled_or_purged_from_their_queue_are_recorded_as_cancelled(
    operator, redis_env, client
):
    batch_id = a_batch(0, seal=False)
    BATCHES.reserve(batch_id, 4)
    BATCHES.seal(batch_id)
    sent = members_in_redis(redis_env, batch_id, 3)

    operator.cancel(sent[0].message_id)
    operator.purge_queue(QUEUE)

    done = BATCHES.progress(batch_id)
    _, failed = BATCHES.failed_members(batch_id)
    assert (done.failed_by_kind, done.pending) == ({"cancelled": 3}, 1)
    assert [(m.ordinal, m.message_id) for m in failed] == [
        (i, s.message_id) for i, s in enumerate(sent)
    ]
    assert "message cancelled" in failed[0].reason and "queue purged" in failed[2].reason


def test_cancelling_a_run_cancels_its_batch_once_the_cancel_commits(operator):
    batch_id = a_batch(10, seal=False)
    with transaction() as session:
        run = ChunkRun(name="weekly_report", params={}, batch_id=batch_id)
        session.add(run)
        session.flush()
        run_id = run.id

    assert operator.cancel_run(run_id)

    done = BATCHES.progress(batch_id)
    assert (done.state, done.cancelled, done.failed_by_kind) == ("fired", True, {"cancelled": 10})
    with pytest.raises(WrongState, match="complete already"):
        operator.cancel_batch(batch_id)
