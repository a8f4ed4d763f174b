"""The API docs render in a real browser from the web process's own files: Swagger UI at /docs
and ReDoc at /redoc, with no request leaving the server (the machine may have no internet)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.support.browser import screenshot

pytestmark = pytest.mark.browser


def test_swagger_ui_lists_the_operations(page: Page) -> None:
    page.goto("/docs")

    operations = page.locator(".opblock-summary-path")
    expect(operations.filter(has_text="/api/jobs").first).to_be_visible(timeout=30_000)
    expect(operations.filter(has_text="/api/queues").first).to_be_visible()
    screenshot(page, "docs-swagger")


def test_redoc_shows_its_menu_of_operations(page: Page) -> None:
    page.goto("/redoc")

    expect(page.get_by_role("menuitem", name="runs")).to_be_visible(timeout=30_000)
    expect(page.get_by_role("menuitem", name="control")).to_be_visible()
    expect(page.get_by_role("heading", name="fintask (0.1.0)")).to_be_visible()
    screenshot(page, "docs-redoc")
