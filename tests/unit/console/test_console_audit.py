"""The console's Audit page: the control plane's trail, newest first, by action, a page at a
time, with each row's detail redacted. Rows are written as ``app.control.audit.record`` does."""

from __future__ import annotations

import re

import pytest

from app.control import audit
from app.db.session import transaction
from tests.support.console import signed_in

_NEXT = re.compile(r'href="([^"]+)" data-page="next"')


def recorded(*actions: str, detail: dict[str, object] | None = None) -> list[int]:
    """One audit row per action, in order, by the CLI; their ids."""
    with transaction() as session:
        events = [
            audit.record(
                session, who="cli:ada@host", action=action, target="emails", count=3, detail=detail
            )
            for action in actions
        ]
        session.flush()
        return [event.id for event in events]


def ids_on(html: str) -> list[int]:
    return [int(found) for found in re.findall(r'<tr data-audit-id="(\d+)">', html)]


def next_page(html: str) -> str | None:
    found = _NEXT.search(html)
    return None if found is None else found.group(1).replace("&amp;", "&")


def test_the_trail_shows_who_when_what_target_count_and_detail_newest_first(database, redis_env):
    first, second = recorded("queue.pause", "queue.purge")
    browser, _ = signed_in("viewer")

    page = browser.get("/console/audit")

    assert page.status_code == 200
    assert ids_on(page.text) == [second, first]
    start = page.text.index(f'<tr data-audit-id="{second}">')
    shown = page.text[start : page.text.index("</tr>", start)]
    assert '<td data-field="who">cli:ada@host</td>' in shown
    assert "queue.purge</a></td>" in shown
    assert '<td data-field="target" class="mono">emails</td>' in shown
    assert '<td class="number" data-field="count">3</td>' in shown
    assert " UTC</td>" in shown


def test_a_rows_detail_is_shown_redacted(database, redis_env):
    recorded("message.cancel_matching", detail={"arguments": {"email": "ada@example.com"}})
    browser, _ = signed_in("viewer")

    page = browser.get("/console/audit")

    assert "&#34;email&#34;: &#34;&lt;email&gt;&#34;" in page.text
    assert "ada@example.com" not in page.text


def test_the_trail_filters_by_action_and_pages_by_cursor(database, redis_env):
    pauses = recorded(*["queue.pause"] * 55)
    recorded("queue.resume")
    browser, _ = signed_in("viewer")

    first = browser.get("/console/audit", params={"action": "queue.pause"})
    second = browser.get(next_page(first.text))

    newest_first = list(reversed(pauses))
    assert ids_on(first.text) == newest_first[:50]
    assert ids_on(second.text) == newest_first[50:]
    assert next_page(second.text) is None
    assert 'value="queue.pause"' in second.text  # the filter stays on


def test_a_bad_cursor_is_a_readable_page(database, redis_env):
    browser, _ = signed_in("viewer")

    answer = browser.get("/console/audit", params={"cursor": "not-ours"})

    assert answer.status_code == 400
    assert "the cursor is not one this list handed out" in answer.text


@pytest.mark.parametrize(
    ("params", "said"),
    [
        ({}, "No control action has been recorded yet."),
        ({"action": "queue.purge"}, "No queue.purge action has been recorded."),
    ],
)
def test_an_empty_trail_is_said_in_words(database, redis_env, params, said):
    browser, _ = signed_in("viewer")

    assert said in browser.get("/console/audit", params=params).text
