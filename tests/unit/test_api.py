"""The asynchronous API: 202 + Location, one job per account, readable 404/409/422/503."""

from __future__ import annotations

import datetime as dt
import uuid
from http import HTTPStatus

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from app.db.models import AccountStatus, OutboxMessage, ProviderAccount
from app.db.session import reset_default_engine, transaction
from app.local.ports import free_port
from app.outbox import RELAY_GRACE, relay
from app.web import create_app

pytest_plugins = ["tests.support.refresh_fixtures"]  # its fixtures: sandbox, account, redis_env

#: One past the largest id a table holds (a signed 64-bit integer), and what a 422 says of it.
OUT_OF_RANGE_ID = 2**63
AT_MOST_THE_LARGEST_ID = "less than or equal to 9223372036854775807"


def problem(status: int, detail: str) -> dict[str, object]:
    """The problem details (RFC 9457) the API answers an error with."""
    title = HTTPStatus(status).phrase
    return {"type": "about:blank", "title": title, "status": status, "detail": detail}


@pytest.fixture
def client(database) -> TestClient:
    """The web process's app, answering errors as a client would see them (no re-raise)."""
    return TestClient(create_app(), raise_server_exceptions=False)


def test_a_refresh_answers_202_with_the_job_and_where_to_poll_it(client, account, stub_broker):
    response = client.post(f"/api/accounts/{account.id}/refresh")

    assert response.status_code == 202
    job = response.json()
    assert response.headers["Location"] == f"/api/jobs/{job['id']}"
    assert (job["status"], job["progress"], job["error"]) == ("queued", 0, None)
    assert job["account_id"] == account.id
    assert stub_broker.queues["sync"].qsize() == 1  # the first poll, sent after commit

    polled = client.get(response.headers["Location"])
    assert polled.status_code == 200
    assert polled.json() == job


def test_a_repeated_refresh_returns_the_running_job(client, account, stub_broker):
    first = client.post(f"/api/accounts/{account.id}/refresh")
    again = client.post(f"/api/accounts/{account.id}/refresh")

    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Location"] == first.headers["Location"]
    assert stub_broker.queues["sync"].qsize() == 1


def test_an_unknown_account_is_a_404_that_says_so(client):
    response = client.post("/api/accounts/999/refresh")

    assert response.status_code == 404
    assert response.json() == problem(404, "account 999 does not exist")
    assert response.headers["Content-Type"] == "application/problem+json"


def test_a_blocked_account_is_a_409_that_says_so(client, account, stub_broker):
    with transaction() as session:
        session.get_one(ProviderAccount, account.id).status = AccountStatus.BLOCKED.value

    response = client.post(f"/api/accounts/{account.id}/refresh")

    assert response.status_code == 409
    blocked = f"account {account.id} is blocked; it cannot be refreshed"
    assert response.json() == problem(409, blocked)
    assert stub_broker.queues["sync"].qsize() == 0


def test_an_unknown_job_is_a_404_that_says_so(client):
    job_id = uuid.uuid4()

    response = client.get(f"/api/jobs/{job_id}")

    assert response.status_code == 404
    assert response.json() == problem(404, f"job {job_id} does not exist")


@pytest.mark.parametrize(
    ("method", "path", "field", "words"),
    [
        ("get", "/api/jobs/not-a-job", "job_id", "valid UUID"),
        ("get", "/api/jobs/%ff", "job_id", "valid UUID"),
        ("post", "/api/accounts/abc/refresh", "account_id", "valid integer"),
        ("post", "/api/accounts/0/refresh", "account_id", "greater than or equal to 1"),
        ("post", f"/api/accounts/{OUT_OF_RANGE_ID}/refresh", "account_id", AT_MOST_THE_LARGEST_ID),
        ("post", f"/api/accounts/{'9' * 5000}/refresh", "account_id", "Unable to parse"),
        ("get", "/api/runs/abc", "run_id", "valid integer"),
        ("get", "/api/runs/0", "run_id", "greater than or equal to 1"),
        ("get", f"/api/runs/{OUT_OF_RANGE_ID}", "run_id", AT_MOST_THE_LARGEST_ID),
    ],
)
def test_a_malformed_id_is_a_422_naming_the_parameter(client, method, path, field, words):
    response = getattr(client, method)(path)

    assert response.status_code == 422
    body = response.json()
    assert (body["title"], body["status"]) == (HTTPStatus(422).phrase, 422)
    assert body["detail"].startswith(f"the request is not valid: path parameter {field}: ")
    assert words in body["detail"]
    (error,) = body["errors"]
    assert error["loc"] == ["path", field]
    assert words in error["msg"]


