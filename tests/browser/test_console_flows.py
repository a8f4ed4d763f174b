"""An operator's work in the console, in a real browser, against the real web, worker and
scheduler processes: pause a queue and watch it fill on the overview without a reload, then
drain once resumed; open a dead letter and requeue it; cancel a delayed message; run a
periodic job now; pause a chunked run and see it stop.

Every action goes through its confirmation page and ends on a result line, as a person sees
it. What the pages cannot show (a revocation, a scheduler's log) is read where it is kept.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator

import pytest
import redis
from playwright.sync_api import BrowserContext, Locator, Page, expect

from app.control.queue_counts import queue_counts
from app.control.stored import locate
from app.control_state import pause_queue, read_state, resume_queue
from tests.support.browser import PageWatch, screenshot, sign_in
from tests.support.console_stack import ConsoleStack
from tests.support.processes import VENV_BIN, wait_until

pytestmark = pytest.mark.browser

#: A quiet queue: no periodic job sends to it, so what it holds is what the test sent.
QUIET = "insights"
#: How long a live region may take to show a change: it refreshes every 5 s, on a busy machine.
LIVE_S = 30_000
#: The week of the chunked run the test starts (a week's run is started once).
WEEK = "2026-W01"


@pytest.fixture
def operator(page: Page, stack: ConsoleStack) -> Page:
    """The test's page, signed in as an operator, on the overview."""
    sign_in(page, stack.operator_token)
    return page


@pytest.fixture
def stack_redis(stack: ConsoleStack) -> Iterator[redis.Redis]:
    client = stack.redis()
    yield client
    client.close()


def act(page: Page, scope: Locator, action: str) -> Locator:
    """Press ``action``'s button in ``scope``, confirm it, and return the result line."""
    scope.locator(f"button[data-action='{action}']").click()
    page.locator("button[data-action=confirm]").click()
    flash = page.locator("p.flash")
    expect(flash).to_be_visible()
    return flash


def test_a_paused_queue_fills_live_on_the_overview_and_drains_once_resumed(
    operator: Page,
    context: BrowserContext,
    watch: PageWatch,
    stack: ConsoleStack,
    stack_redis: redis.Redis,
) -> None:
    # Given the overview open in one tab, and the queues page in another
    overview = operator
    ready = overview.locator(f"#queues tr[data-queue='{QUIET}'] td[data-field=ready]")
    expect(ready).to_have_text("0")
    overview.evaluate("window.notReloaded = true")
    queues = watch.attach(context.new_page())
    queues.goto("/console/queues")
    row = queues.locator(f"tr[data-queue='{QUIET}']")

    # When the operator pauses the quiet queue, and messages arrive for it
    try:
        flash = act(queues, row, "pause")
        expect(flash).to_have_text(f"Paused {QUIET}")
        expect(flash).to_have_class(re.compile(r"\bok\b"))
        expect(row.locator(".badge.paused")).to_be_visible()
        stack.wait_obeyed()
        sent = [stack.send(QUIET, "recalculate_insights", account_id=n) for n in range(1, 6)]

        # Then the overview shows them waiting, without a reload, and none of them runs
        expect(ready).to_have_text(str(len(sent)), timeout=LIVE_S)
        assert overview.evaluate("window.notReloaded") is True
        queues.goto(f"/console/queues/{QUIET}?state=ready")
        listed = queues.locator("tr[data-message-id]")
        expect(listed).to_have_count(len(sent))
        assert sorted(listed.evaluate_all("rows => rows.map(r => r.dataset.messageId)")) == sorted(
            sent
        )
        screenshot(overview, "console-overview-paused-queue")

        # and once resumed, the workers drain it, as the overview shows live
        queues.goto("/console/queues")
        expect(act(queues, row, "resume")).to_have_text(f"Resumed {QUIET}")
    finally:
        resume_queue(stack_redis, QUIET)
    expect(ready).to_have_text("0", timeout=LIVE_S)
    assert overview.evaluate("window.notReloaded") is True


