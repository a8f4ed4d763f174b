"""The control plane's HTTP API (``app.web.control``): what each role may do, what each action
changes in the test's own Redis, and a readable 4xx for every bad input."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq import Message
from dramatiq.common import dq_name
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from app import control_state
from app.control import audit, tokens
from app.db.session import new_session, transaction
from app.dead_letters import failure_reason
from app.redis_client import get_redis
from app.wakeup_broker import WakeupRedisBroker
from app.web import control
from app.web.errors import install_error_handlers

#: A queue and an actor every fintask process declares.
QUEUE = "maintenance"
#: An actor of ``QUEUE`` and keyword arguments it takes.
ACTOR, ARGUMENTS = "ping", {"token": "t-1"}
#: An address no page or answer may show: arguments are masked, free text redacted.
EMAIL = "ada@example.com"
#: A traceback as Dramatiq's ``Retries`` keeps it on a message it retries.
TRACEBACK = f"""Traceback (most recent call last):
  File "/app/actors/maintenance.py", line 30, in ping
    send(token)
app.senders.DeliveryError: the mail server refused {EMAIL}
"""
LATER_MS = 3_600_000


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite alone: what matters here is Redis; the audit and token tables on PostgreSQL are
    tests/unit/test_control_audit_tokens.py's."""
    return f"sqlite:///{tmp_path / 'fintask.db'}"


@pytest.fixture
def api(database: Engine, redis_env: str) -> TestClient:
    app = FastAPI()
    app.include_router(control.router)
    install_error_handlers(app)
    return TestClient(app, raise_server_exceptions=False)


def token(role: str) -> dict[str, str]:
    with transaction() as session:
        secret, _ = tokens.create_token(session, name=f"{role}-token", role=role)
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def viewer(api) -> dict[str, str]:
    return token("viewer")


@pytest.fixture
def operator(api) -> dict[str, str]:
    return token("operator")


def an_actor_of(queue_name: str) -> str:
    broker = dramatiq.get_broker()
    return next(
        n for n in broker.get_declared_actors() if broker.get_actor(n).queue_name == queue_name
    )


def enqueue(redis_url: str, count: int) -> list[str]:
    producer = WakeupRedisBroker(url=redis_url, middleware=[])
    actor_name = an_actor_of(QUEUE)
    ids = [producer.enqueue(Message(QUEUE, actor_name, (), {"user_id": 7}, {})).message_id
           for _ in range(count)]  # fmt: skip
    producer.client.close()
    return ids


@contextmanager
def producer_on(redis_url: str) -> Iterator[WakeupRedisBroker]:
    """A fintask broker on the test's Redis, producing and fetching as the fleet's do."""
    broker = WakeupRedisBroker(url=redis_url, middleware=[])
    try:
        yield broker
    finally:
        broker.client.close()


def send(
    redis_url: str,
    *,
    actor_name: str = ACTOR,
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
    delay_ms: int | None = None,
) -> Message[Any]:
    """One message of ``QUEUE`` in Redis: ready, or delayed (retrying with ``retries``)."""
    message = Message(QUEUE, actor_name, args, ARGUMENTS if kwargs is None else kwargs,
                      options or {})  # fmt: skip
    with producer_on(redis_url) as producer:
        return producer.enqueue(message, delay=delay_ms)


def dead_letter(redis_url: str, error: Exception, **sent: Any) -> Message[Any]:
    """A message dead-lettered as a consumer's nack does it, keeping why it died; ``QUEUE``
    holds no other ready message meanwhile (the fetch takes the head)."""
    message = send(redis_url, **sent)
    with producer_on(redis_url) as producer:
        [(redis_id, _)] = producer.fetch(QUEUE, 1)
        assert redis_id == message.options["redis_message_id"]
        assert producer.dead_letter(QUEUE, redis_id, failure_reason(error))
    return message


def hold(redis_url: str, *, delayed: bool = False) -> str:
    """A worker (its broker id) that fetched every message of ``QUEUE`` (or of its delay
    queue) into its ack set, as a consumer prefetching, running, or waiting for an eta does."""
    with producer_on(redis_url) as producer:
        producer.fetch(dq_name(QUEUE) if delayed else QUEUE, 100)
        return producer.broker_id


def audited(action: str) -> list[tuple[str, str, int]]:
    """The audit rows of ``action``, newest first: (who, target, count)."""
    with new_session() as session:
        events, _ = audit.list_events(session, cursor=None, action=action)
        return [(e.who, e.target, e.count) for e in events]