@pytest.mark.parametrize(
    ("method", "path", "detail"),
    [
        ("get", "/api/runs/9223372036854775807", "run 9223372036854775807 does not exist"),
        (
            "post",
            "/api/accounts/9223372036854775807/refresh",
            "account 9223372036854775807 does not exist",
        ),
    ],
)
def test_the_largest_id_is_looked_up_and_not_found(client, stub_broker, method, path, detail):
    response = getattr(client, method)(path)

    assert response.status_code == 404
    assert response.json() == problem(404, detail)


def test_a_body_where_none_is_expected_is_ignored(client, account, stub_broker):
    response = client.post(
        f"/api/accounts/{account.id}/refresh",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )

    assert response.status_code == 202


def test_the_openapi_schema_documents_every_answer_of_a_refresh(client):
    schema = client.get("/openapi.json").json()

    post = schema["paths"]["/api/accounts/{account_id}/refresh"]["post"]
    assert {"200", "202", "404", "409", "422", "503"} <= set(post["responses"])
    assert "/api/jobs/{job_id}" in schema["paths"]
    assert "/api/runs/{run_id}" in schema["paths"]


def test_a_refresh_while_redis_is_down_is_a_503_and_the_relay_starts_it_later(
    client, database, account, stub_broker, monkeypatch
):
    # Given Redis out of reach,
    def redis_down(*args, **kwargs):
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    with monkeypatch.context() as patch:
        patch.setattr(stub_broker, "enqueue", redis_down)

        # when a client asks for a refresh,
        response = client.post(f"/api/accounts/{account.id}/refresh")

    # then it is told the job is recorded but waits for the queue, and where to poll it,
    assert response.status_code == 503
    location = response.headers["Location"]
    job_id = location.rsplit("/", 1)[1]
    assert response.json() == problem(
        503,
        f"job {job_id} is recorded, but the queue could not be reached "
        "(ConnectionError); it starts once the queue answers",
    )
    assert response.headers["Retry-After"] == "60"
    assert client.get(location).json()["status"] == "queued"
    assert stub_broker.queues["sync"].qsize() == 0
    with transaction() as session:
        (row,) = session.scalars(select(OutboxMessage)).all()
        assert (row.actor_name, row.kwargs["job_id"]) == ("poll_refresh", job_id)
        assert (row.sent_at, row.failed_at) == (None, None)

    # and once Redis is back, the relay sends the job's first poll, and a repeated POST finds
    # the same job.
    with transaction() as session:
        old = dt.datetime.now(dt.UTC) - RELAY_GRACE - dt.timedelta(seconds=1)
        session.execute(update(OutboxMessage).values(created_at=old))
    assert relay(database) == 1
    assert stub_broker.queues["sync"].qsize() == 1
    again = client.post(f"/api/accounts/{account.id}/refresh")
    assert (again.status_code, again.headers["Location"]) == (200, location)


def test_an_unreachable_database_is_a_503_that_says_so(client, monkeypatch):
    # Given a database that cannot be reached
    monkeypatch.setenv("DATABASE_URL", f"postgresql+psycopg://fintask@127.0.0.1:{free_port()}/x")
    reset_default_engine()

    # When a client polls a job, then it is told the database is unavailable, not a 500
    response = client.get(f"/api/jobs/{uuid.uuid4()}")

    assert response.status_code == 503
    assert response.json() == problem(
        503, "the database is unavailable (OperationalError); try again shortly"
    )
    assert response.headers["Retry-After"] == "30"


@pytest.mark.usefixtures("redis_env")
def test_a_refresh_reaches_done_through_the_workers(
    client, sandbox, account, stub_broker, stub_worker
):
    sandbox(refresh_seconds=0)

    location = client.post(f"/api/accounts/{account.id}/refresh").headers["Location"]
    for queue in ("sync", "etl", "insights"):
        stub_broker.join(queue)
    stub_worker.join()

    job = client.get(location).json()
    assert (job["status"], job["progress"], job["error"]) == ("done", 100, None)
    assert job["finished_at"] is not None
