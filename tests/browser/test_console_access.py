"""Who gets into the console, in a real browser: sign-in and its cookie, sign-out, a viewer's
refused form, and every page rendering with no console error, no request off the server, and
the Content-Security-Policy that keeps inline scripts from running."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect

from app.control_state import read_state
from app.web.console.render import SECTIONS
from app.web.console.security import CONSOLE_CSP
from app.web.console.sessions import COOKIE
from tests.support.browser import PageWatch, csrf_token, post_form, screenshot, sign_in
from tests.support.console_stack import ConsoleStack

pytestmark = pytest.mark.browser

#: A queue the viewer tries to pause.
QUEUE = "digests"


def session_cookies(context: BrowserContext) -> list[dict[str, object]]:
    return [dict(cookie) for cookie in context.cookies() if cookie["name"] == COOKIE]


def test_a_page_without_a_session_sends_the_browser_to_sign_in_and_back(
    page: Page, stack: ConsoleStack
) -> None:
    # Given a browser with no session, opening a console page
    page.goto("/console/audit")

    # Then it is on the sign-in form, which knows where it was going
    expect(page).to_have_url(f"{stack.url}/console/sign-in?next=/console/audit")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    screenshot(page, "console-sign-in")

    # and once signed in, it is where it was going
    page.get_by_label("API token").fill(stack.operator_token)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{stack.url}/console/audit")
    expect(page.locator("h1")).to_have_text("Audit")


def test_a_wrong_token_is_refused_on_the_sign_in_page_saying_why(
    page: Page, context: BrowserContext, watch: PageWatch
) -> None:
    watch.expect_status(401)
    page.goto("/console/sign-in")

    page.get_by_label("API token").fill("ft_not-a-token-of-this-fintask")
    page.get_by_role("button", name="Sign in").click()

    expect(page.get_by_role("alert")).to_have_text(
        "that token is not valid: it is unknown or revoked"
    )
    expect(page.get_by_label("API token")).to_be_visible()
    assert session_cookies(context) == []
    screenshot(page, "console-sign-in-refused")


def test_the_session_cookie_is_http_only_and_same_site_strict(
    page: Page, context: BrowserContext, stack: ConsoleStack
) -> None:
    sign_in(page, stack.viewer_token)

    (cookie,) = session_cookies(context)
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/console"
    assert cookie["secure"] is False  # plain HTTP here; Secure once the request came over TLS
    assert COOKIE not in page.evaluate("document.cookie"), "the page's scripts can read it"


def test_signing_out_ends_the_session_and_its_cookie_opens_nothing(
    page: Page, context: BrowserContext, stack: ConsoleStack
) -> None:
    # Given a signed-in browser, and its session cookie kept aside
    sign_in(page, stack.operator_token)
    kept = context.cookies()

    # When it signs out
    page.get_by_role("button", name="Sign out").click()

    # Then it is on the sign-in page, and the old cookie, put back, opens no page
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    context.add_cookies(kept)
    page.goto("/console/queues")
    expect(page).to_have_url(f"{stack.url}/console/sign-in?next=/console/queues")


def test_a_viewers_form_is_refused_with_a_page_saying_why(
    page: Page, stack: ConsoleStack, watch: PageWatch
) -> None:
    # Given a viewer on the queues page, which shows them no action buttons
    sign_in(page, stack.viewer_token, "/console/queues")
    expect(page.locator("button[data-action]")).to_have_count(0)

    # When the browser posts the pause form anyway, with the viewer's own CSRF token
    watch.expect_status(403)
    fields = {"csrf_token": csrf_token(page), "back": "/console/queues", "confirmed": "yes"}
    post_form(page, f"/console/queues/{QUEUE}/pause", fields)

    # Then a page says why it was refused, and the queue runs on
    expect(page.locator("h1")).to_have_text("403")
    expect(page.get_by_role("alert")).to_contain_text("acting needs operator")
    client = stack.redis()
    try:
        assert QUEUE not in read_state(client).paused
    finally:
        client.close()


@pytest.mark.parametrize(("path", "title"), SECTIONS, ids=[title for _, title in SECTIONS])
def test_every_page_renders_with_no_problem_under_the_csp(
    page: Page, stack: ConsoleStack, path: str, title: str
) -> None:
    sign_in(page, stack.operator_token)

    answer = page.goto(path)

    assert answer is not None and answer.status == 200
    assert answer.headers["content-security-policy"] == CONSOLE_CSP
    assert answer.headers["x-frame-options"] == "DENY"
    expect(page.locator("h1")).to_be_visible()
    expect(page.locator("header nav a[aria-current=page]")).to_have_text(title)
    assert screenshot(page, f"console-{title.lower()}").stat().st_size > 0


def test_the_watch_reports_an_inline_script_the_csp_blocks_and_a_request_elsewhere(
    browser: Browser,
) -> None:
    # Given a site the test serves itself: a page under the console's CSP with an inline
    # script, and a page that loads an image from another host
    context = browser.new_context()
    pages = {
        "/inline": ("<h1>inline</h1><script>document.title = 'ran'</script>", CONSOLE_CSP),
        "/elsewhere": ('<img src="http://elsewhere.test/logo.png" alt="">', None),
    }

    def serve(route: Route) -> None:
        path = route.request.url.removeprefix("http://console.test")
        if path not in pages:
            route.abort()
            return
        body, policy = pages[path]
        headers = {"content-security-policy": policy} if policy else {}
        route.fulfill(
            body=f"<!doctype html><html><body>{body}</body></html>",
            headers=headers,
            content_type="text/html",
        )

    context.route("**/*", serve)
    watch = PageWatch(origin="http://console.test")
    page = watch.attach(context.new_page())
    try:
        # When the browser opens both
        page.goto("http://console.test/inline")
        title = page.title()
        page.goto("http://console.test/elsewhere")
        page.wait_for_load_state("load")
    finally:
        context.close()

    # Then the script did not run, and the watch reports both
    assert title != "ran"
    problems = "\n".join(watch.problems)
    assert "Content Security Policy" in problems
    assert "request off the server under test: GET http://elsewhere.test/logo.png" in problems
    with pytest.raises(AssertionError, match="problem"):
        watch.check()