def test_a_dead_letter_is_opened_and_requeued_to_its_queue(
    operator: Page, stack: ConsoleStack, stack_redis: redis.Redis
) -> None:
    # Given a ping sent without its token: it fails, and (no retries) dead-letters at once
    message_id = stack.send("maintenance", "ping")

    def dead() -> bool:
        found = locate(stack_redis, ["maintenance"], message_id)
        return found is not None and found.state == "dead"

    wait_until(dead, what="the ping to dead-letter")

    # When the operator finds it among the queue's dead letters and opens it
    operator.goto("/console/queues/maintenance?state=dead")
    operator.locator(f"tr[data-message-id='{message_id}'] a").click()

    # Then its page says why it died
    expect(operator.locator("h1")).to_contain_text(message_id)
    expect(operator.locator("dl.fields dd[data-field=state]")).to_have_text("dead")
    expect(operator.locator("pre.traceback")).to_contain_text("token")
    screenshot(operator, "console-dead-letter")

    # and requeued (its queue paused, so that it waits there to be seen), it is ready again
    pause_queue(stack_redis, "maintenance")
    try:
        stack.wait_obeyed()
        flash = act(operator, operator.locator("section.message-actions"), "requeue")
        expect(flash).to_have_class(re.compile(r"\bok\b"))
        expect(operator.locator("dl.fields dd[data-field=state]")).to_have_text("ready")
    finally:
        resume_queue(stack_redis, "maintenance")


def test_a_delayed_message_is_cancelled_and_revoked_across_the_fleet(
    operator: Page, stack: ConsoleStack, stack_redis: redis.Redis
) -> None:
    # Given a ping delayed by an hour (a worker's delay consumer holds it until then)
    message_id = stack.send("maintenance", "ping", delay_ms=3_600_000, token="never")

    # When the operator opens it and cancels it
    operator.goto(f"/console/messages/{message_id}")
    expect(operator.locator("dl.fields dd[data-field=eta]")).to_contain_text("in 59 min")
    flash = act(operator, operator.locator("section.message-actions"), "cancel")

    # Then the result line says so, and the fleet will not start it (that a revoked delayed
    # message never runs, at its eta, is tests/integration/test_control_plane.py's)
    expect(flash).to_have_class(re.compile(r"\bok\b"))
    expect(flash).to_contain_text(f"Cancelled {message_id}")
    assert message_id in read_state(stack_redis).revoked


def test_a_periodic_job_run_now_is_taken_by_the_scheduler(
    operator: Page, stack: ConsoleStack
) -> None:
    # Given the schedule
    operator.goto("/console/schedule")
    row = operator.locator("tr[data-job='report_dead_letters']")

    # When the operator runs a job now
    flash = act(operator, row, "run-now")

    # Then the result line names the request, which the scheduler takes within seconds
    expect(flash).to_have_class(re.compile(r"\bok\b"))
    found = re.search(r"run-now request (\S+)", flash.inner_text())
    assert found is not None, flash.inner_text()
    taken = f"Run-now request {found.group(1)} of report_dead_letters taken"
    log = stack.logs / "scheduler.log"
    wait_until(lambda: taken in log.read_text(), what="the scheduler to take the request")
    operator.reload()
    expect(row.locator("td[data-field=run_requests]")).to_have_text("—")


def test_a_chunked_run_paused_from_the_console_stops(
    operator: Page, stack: ConsoleStack, stack_redis: redis.Redis
) -> None:
    # Given a weekly report run started as an operator starts one, its queue paused so that
    # its first chunk waits (a run over the few seeded users would end in a blink)
    pause_queue(stack_redis, "fanout")
    try:
        stack.wait_obeyed()
        started = subprocess.run(
            [str(VENV_BIN / "fintask"), "reports", "send", "--week", WEEK, "--json"],
            env=stack.env,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        run_id = json.loads(started.stdout)["run_id"]
        assert queue_counts(stack_redis, ["fanout"])[0].ready == 1, "its first chunk waits"
        operator.goto("/console/runs")
        row = operator.locator(f"tr[data-run-id='{run_id}']")
        expect(row.locator("td[data-field=status]")).to_contain_text("running")

        # When the operator pauses it
        flash = act(operator, row, "pause")
        expect(flash).to_have_class(re.compile(r"\bok\b"))
        expect(row.locator("td[data-field=status]")).to_contain_text("paused")
    finally:
        resume_queue(stack_redis, "fanout")

    # Then, once its chunk has come and gone, it stays paused with nothing processed
    wait_until(
        lambda: (
            not any(
                c.ready or c.held or c.in_delay_list for c in queue_counts(stack_redis, ["fanout"])
            )
        ),
        what="the fanout queue to empty",
    )
    operator.reload()
    expect(row.locator("td[data-field=status]")).to_contain_text("paused")
    expect(row.locator("td[data-field=progress]")).to_contain_text("0 /")
    screenshot(operator, "console-runs-paused")
