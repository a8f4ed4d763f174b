"""The console's Limits page: each rate-limited actor's declared and overriding limit, its
limiter's usage and its deferrals per minute, read from the test's own Redis; setting and
clearing an override as an operator does it (confirmed, audited, refused to a viewer), and a
bad rate as a failed result line."""

from __future__ import annotations

from app import control_state
from app.middleware.rate_limits import (
    ALL_PARTITIONS,
    RateLimits,
    deferral_series,
    limiter_key,
    parse_rate,
)
from app.minute_counts import MinuteTally
from tests.support.console import act, audited, row, signed_in

#: The page every action of these tests comes back to.
BACK = "/console/limits"

#: An actor that declares ``rate_limit="5/s"``, and one that declares none.
LIMITED = "download_transactions"
UNLIMITED = "send_email"


def test_each_limited_actor_shows_its_limits_partition_and_an_idle_limiter(database, redis_env):
    browser, _ = signed_in("viewer")

    page = browser.get("/console/limits")

    assert page.status_code == 200
    shown = row(page.text, "data-actor", LIMITED)
    assert '<td data-field="partition">all</td>' in shown
    assert '<td data-field="declared">5/s</td>' in shown
    assert '<td data-field="override">—</td>' in shown
    assert '<td data-field="effective">5/s</td>' in shown
    assert 'data-field="usage"><span class="muted">idle</span>' in shown
    assert '<span data-field="deferred_total">0</span> in the hour' in shown
    assert f'<tr data-actor="{UNLIMITED}">' not in page.text
    assert "data-action=" not in page.text  # a viewer has no levers


def test_usage_is_how_many_slots_the_limiter_has_booked_ahead(database, redis_env, client):
    # Given an override of one start a minute, and three starts taken at once under it
    control_state.set_rate_limit(client, LIMITED, "1/m")
    limits = RateLimits(client=client)
    for _ in range(3):
        limits.acquire(limiter_key(LIMITED), parse_rate("1/m"))
    browser, _ = signed_in("viewer")

    shown = row(browser.get("/console/limits").text, "data-actor", LIMITED)

    # Then the limiter is booked about three minutes ahead: three slots
    assert '<td data-field="effective">1/m</td>' in shown
    assert "(3 starts)" in shown
    assert " min" in shown.split('data-field="usage"')[1].split("</td>")[0]


def test_deferrals_per_minute_show_as_bars_and_a_total(database, redis_env, client):
    tally = MinuteTally()
    tally.add(deferral_series(LIMITED), ALL_PARTITIONS, 4)
    tally.flush(client)
    browser, _ = signed_in("viewer")

    shown = row(browser.get("/console/limits").text, "data-actor", LIMITED)

    assert '<span data-field="deferred_total">4</span> in the hour' in shown
    assert shown.count('<rect x="') == 1  # one minute had deferrals: the tallest bar
    assert 'height="20"></rect>' in shown


def test_an_operator_sets_an_override_once_confirmed_and_it_is_audited(database, redis_env, client):
    browser, csrf = signed_in("operator")
    assert 'data-action="set-limit"' in row(
        browser.get("/console/limits").text, "data-actor", LIMITED
    )

    _, page = act(browser, csrf, "/console/limits/set", BACK, actor=LIMITED, rate="20/s")

    assert control_state.read_state(client).limits == {LIMITED: "20/s"}
    assert audited() == [("token:operator-token", "limit.set", LIMITED)]
    assert f'<p class="flash ok" role="status">{LIMITED} is limited to 20/s' in page
    shown = row(page, "data-actor", LIMITED)
    assert '<td data-field="override"><span class="badge paused">20/s</span></td>' in shown
    assert '<td data-field="effective">20/s</td>' in shown
    assert 'data-action="clear-limit"' in shown


def test_a_bad_rate_is_a_failed_result_line_naming_the_problem(database, redis_env, client):
    browser, csrf = signed_in("operator")

    _, page = act(browser, csrf, "/console/limits/set", BACK, actor=LIMITED, rate="fast")

    assert (
        f'<p class="flash failed" role="status">{LIMITED}: &#39;fast&#39; is not a rate: '
        "write COUNT/s, COUNT/m or COUNT/h" in page
    )
    assert control_state.read_state(client).limits == {}
    assert audited() == []


def test_an_operator_clears_an_override_and_the_declared_limit_applies(database, redis_env, client):
    control_state.set_rate_limit(client, LIMITED, "20/s")
    browser, csrf = signed_in("operator")

    _, page = act(browser, csrf, "/console/limits/clear", BACK, actor=LIMITED)

    assert control_state.read_state(client).limits == {}
    assert audited() == [("token:operator-token", "limit.clear", LIMITED)]
    assert f"{LIMITED}&#39;s override is cleared: its declared 5/s applies again" in page
    assert 'data-action="clear-limit"' not in row(page, "data-actor", LIMITED)


def test_an_actor_that_declares_no_limit_can_be_limited(database, redis_env, client):
    browser, csrf = signed_in("operator")
    page = browser.get("/console/limits")
    assert f"<option>{UNLIMITED}</option>" in page.text

    act(browser, csrf, "/console/limits/set", BACK, actor=UNLIMITED, rate="2/s")

    shown = row(browser.get("/console/limits").text, "data-actor", UNLIMITED)
    assert '<td data-field="declared">—</td>' in shown
    assert '<td data-field="effective">2/s</td>' in shown


def test_a_viewers_post_is_refused_and_changes_nothing(database, redis_env, client):
    browser, csrf = signed_in("viewer")

    refused = browser.post(
        "/console/limits/set",
        data={"csrf_token": csrf, "actor": LIMITED, "rate": "20/s", "confirmed": "yes"},
    )

    assert refused.status_code == 403
    assert "acting needs operator" in refused.text
    assert control_state.read_state(client).limits == {}
    assert audited() == []


def test_an_unknown_actor_is_a_page_naming_the_actors(database, redis_env):
    browser, csrf = signed_in("operator")

    answer = browser.post(
        "/console/limits/set", data={"csrf_token": csrf, "actor": "no_such_actor", "rate": "1/s"}
    )

    assert answer.status_code == 404
    assert "&#39;no_such_actor&#39; is not an actor of fintask" in answer.text
