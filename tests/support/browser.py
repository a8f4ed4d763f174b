"""Debian's chromium, driven headless through playwright, and everything a page did wrong.

No browser is downloaded (``playwright install`` is never run): playwright launches the
``chromium`` that ``make install`` installs with apt-get, with a fresh profile each time and
the flags below, which keep it from calling home (updates, sync, field trials) so that every
request a test sees is one a page made.

``PageWatch`` collects what a person would call broken: a console error or warning (a CSP
violation is one), an uncaught exception, an answer of 400 or more, a request that failed, and
any request to a host other than the server under test (the console loads nothing from the
internet). A test fails listing them (``tests/browser/conftest.py``).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, Request, Response

from app.settings import PROJECT_ROOT

#: Headless, no sandbox (containers and CI run as root), no GPU, and nothing of its own on the
#: network: no QUIC probing, background requests, component updates or sync.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

#: Where ``screenshot`` writes (``var/`` is git-ignored; the README links two of them).
SCREENSHOTS_DIR = PROJECT_ROOT / "var" / "screenshots"

#: Schemes a page may load from without leaving the machine.
_LOCAL_SCHEMES = {"data", "blob", "about"}

#: Chromium's console line for an answer of 400 or more; ``PageWatch`` records the answer
#: itself instead (with its method, and whether the test expected it).
_FAILED_STATUS_LINE = "Failed to load resource: the server responded with a status of"


def chromium_path() -> str:
    """Debian's chromium, or a readable failure naming the package."""
    path = shutil.which("chromium")
    if path is None:
        raise RuntimeError(
            "chromium is not installed: run `make install` (apt-get install chromium)"
        )
    return path


def launch(playwright: Playwright) -> Browser:
    """The system's chromium, headless, with a fresh profile (playwright makes one per launch)."""
    return playwright.chromium.launch(
        executable_path=chromium_path(), args=list(CHROMIUM_FLAGS), headless=True
    )


@dataclass
class PageWatch:
    """What went wrong on the pages of one browser context served by ``origin``."""

    origin: str
    problems: list[str] = field(default_factory=list)
    _expected_statuses: set[int] = field(default_factory=set)

    def attach(self, page: Page) -> Page:
        """Watch ``page``; return it."""
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"uncaught: {error}"))
        page.on("request", self._request)
        page.on("response", self._response)
        page.on("requestfailed", self._failed)
        return page

    def expect_status(self, status: int) -> None:
        """From now on an answer of ``status`` is what the test wants (a refusal page, say)."""
        self._expected_statuses.add(status)

    def check(self) -> None:
        """Fail listing every problem seen."""
        if self.problems:
            listed = "\n  ".join(self.problems)
            raise AssertionError(f"the browser saw {len(self.problems)} problem(s):\n  {listed}")

    def _console(self, message: ConsoleMessage) -> None:
        if message.type not in ("error", "warning") or message.text.startswith(_FAILED_STATUS_LINE):
            return
        where = message.location.get("url") or "?"
        self.problems.append(f"console {message.type} on {where}: {message.text}")

    def _request(self, request: Request) -> None:
        url = urlsplit(request.url)
        if url.scheme not in _LOCAL_SCHEMES and f"{url.scheme}://{url.netloc}" != self.origin:
            self.problems.append(
                f"request off the server under test: {request.method} {request.url}"
            )

    def _response(self, response: Response) -> None:
        if response.status >= 400 and response.status not in self._expected_statuses:
            request = response.request
            self.problems.append(f"{request.method} {response.url} answered {response.status}")

    def _failed(self, request: Request) -> None:
        failure = request.failure or "?"
        # The browser cancelled it: leaving a page drops what it still loaded (its favicon, a
        # live region's poll). A server's failure or a blocked request reads otherwise.
        if failure == "net::ERR_ABORTED" and not request.is_navigation_request():
            return
        self.problems.append(f"failed: {request.method} {request.url}: {failure}")


def screenshot(page: Page, name: str) -> Path:
    """The whole of ``page`` as ``var/screenshots/<name>.png``; its path."""
    SCREENSHOTS_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS_DIR / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_in(page: Page, token: str, path: str = "/console") -> None:
    """Open ``path`` without a session and sign in on the form it leads to, as a person does;
    return on ``path``."""
    page.goto(path)
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(urljoin(page.url, path))


def csrf_token(page: Page) -> str:
    """The signed-in page's CSRF token, as its sign-out form carries it."""
    value = page.locator("form[action='/console/sign-out'] input[name=csrf_token]").input_value()
    assert value, "the page has no sign-out form with a CSRF token"
    return value


def post_form(page: Page, action: str, fields: dict[str, str]) -> None:
    """Submit a form the page does not show (one the server must refuse) and wait for the
    answer: built through the DevTools protocol, which the page's CSP does not govern."""
    with page.expect_navigation():
        page.evaluate(
            """([action, fields]) => {
                const form = document.createElement("form");
                form.method = "post";
                form.action = action;
                for (const [name, value] of Object.entries(fields)) {
                    const input = document.createElement("input");
                    input.type = "hidden";
                    input.name = name;
                    input.value = value;
                    form.appendChild(input);
                }
                document.body.appendChild(form);
                form.submit();
            }""",
            [action, fields],
        )
