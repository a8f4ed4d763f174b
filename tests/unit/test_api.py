"""The asynchronous API: 202 + Location, one job per account, readable 404/409/422."""

from __future__ import annotations

import uuid

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.db.models import AccountStatus, ProviderAccount
from app.db.session import transaction
from app.web.jobs import router

pytest_plugins = ["tests.support.refresh_fixtures"]  # its fixtures: sandbox, account, redis_env


@pytest.fixture
def client(database) -> TestClient:
    web = FastAPI()
    web.include_router(router)
    return TestClient(web)


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
    assert response.json() == {"detail": "account 999 does not exist"}


def test_a_blocked_account_is_a_409_that_says_so(client, account, stub_broker):
    with transaction() as session:
        session.get_one(ProviderAccount, account.id).status = AccountStatus.BLOCKED.value

    response = client.post(f"/api/accounts/{account.id}/refresh")

    assert response.status_code == 409
    assert response.json() == {"detail": f"account {account.id} is blocked; it cannot be refreshed"}
    assert stub_broker.queues["sync"].qsize() == 0


def test_an_unknown_job_is_a_404_that_says_so(client):
    job_id = uuid.uuid4()

    response = client.get(f"/api/jobs/{job_id}")

    assert response.status_code == 404
    assert response.json() == {"detail": f"job {job_id} does not exist"}


@pytest.mark.parametrize(
    ("method", "path", "field", "words"),
    [
        ("get", "/api/jobs/not-a-job", "job_id", "valid UUID"),
        ("post", "/api/accounts/abc/refresh", "account_id", "valid integer"),
        ("post", "/api/accounts/0/refresh", "account_id", "greater than or equal to 1"),
    ],
)
def test_a_malformed_id_is_a_422_naming_the_parameter(client, method, path, field, words):
    response = getattr(client, method)(path)

    assert response.status_code == 422
    (problem,) = response.json()["detail"]
    assert problem["loc"] == ["path", field]
    assert words in problem["msg"]


def test_the_openapi_schema_documents_both_answers_of_a_refresh(client):
    schema = client.get("/openapi.json").json()

    post = schema["paths"]["/api/accounts/{account_id}/refresh"]["post"]
    assert {"200", "202", "404", "409", "422"} <= set(post["responses"])
    assert "/api/jobs/{job_id}" in schema["paths"]


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