def test_a_viewer_reads_the_queues_and_their_messages_page_by_page(api, viewer, redis_url):
    sent = enqueue(redis_url, 3)

    queues = api.get("/api/queues", headers=viewer)
    first = api.get(f"/api/queues/{QUEUE}/messages?limit=2", headers=viewer)
    second = api.get(
        f"/api/queues/{QUEUE}/messages?limit=2&cursor={first.json()['next_cursor']}",
        headers=viewer,
    )

    assert queues.status_code == 200
    row = next(q for q in queues.json()["items"] if q["queue_name"] == QUEUE)
    assert (row["ready"], row["paused"]) == (3, False)
    listed = [m["message_id"] for m in first.json()["items"] + second.json()["items"]]
    assert listed == sent
    assert second.json()["next_cursor"] is None
    assert first.json()["items"][0]["kwargs"] == {"user_id": 7}
    found = api.get(f"/api/messages/{sent[1]}", headers=viewer)
    assert (found.status_code, found.json()["state"]) == (200, "ready")


def test_a_viewer_may_not_act(api, viewer):
    answer = api.post(f"/api/queues/{QUEUE}/pause", headers=viewer)
    assert answer.status_code == 403
    assert answer.headers["content-type"] == "application/problem+json"


def test_an_operator_pauses_and_resumes_a_queue_and_each_is_audited(api, operator, client):
    paused = api.post(f"/api/queues/{QUEUE}/pause", headers=operator)
    assert paused.json() == {"queue_name": QUEUE, "paused": True, "changed": True}
    assert control_state.read_state(client).paused == {QUEUE}
    listed = api.get("/api/queues", headers=operator).json()["items"]
    assert next(q for q in listed if q["queue_name"] == QUEUE)["paused"] is True

    api.post(f"/api/queues/{QUEUE}/resume", headers=operator)
    assert control_state.read_state(client).paused == frozenset()
    audit = api.get("/api/audit", headers=operator).json()["items"]
    assert [(e["action"], e["target"], e["who"]) for e in audit][:2] == [
        ("queue.resume", QUEUE, "token:operator-token"),
        ("queue.pause", QUEUE, "token:operator-token"),
    ]


def test_a_purge_needs_the_queues_name_and_removes_only_ready_messages(
    api, operator, redis_url, client: redis.Redis
):
    enqueue(redis_url, 4)

    refused = api.post(f"/api/queues/{QUEUE}/purge", json={"confirm": "emails"}, headers=operator)
    assert refused.status_code == 400
    assert "confirm must be the queue's name" in refused.json()["detail"]
    assert client.llen(f"dramatiq:{QUEUE}") == 4

    purged = api.post(f"/api/queues/{QUEUE}/purge", json={"confirm": QUEUE}, headers=operator)
    assert purged.json() == {"queue_name": QUEUE, "purged": 4}
    assert client.llen(f"dramatiq:{QUEUE}") == client.hlen(f"dramatiq:{QUEUE}.msgs") == 0


def test_cancel_removes_a_ready_message_and_a_dry_run_only_counts(api, operator, redis_url, client):
    first, *_ = enqueue(redis_url, 3)
    actor_name = an_actor_of(QUEUE)

    cancelled = api.post(f"/api/messages/{first}/cancel", json={"mode": "soft"}, headers=operator)
    assert cancelled.json() == {"message_id": first, "state": "ready", "removed": True,
                                "revoked": True}  # fmt: skip
    counted = api.post(
        f"/api/actors/{actor_name}/cancel", json={"arguments": {"user_id": 7}}, headers=operator
    )
    assert counted.json() == {"actor_name": actor_name, "count": 2, "dry_run": True}
    assert client.llen(f"dramatiq:{QUEUE}") == 2
    assert first in control_state.read_state(client).revoked


