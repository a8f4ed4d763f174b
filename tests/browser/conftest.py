"""Browser tests: Debian's chromium, headless, against the console's real stack.

One stack (``tests/support/console_stack.py``) and one browser serve the whole directory:
both take long to start. Each test gets a fresh browser context (no cookies, nothing cached)
and a ``page`` whose problems (``tests/support/browser.py`` ``PageWatch``: a console error, an
uncaught exception, an unexpected 4xx/5xx, a failed request, a request off the server) fail
the test, listed, once its body has passed. Requests off the server are aborted as well as
reported: a test never reaches the internet.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, sync_playwright

from app.local.redis_server import RedisServer
from tests.support.browser import PageWatch, launch
from tests.support.console_stack import ConsoleStack, console_stack

_WATCH = pytest.StashKey[PageWatch]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """A test whose body passed fails if its page saw a problem."""
    result = yield
    watch = item.stash.get(_WATCH, None)
    if watch is not None:
        watch.check()
    return result


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Debian's chromium, headless, for every browser test."""
    with sync_playwright() as playwright:
        launched = launch(playwright)
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def stack(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ConsoleStack]:
    """web, worker and scheduler as the Procfile runs them, on the session's redis-server."""
    with console_stack(redis_server.url, tmp_path_factory.mktemp("console")) as started:
        yield started


@pytest.fixture
def watch(request: pytest.FixtureRequest, stack: ConsoleStack) -> PageWatch:
    """What went wrong on this test's pages; checked once the test's body passed."""
    seen = PageWatch(origin=stack.url)
    request.node.stash[_WATCH] = seen
    return seen


@pytest.fixture
def context(browser: Browser, stack: ConsoleStack) -> Iterator[BrowserContext]:
    """A fresh browser context on the stack: no cookies; requests elsewhere aborted."""
    fresh = browser.new_context(base_url=stack.url)
    origin = urlsplit(stack.url).netloc

    def elsewhere(url: str) -> bool:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https", "ws", "wss") and parts.netloc != origin

    def abort(route: Route) -> None:
        route.abort()

    fresh.route(elsewhere, abort)
    yield fresh
    fresh.close()


@pytest.fixture
def page(context: BrowserContext, watch: PageWatch) -> Page:
    """A watched page of the test's context."""
    return watch.attach(context.new_page())
