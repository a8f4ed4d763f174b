"""The API's lists page by keyset cursors; its docs load nothing from elsewhere; a new job says
when to poll it."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import uuid
from http import HTTPStatus

import pytest
from fastapi.testclient import TestClient

from app.cursors import BAD_CURSOR
from app.db.models import Job, JobStatus, utcnow
from app.db.session import transaction
from app.web import create_app
from app.web.jobs import FIRST_POLL_AFTER_S
from chunking import ChunkRun, RunStatus

pytest_plugins = ["tests.support.refresh_fixtures"]  # its fixtures: account

RFC_3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
WHEN = dt.datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=dt.UTC)

# A fixed id: test ids show it, and pytest-xdist needs the same ids in every worker.
A_JOB_ID = "a5f2affc-b9a1-4cbf-8779-30a90133c2aa"


@pytest.fixture
def client(database) -> TestClient:
    return TestClient(create_app(), raise_server_exceptions=False)


def _jobs(account_id: int, *minutes_ago: int, status: JobStatus = JobStatus.DONE) -> list[str]:
    """Finished jobs updated that many minutes before ``WHEN`` (equal ones tie on the time)."""
    with transaction() as session:
        jobs = [
            Job(
                id=str(uuid.uuid4()),
                kind="refresh",
                account_id=account_id,
                status=status.value,
                details={},
                deadline_at=WHEN,
                updated_at=WHEN - dt.timedelta(minutes=minutes),
            )
            for minutes in minutes_ago
        ]
        session.add_all(jobs)
    return [job.id for job in jobs]


def _runs(count: int) -> list[int]:
    with transaction() as session:
        runs = [
            ChunkRun(name="weekly_report_chunk", status=RunStatus.DONE, processed=10)
            for _ in range(count)
        ]
        session.add_all(runs)
    return [run.id for run in runs]


def _pages(client: TestClient, path: str, **params: object) -> list[dict]:
    """Every page of a list, following ``next_cursor`` until it is null (20 pages at most)."""
    pages, cursor = [], None
    for _ in range(20):
        response = client.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        pages.append(response.json())
        cursor = pages[-1]["next_cursor"]
        if cursor is None:
            return pages
    raise AssertionError(f"{path} had no last page: {[p['items'] for p in pages[:3]]}")


def _cursor(key: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).rstrip(b"=").decode()


def test_jobs_are_listed_most_recently_updated_first_a_page_at_a_time(client, account):
    # Three jobs tie on their update time: the id breaks the tie, so no page splits them wrong.
    ids = _jobs(account.id, 5, 1, 3, 3, 3, 0, 9)
    order = sorted(zip([5, 1, 3, 3, 3, 0, 9], ids, strict=True), key=lambda m: (-m[0], m[1]))
    expected = [job_id for _, job_id in reversed(order)]

    pages = _pages(client, "/api/jobs", limit=3)

    assert [len(page["items"]) for page in pages] == [3, 3, 1]
    assert [item["id"] for page in pages for item in page["items"]] == expected
    first = pages[0]["items"][0]
    assert first == client.get(f"/api/jobs/{first['id']}").json()
    assert all(RFC_3339.match(first[field]) for field in ("created_at", "updated_at"))
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", p["next_cursor"]) for p in pages[:-1])


def test_a_job_updated_while_a_client_pages_does_not_repeat_a_row(client, account):
    _jobs(account.id, 4, 3, 2, 1)
    first = client.get("/api/jobs", params={"limit": 2}).json()

    _jobs(account.id, 0)  # newer than every listed job: it would shift an offset by one
    rest = client.get("/api/jobs", params={"limit": 2, "cursor": first["next_cursor"]}).json()

    seen = [item["id"] for item in first["items"] + rest["items"]]
    assert len(set(seen)) == 4
    assert rest["next_cursor"] is None


def test_jobs_are_listed_by_status(client, account):
    failed = _jobs(account.id, 2, 1, status=JobStatus.FAILED)
    _jobs(account.id, 3)

    body = client.get("/api/jobs", params={"status": "failed"}).json()

    assert [item["id"] for item in body["items"]] == failed[::-1]
    assert body["next_cursor"] is None
    assert client.get("/api/jobs", params={"status": "lost"}).status_code == 422


@pytest.mark.parametrize(
    ("path", "cursor"),
    [
        ("/api/jobs", "not a cursor!"),
        ("/api/jobs", "e30"),  # {}: base64 of JSON, not a key
        ("/api/jobs", _cursor([WHEN.replace(tzinfo=None).isoformat(), A_JOB_ID])),
        ("/api/jobs", _cursor([WHEN.isoformat(), "not-a-uuid"])),
        ("/api/jobs", _cursor([WHEN.isoformat(), 5])),
        ("/api/jobs", _cursor([7])),  # a runs cursor
        ("/api/runs", _cursor([0])),
        ("/api/runs", _cursor([True])),
        ("/api/runs", _cursor(["7"])),
        ("/api/runs", _cursor([2**63])),
        ("/api/runs", base64.urlsafe_b64encode(b"\xff\xfe").decode()),
        ("/api/runs", "AAAAA"),  # base64 cut short
    ],
)
def test_a_malformed_cursor_is_a_400_that_says_what_to_pass(client, path, cursor):
    response = client.get(path, params={"cursor": cursor})

    assert response.status_code == 400
    assert response.json() == {
        "type": "about:blank",
        "title": HTTPStatus(400).phrase,
        "status": 400,
        "detail": BAD_CURSOR,
    }


@pytest.mark.parametrize("limit", [0, 201, "x"])
def test_a_limit_out_of_range_is_a_422(client, limit):
    assert client.get("/api/runs", params={"limit": limit}).status_code == 422


def test_runs_are_listed_newest_first_with_their_progress(client):
    ids = _runs(5)

    pages = _pages(client, "/api/runs", limit=2)

    assert [len(page["items"]) for page in pages] == [2, 2, 1]
    items = [item for page in pages for item in page["items"]]
    assert [item["run_id"] for item in items] == ids[::-1]
    assert (items[0]["status"], items[0]["percent"]) == ("done", 100.0)
    assert RFC_3339.match(items[0]["created_at"])
    assert items[0] == client.get(f"/api/runs/{ids[-1]}").json()


def test_an_empty_list_is_one_page_with_no_next_cursor(client):
    assert client.get("/api/runs").json() == {"items": [], "next_cursor": None}
    assert client.get("/api/jobs").json() == {"items": [], "next_cursor": None}


def test_a_new_refresh_says_when_to_poll_it_and_a_repeated_one_does_not(
    client, account, stub_broker
):
    started = client.post(f"/api/accounts/{account.id}/refresh")
    again = client.post(f"/api/accounts/{account.id}/refresh")

    assert started.status_code == 202
    assert started.headers["Retry-After"] == str(FIRST_POLL_AFTER_S)
    assert again.status_code == 200
    assert "Retry-After" not in again.headers


def test_the_openapi_schema_declares_the_headers_of_a_refresh(client):
    responses = client.app.openapi()["paths"]["/api/accounts/{account_id}/refresh"]["post"][
        "responses"
    ]

    assert set(responses["202"]["headers"]) == {"Location", "Retry-After"}
    assert set(responses["200"]["headers"]) == {"Location"}
    assert responses["202"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/JobOut"
    }


def test_the_lists_and_the_control_plane_are_in_the_schema(client):
    paths = client.app.openapi()["paths"]

    assert {"/api/jobs", "/api/runs", "/api/workers", "/api/queues"} <= set(paths)
    assert "400" in paths["/api/jobs"]["get"]["responses"]


def test_the_docs_page_loads_every_file_from_the_app_itself(client):
    page = client.get("/docs")

    assert page.status_code == 200
    assert "http://" not in page.text and "https://" not in page.text
    assert "cdn" not in page.text.lower()
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assets += re.findall(r"url: '([^']+)'", page.text)  # the schema Swagger UI reads
    assert len(assets) == 4, assets
    for asset in assets:
        assert asset.startswith("/"), asset
        assert client.get(asset).status_code == 200, asset


def test_the_redoc_page_loads_every_file_from_the_app_itself(client):
    page = client.get("/redoc")

    assert page.status_code == 200
    assert "http://" not in page.text and "https://" not in page.text
    assets = re.findall(r'(?:src|href|spec-url)="([^"]+)"', page.text)
    assert assets
    for asset in assets:
        assert asset.startswith("/") and client.get(asset).status_code == 200, asset
    # ReDoc's bundle fetches Redocly's logo from a CDN whatever its options: the copy served
    # here has that address taken out.
    assert "cdn.redoc.ly" not in client.get("/docs/redoc.standalone.js").text


def test_the_timestamps_of_a_job_keep_their_microseconds_in_the_cursor(client, account):
    # Two jobs a microsecond apart: a cursor cut to milliseconds would skip or repeat one.
    ids = _jobs(account.id, 0, 0)
    with transaction() as session:
        session.get_one(Job, ids[1]).updated_at = utcnow().replace(microsecond=1)
        session.get_one(Job, ids[0]).updated_at = utcnow().replace(microsecond=2)

    pages = _pages(client, "/api/jobs", limit=1)

    assert [page["items"][0]["id"] for page in pages] == ids