def test_a_runtime_rate_limit_is_shown_beside_the_declared_one(api, operator, client):
    actor_name = an_actor_of(QUEUE)
    put = api.put(f"/api/actors/{actor_name}/rate-limit", json={"rate": "5 / s"}, headers=operator)
    assert put.status_code == 200
    assert put.json()["override"] == put.json()["effective"] == "5/s"
    assert control_state.read_state(client).limits == {actor_name: "5/s"}
    listed = api.get("/api/limits", headers=operator).json()["items"]
    assert {"actor_name": actor_name, "override": "5/s"}.items() <= next(
        v for v in listed if v["actor_name"] == actor_name
    ).items()
    removed = api.delete(f"/api/actors/{actor_name}/rate-limit", headers=operator)
    assert removed.json() == {"actor_name": actor_name, "changed": True}


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "words"),
    [
        ("get", "/api/queues/nope/messages", None, 404, "'nope' is not a queue of fintask"),
        ("get", "/api/messages/0000", None, 404, "no message 0000"),
        ("post", "/api/messages/0000/cancel", None, 404, "no message 0000"),
        ("post", "/api/queues/nope/pause", None, 404, "'nope' is not a queue"),
        ("put", "/api/actors/nope/rate-limit", {"rate": "5/s"}, 404, "'nope' is not an actor"),
        ("put", "/api/actors/{actor}/rate-limit", {"rate": "fast"}, 422, "is not a rate"),
        ("get", f"/api/queues/{QUEUE}/messages?cursor=bogus", None, 400, "cursor"),
        ("get", "/api/workers?cursor=bogus", None, 400, "cursor"),
        ("get", "/api/audit?cursor=bogus", None, 400, "cursor"),
        ("get", f"/api/queues/{QUEUE}/messages?state=lost", None, 422, "state"),
        ("get", f"/api/queues/{QUEUE}/messages?min_age_s=-1", None, 422, "min_age_s"),
        ("get", f"/api/queues/{QUEUE}/messages?min_age_s=inf", None, 422, "min_age_s"),
        ("post", "/api/messages/0000/requeue", None, 404, "no message 0000"),
        ("delete", "/api/messages/0000", None, 404, "no message 0000"),
        ("post", "/api/messages/0000/run-now", None, 404, "no message 0000"),
    ],
)
def test_every_bad_input_is_a_readable_problem(api, operator, method, path, body, status, words):
    path = path.replace("{actor}", an_actor_of(QUEUE))
    answer = api.request(method.upper(), path, json=body, headers=operator)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert words in answer.json()["detail"]


def test_no_token_is_a_401(api):
    answer = api.get("/api/workers")
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"


def test_an_operator_pauses_and_runs_a_periodic_job(api, operator, viewer, client):
    from app import schedule_control
    from scheduler.render import default_schedule

    job = next(iter(default_schedule())).name
    listed = api.get("/api/schedule", headers=viewer).json()["items"]
    assert {row["name"]: row["paused"] for row in listed}[job] is False

    assert api.post(f"/api/schedule/{job}/pause", headers=operator).json()["changed"] is True
    assert schedule_control.paused_jobs(client) == {job}
    ran = api.post(f"/api/schedule/{job}/run", headers=operator)
    assert ran.status_code == 202
    pending = schedule_control.pending_run_requests(client)
    assert [(r.job, r.request_id) for r in pending] == [(job, ran.json()["request_id"])]
    unknown = api.post("/api/schedule/nope/run", headers=operator)
    assert unknown.status_code == 404
    assert "'nope' is not a job of the schedule" in unknown.json()["detail"]


def test_redis_not_answering_is_a_503_saying_so(api, viewer, monkeypatch):
    from app.local.ports import free_port

    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    get_redis.cache_clear()
    answer = api.get("/api/queues", headers=viewer)
    assert answer.status_code == 503
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["detail"].startswith("Redis is unavailable")


def test_a_dead_letter_is_requeued_once_then_a_409_says_it_is_no_longer_dead(
    api, operator, redis_url, client
):
    dead = dead_letter(redis_url, ValueError("declined"))

    requeued = api.post(f"/api/messages/{dead.message_id}/requeue", headers=operator)
    again = api.post(f"/api/messages/{dead.message_id}/requeue", headers=operator)

    assert requeued.status_code == 200
    assert requeued.json() == {
        "message_id": dead.message_id,
        "redis_message_id": dead.options["redis_message_id"],
        "queue_name": QUEUE,
        "was": "dead",
        "state": "ready",
    }
    assert client.llen(f"dramatiq:{QUEUE}") == 1
    assert client.zcard(f"dramatiq:{QUEUE}.XQ") == 0
    assert again.status_code == 409
    assert "is ready, not a dead letter" in again.json()["detail"]
    assert audited("message.requeue") == [("token:operator-token", dead.message_id, 1)]


def test_delete_removes_a_dead_letter_and_refuses_a_waiting_message(
    api, operator, redis_url, client
):
    dead = dead_letter(redis_url, ValueError("declined"))
    ready = send(redis_url)

    deleted = api.delete(f"/api/messages/{dead.message_id}", headers=operator)
    refused = api.delete(f"/api/messages/{ready.message_id}", headers=operator)

    assert (deleted.status_code, deleted.json()["state"]) == (200, None)
    assert client.zcard(f"dramatiq:{QUEUE}.XQ") == 0
    assert refused.status_code == 409
    assert "cancel it to remove it without running" in refused.json()["detail"]
    assert client.llen(f"dramatiq:{QUEUE}") == 1


