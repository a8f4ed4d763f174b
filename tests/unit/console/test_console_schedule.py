"""The console's Schedule page: every periodic job with its spec in words and its ticks, and
run now, pause and resume as an operator takes them (confirmed, audited, refused to a viewer).
The schedule's state is in the test's own Redis; no scheduler runs."""

from __future__ import annotations

import pytest

from app.schedule_control import pause_job, paused_jobs, pending_run_requests
from app.web.console.cron_words import cron_in_words
from scheduler.claims import TickClaims
from scheduler.render import default_schedule
from tests.support.console import act, audited, row, signed_in

#: The page every action of these tests comes back to.
BACK = "/console/schedule"

#: A job of fintask's schedule.
JOB = "purge_raw_blobs"


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("* * * * *", "every minute"),
        ("*/5 * * * *", "every 5 minutes"),
        ("17 3 * * *", "every day at 03:17 UTC"),
        ("0 6 * * *", "every day at 06:00 UTC"),
        ("0 */6 * * *", "every 6 hours, at 00:00, 06:00, 12:00 and 18:00 UTC"),
        ("0 7 * * 1", "every Monday at 07:00 UTC"),
        ("0 * * * *", "every hour, on the hour"),
        ("30 * * * *", "every hour at :30"),
        ("0 6,18 * * *", "every day at 06:00 and 18:00 UTC"),
        ("0 9 * * 1-5", "every Monday to Friday at 09:00 UTC"),
        ("0 0 * * 0", "every Sunday at 00:00 UTC"),
        ("0 0 * * 7", "every Sunday at 00:00 UTC"),
        ("0 0 * * sat,sun", "every Saturday and Sunday at 00:00 UTC"),
        ("*/15 9-17 * * *", "every 15 minutes from 09:00 to 17:59 UTC"),
        ("*/10 * * * 1", "every 10 minutes on Mondays"),
        ("0 */2 * * *", "every 2 hours at :00 from 00:00 UTC"),
        ("@monthly", "on day 1 of every month at 00:00 UTC"),
        ("0 0 1,15 * *", "on days 1 and 15 of every month at 00:00 UTC"),
        ("@yearly", "every year on 1 January at 00:00 UTC"),
        ("0 12 * 6 *", "every day in June at 12:00 UTC"),
    ],
)
def test_a_cron_spec_in_words(spec, words):
    assert cron_in_words(spec) == words


@pytest.mark.parametrize("spec", ["0 0 1 * 1", "not a spec", "61 * * * *"])
def test_a_spec_without_a_sentence_that_would_not_mislead_is_shown_as_it_is(spec):
    # Cron fires "0 0 1 * 1" on the 1st OR on Mondays: no short sentence says that.
    assert cron_in_words(spec) == f"cron “{spec}” (UTC)"


def test_every_job_of_fintasks_schedule_has_its_spec_in_words():
    assert all(not cron_in_words(job.spec).startswith("cron ") for job in default_schedule())


def test_the_page_shows_each_job_its_spec_in_words_and_its_ticks(database, redis_env, client):
    TickClaims(client).claim(JOB, "2026-11-30T03:17:00+00:00", "message-1")
    browser, _ = signed_in("viewer")

    page = browser.get("/console/schedule")

    assert page.status_code == 200
    assert page.text.count("<tr data-job=") == len(default_schedule())
    shown = row(page.text, "data-job", JOB)
    assert "every day at 03:17 UTC" in shown
    assert "<code" in shown and "17 3 * * *" in shown
    assert '<td data-field="last_tick">2026-11-30 03:17:00 UTC</td>' in shown
    assert ":17:00 UTC" in shown.split('data-field="next_tick"')[1]
    assert '<td data-field="paused">no</td>' in shown
    never_sent = row(page.text, "data-job", "send_daily_digests")
    assert '<td data-field="last_tick">—</td>' in never_sent


def test_an_operator_pauses_a_job_once_confirmed_and_the_pause_is_audited(
    database, redis_env, client
):
    browser, csrf = signed_in("operator")
    path = f"/console/schedule/{JOB}/pause"

    asked = browser.post(path, data={"csrf_token": csrf, "back": "/console/schedule"})
    assert f"Pause {JOB}?" in asked.text
    assert paused_jobs(client) == frozenset()  # asking changed nothing

    _, page = act(browser, csrf, path, BACK)

    assert paused_jobs(client) == {JOB}
    assert audited() == [("token:operator-token", "schedule.pause", JOB)]
    assert f'<p class="flash ok" role="status">{JOB} paused' in page
    shown = row(page, "data-job", JOB)
    assert '<span class="badge paused">paused</span>' in shown
    assert 'data-action="resume"' in shown and 'data-action="pause"' not in shown


def test_an_operator_resumes_a_paused_job(database, redis_env, client):
    pause_job(client, JOB)
    browser, csrf = signed_in("operator")

    act(browser, csrf, f"/console/schedule/{JOB}/resume", BACK)

    assert paused_jobs(client) == frozenset()
    assert audited() == [("token:operator-token", "schedule.resume", JOB)]
    assert '<td data-field="paused">no</td>' in row(
        browser.get("/console/schedule").text, "data-job", JOB
    )


def test_run_now_leaves_a_request_the_page_shows_until_a_scheduler_takes_it(
    database, redis_env, client
):
    browser, csrf = signed_in("operator")

    _, page = act(browser, csrf, f"/console/schedule/{JOB}/run", BACK)

    (request,) = pending_run_requests(client)
    assert (request.job, request.requested_by) == (JOB, "token:operator-token")
    assert audited() == [("token:operator-token", "schedule.run", JOB)]
    assert f"a scheduler takes run-now request {request.request_id}" in page
    assert "waiting: asked by token:operator-token" in row(page, "data-job", JOB)


def test_a_viewer_sees_no_levers_and_their_post_is_refused_changing_nothing(
    database, redis_env, client
):
    browser, csrf = signed_in("viewer")

    page = browser.get("/console/schedule")
    refused = browser.post(
        f"/console/schedule/{JOB}/pause",
        data={"csrf_token": csrf, "back": "/console/schedule", "confirmed": "yes"},
    )

    assert "data-action=" not in row(page.text, "data-job", JOB)
    assert refused.status_code == 403
    assert "acting needs operator" in refused.text
    assert paused_jobs(client) == frozenset()
    assert audited() == []


def test_an_unknown_job_is_a_page_naming_the_jobs(database, redis_env):
    browser, csrf = signed_in("operator")

    answer = browser.post("/console/schedule/no_such_job/run", data={"csrf_token": csrf})

    assert answer.status_code == 404
    assert "&#39;no_such_job&#39; is not a job of the schedule" in answer.text
    assert JOB in answer.text
