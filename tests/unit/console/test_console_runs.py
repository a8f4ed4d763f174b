"""The console's Runs and Jobs pages: chunked runs with their progress bar, rate and ETA, and
pause, resume and cancel as an operator takes them (confirmed, audited, refused to a viewer);
provider refresh jobs with their state, progress and redacted error, by status, a page at a
time. Runs and jobs are rows written to the test's database, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import re
import uuid

import pytest

from app.db.models import Job, JobStatus
from app.db.session import transaction
from chunking import ChunkRun, RunStatus
from chunking.models import utcnow
from tests.support.console import act, audited, row, signed_in

#: The page every action of these tests comes back to.
BACK = "/console/runs"

pytest_plugins = ["tests.support.refresh_fixtures"]  # its fixtures: account

_NEXT = re.compile(r'href="([^"]+)" data-page="next"')

#: A run fintask declares (``actors.runs.CHUNKED_RUNS``), so one that can be resumed.
RUN_NAME = "weekly_report_chunk"


def a_run(**fields: object) -> int:
    """A run row as a chunked run leaves it; its id."""
    defaults: dict[str, object] = {"name": RUN_NAME, "status": RunStatus.RUNNING, "processed": 0}
    with transaction() as session:
        run = ChunkRun(**{**defaults, **fields})
        session.add(run)
    return run.id


def status_of(run_id: int) -> str:
    with transaction() as session:
        return session.get_one(ChunkRun, run_id).status


def test_a_running_run_shows_its_progress_bar_rate_and_eta(database, redis_env):
    run_id = a_run(
        processed=400,
        estimated_total=1_000,
        resumed_at=utcnow() - dt.timedelta(seconds=400),
    )
    browser, _ = signed_in("viewer")

    page = browser.get("/console/runs")

    assert page.status_code == 200
    shown = row(page.text, "data-run-id", run_id)
    assert '<span class="badge running">running</span>' in shown
    assert '<progress value="400" max="1000">' in shown
    assert "400 / 1000 (40.0%)" in shown
    assert '<td class="number" data-field="rate">1.0/s</td>' in shown
    assert '<td class="number" data-field="eta">10 min' in shown
    assert "data-action=" not in shown  # a viewer has no levers


def test_a_run_without_a_known_total_has_a_bar_that_says_so(database, redis_env):
    run_id = a_run(processed=7)
    browser, _ = signed_in("viewer")

    shown = row(browser.get("/console/runs").text, "data-run-id", run_id)

    assert "<progress>?</progress> 7" in shown
    assert "total unknown" in shown


def test_an_operator_pauses_a_running_run_and_the_database_says_paused(database, redis_env):
    run_id = a_run(processed=10, estimated_total=100)
    browser, csrf = signed_in("operator")
    assert 'data-action="pause"' in row(browser.get("/console/runs").text, "data-run-id", run_id)

    _, page = act(browser, csrf, f"/console/runs/{run_id}/pause", BACK)

    assert status_of(run_id) == RunStatus.PAUSED
    assert audited() == [("token:operator-token", "run.pause", str(run_id))]
    assert f'<p class="flash ok" role="status">run {run_id} paused</p>' in page
    shown = row(page, "data-run-id", run_id)
    assert '<td data-field="status"><span class="badge paused">paused</span>' in shown
    assert 'data-action="resume"' in shown and 'data-action="pause"' not in shown


def test_an_operator_resumes_a_paused_run(database, redis_env, stub_broker):
    run_id = a_run(status=RunStatus.PAUSED, processed=10, estimated_total=100)
    browser, csrf = signed_in("operator")

    act(browser, csrf, f"/console/runs/{run_id}/resume", BACK)

    assert status_of(run_id) == RunStatus.RUNNING
    assert audited() == [("token:operator-token", "run.resume", str(run_id))]


def test_a_run_this_release_does_not_declare_offers_no_resume_and_refuses_one(database, redis_env):
    run_id = a_run(name="retired_chunk", status=RunStatus.PAUSED)
    browser, csrf = signed_in("operator")

    shown = row(browser.get("/console/runs").text, "data-run-id", run_id)
    refused = browser.post(f"/console/runs/{run_id}/resume", data={"csrf_token": csrf})

    assert 'data-action="resume"' not in shown and 'data-action="cancel"' in shown
    assert refused.status_code == 409
    assert "which this release cannot resume" in refused.text
    assert status_of(run_id) == RunStatus.PAUSED


def test_an_operator_cancels_a_run_for_good(database, redis_env):
    run_id = a_run(status=RunStatus.FAILED, error="chunk 3 failed")
    browser, csrf = signed_in("operator")

    act(browser, csrf, f"/console/runs/{run_id}/cancel", BACK)

    assert status_of(run_id) == RunStatus.CANCELLED
    shown = row(browser.get("/console/runs").text, "data-run-id", run_id)
    assert "data-action=" not in shown  # nothing left to do to it


def test_an_action_the_run_has_moved_past_is_a_failed_result_line(database, redis_env):
    run_id = a_run(status=RunStatus.DONE, processed=5, estimated_total=5)
    browser, csrf = signed_in("operator")

    _, page = act(browser, csrf, f"/console/runs/{run_id}/pause", BACK)

    assert f'<p class="flash failed" role="status">run {run_id} was not paused: it is done</p>' in (
        page
    )
    assert status_of(run_id) == RunStatus.DONE


def test_a_viewers_post_is_refused_and_the_run_keeps_running(database, redis_env):
    run_id = a_run()
    browser, csrf = signed_in("viewer")

    refused = browser.post(
        f"/console/runs/{run_id}/pause",
        data={"csrf_token": csrf, "back": "/console/runs", "confirmed": "yes"},
    )

    assert refused.status_code == 403
    assert "acting needs operator" in refused.text
    assert status_of(run_id) == RunStatus.RUNNING
    assert audited() == []


@pytest.mark.parametrize(("path", "status"), [("/99999/pause", 404), ("/abc/cancel", 422)])
def test_an_unknown_or_malformed_run_is_a_readable_page(database, redis_env, path, status):
    browser, csrf = signed_in("operator")

    answer = browser.post(f"/console/runs{path}", data={"csrf_token": csrf})

    assert answer.status_code == status
    assert "<h1>" in answer.text and "Traceback" not in answer.text


def test_a_runs_error_is_shown_redacted(database, redis_env):
    run_id = a_run(status=RunStatus.FAILED, error="SMTP 550 for ada@example.com")
    browser, _ = signed_in("viewer")

    shown = row(browser.get("/console/runs").text, "data-run-id", run_id)

    assert "SMTP 550 for &lt;email&gt;" in shown
    assert "ada@example.com" not in shown


def test_the_runs_live_region_answers_the_table_alone(database, redis_env):
    run_id = a_run()
    browser, _ = signed_in("operator")

    live = browser.get("/console/runs/live", headers={"X-Console-Fetch": "1"})

    assert f'data-run-id="{run_id}"' in live.text
    assert 'name="back" value="/console/runs"' in live.text  # actions come back to the page
    assert "<html" not in live.text


def test_no_runs_is_said_in_words(database, redis_env):
    browser, _ = signed_in("viewer")

    assert "No chunked run has been started yet." in browser.get("/console/runs").text


def jobs(account_id: int, count: int, *, status: JobStatus, error: str | None = None) -> list[str]:
    """``count`` refresh jobs of one account, the first the most recently updated; their ids."""
    now = utcnow()
    with transaction() as session:
        made = [
            Job(
                id=str(uuid.uuid4()),
                kind="refresh",
                account_id=account_id,
                status=status.value,
                progress=100 if status == JobStatus.DONE else 30,
                error=error,
                details={},
                deadline_at=now + dt.timedelta(minutes=5),
                updated_at=now - dt.timedelta(seconds=index),
            )
            for index in range(count)
        ]
        session.add_all(made)
    return [job.id for job in made]


def test_the_jobs_page_shows_state_progress_and_the_error_redacted(database, redis_env, account):
    (failed,) = jobs(
        account.id, 1, status=JobStatus.FAILED, error="deadline: no answer for ada@example.com"
    )
    (done,) = jobs(account.id, 1, status=JobStatus.DONE)
    browser, _ = signed_in("viewer")

    page = browser.get("/console/jobs")

    assert page.status_code == 200
    shown = row(page.text, "data-job-id", failed)
    assert '<span class="badge failed">failed</span>' in shown
    assert '<progress value="30" max="100">' in shown
    assert "deadline: no answer for &lt;email&gt;" in shown
    assert "ada@example.com" not in page.text
    assert '<span class="badge done">done</span>' in row(page.text, "data-job-id", done)
    assert "failed (1)" in page.text and "done (1)" in page.text


def test_jobs_filter_by_status_and_page_through(database, redis_env, account):
    done = jobs(account.id, 55, status=JobStatus.DONE)
    (failed,) = jobs(account.id, 1, status=JobStatus.FAILED, error="boom")
    browser, _ = signed_in("viewer")

    first = browser.get("/console/jobs", params={"status": "done"})
    assert first.text.count("<tr data-job-id=") == 50
    assert failed not in first.text
    older = _NEXT.search(first.text)
    assert older is not None
    second = browser.get(older.group(1).replace("&amp;", "&"))

    shown = [job_id for job_id in done if f'data-job-id="{job_id}"' in first.text + second.text]
    assert shown == done
    assert second.text.count("<tr data-job-id=") == 5
    assert 'data-page="next"' not in second.text


@pytest.mark.parametrize(
    ("params", "status"), [({"status": "lost"}, 422), ({"cursor": "not-a-cursor"}, 400)]
)
def test_a_bad_filter_or_cursor_is_a_readable_page(database, redis_env, params, status):
    browser, _ = signed_in("viewer")

    answer = browser.get("/console/jobs", params=params)

    assert answer.status_code == status
    assert "<h1>" in answer.text and "Traceback" not in answer.text


def test_no_jobs_is_said_in_words(database, redis_env):
    browser, _ = signed_in("viewer")

    page = browser.get("/console/jobs", params={"status": "failed"})

    assert "No job is failed." in page.text