def test_run_now_moves_a_delayed_message_has_a_held_one_released_and_409s_a_running_one(
    api, operator, redis_url, client
):
    delayed = send(redis_url, delay_ms=LATER_MS)
    moved = api.post(f"/api/messages/{delayed.message_id}/run-now", headers=operator)
    held = send(redis_url, delay_ms=LATER_MS)
    running = send(redis_url)
    hold(redis_url, delayed=True)
    worker = hold(redis_url)
    released = api.post(f"/api/messages/{held.message_id}/run-now", headers=operator)
    refused = api.post(f"/api/messages/{running.message_id}/run-now", headers=operator)

    assert (moved.status_code, moved.json()["was"], moved.json()["state"]) == (
        200,
        "delayed",
        "ready",
    )
    assert (released.status_code, released.json()["was"], released.json()["state"]) == (
        200,
        "held",
        "held",
    )
    assert control_state.read_state(client).released == {held.options["redis_message_id"]}
    assert refused.status_code == 409
    assert f"held by worker {worker}, fetched from its ready queue" in refused.json()["detail"]
    assert audited("message.run_now") == [
        ("token:operator-token", held.message_id, 1),
        ("token:operator-token", delayed.message_id, 1),
    ]


def test_a_viewer_may_not_requeue_delete_or_run_now(api, viewer, redis_url, client):
    dead = dead_letter(redis_url, ValueError("declined"))

    answers = [
        api.post(f"/api/messages/{dead.message_id}/requeue", headers=viewer),
        api.delete(f"/api/messages/{dead.message_id}", headers=viewer),
        api.post(f"/api/messages/{dead.message_id}/run-now", headers=viewer),
    ]

    assert [a.status_code for a in answers] == [403, 403, 403]
    assert client.zcard(f"dramatiq:{QUEUE}.XQ") == 1


def test_messages_filter_by_actor_exception_and_age_and_say_how_many_were_read(
    api, viewer, redis_url
):
    declined = dead_letter(redis_url, ValueError(f"declined for {EMAIL}"))
    dead_letter(redis_url, TimeoutError("slow"))
    for _ in range(3):
        send(redis_url, actor_name="relay_outbox", kwargs={})
    pinged = send(redis_url)
    messages = f"/api/queues/{QUEUE}/messages"

    by_actor = api.get(f"{messages}?actor=ping&limit=1", headers=viewer).json()
    by_exception = api.get(f"{messages}?state=dead&exception=ValueError", headers=viewer).json()
    by_age = api.get(f"{messages}?min_age_s=3600", headers=viewer).json()

    assert [m["message_id"] for m in by_actor["items"]] == [pinged.message_id]
    assert (by_actor["scanned"], by_actor["next_cursor"]) == (4, None)
    assert [m["message_id"] for m in by_exception["items"]] == [declined.message_id]
    assert by_exception["items"][0]["reason"] == "ValueError: declined for <email>"
    assert by_exception["items"][0]["exception"] == "ValueError"
    assert (by_age["items"], by_age["scanned"]) == ([], 4)


def test_a_filtered_page_continues_where_its_scan_stopped(api, viewer, redis_url):
    # A page of 1 reads at most 20 entries: the match comes after 25 others.
    for _ in range(25):
        send(redis_url, actor_name="relay_outbox", kwargs={})
    wanted = send(redis_url)
    messages = f"/api/queues/{QUEUE}/messages?actor=ping&limit=1"

    first = api.get(messages, headers=viewer).json()
    second = api.get(f"{messages}&cursor={first['next_cursor']}", headers=viewer).json()

    assert (first["items"], first["scanned"]) == ([], 20)
    assert [m["message_id"] for m in second["items"]] == [wanted.message_id]
    assert second["next_cursor"] is None


def test_a_retrying_messages_traceback_is_shown_redacted(api, viewer, redis_url):
    retrying = send(redis_url, options={"retries": 1, "traceback": TRACEBACK}, delay_ms=LATER_MS)

    found = api.get(f"/api/messages/{retrying.message_id}", headers=viewer).json()

    assert (found["state"], found["exception"]) == ("retrying", "app.senders.DeliveryError")
    assert "refused <email>" in found["traceback"]
    assert EMAIL not in str(found)
