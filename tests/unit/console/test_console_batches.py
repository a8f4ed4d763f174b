"""The console's Batches pages: the list with progress bar, counts, rate and ETA; one batch with
its failures by kind, its failed members a page at a time (reasons redacted), and Cancel as an
operator takes it (confirmed, audited, refused to a viewer). Batches are kept in the test's own
Redis through fintask's store."""

from __future__ import annotations

import re
from html import unescape

from pipelines.batches import BATCHES
from tests.support import batches
from tests.support.console import act, audited, flash, row, signed_in

_NEXT = re.compile(r'href="([^"]+)" data-page="next"')


def a_batch(members: int, **counts: int) -> str:
    """A sealed batch whose failed members' reasons hold an e-mail address the pages mask."""
    return batches.a_batch(
        members, reason="DeliveryError: ada@example.com refused member {ordinal}", **counts
    )


def test_the_batches_page_shows_each_batchs_bar_counts_rate_and_eta(database, redis_env):
    batch_id = a_batch(10, failed=2, succeeded=3)
    browser, _ = signed_in("viewer")

    page = browser.get("/console/batches")

    assert page.status_code == 200
    assert 'href="/console/batches" aria-current="page"' in page.text
    shown = row(page.text, "data-batch-id", batch_id)
    assert '<progress value="5" max="10">' in shown and "(50.0%)" in shown
    assert re.search(r'data-field="succeeded">3<', shown)
    assert re.search(r'data-field="failed">2<', shown)
    assert re.search(r'data-field="pending">5<', shown)
    assert re.search(r'data-field="rate">[\d.]+/s<', shown)
    assert not re.search(r'data-field="eta">—<', shown)


def test_a_batch_page_shows_failures_by_kind_and_pages_its_failed_members(database, redis_env):
    batch_id = a_batch(300, failed=250)
    browser, _ = signed_in("viewer")

    first = browser.get(f"/console/batches/{batch_id}")
    pages = [first.text]
    while (path := _NEXT.search(pages[-1])) is not None:
        pages.append(browser.get(unescape(path.group(1))).text)
    ordinals = {o for page in pages for o in re.findall(r'<tr data-ordinal="(\d+)">', page)}

    assert first.status_code == 200
    assert re.search(
        r'<tr data-kind="dead_lettered"><td>dead_lettered</td><td class="number">250<', first.text
    )
    assert "DeliveryError: " in first.text and "refused member" in first.text
    assert len(pages) > 1 and not any("ada@example.com" in page for page in pages)
    assert ordinals == {str(i) for i in range(250)}
    assert 'data-action="cancel"' not in first.text  # a viewer sees no action


def test_an_operator_cancels_a_batch_confirmed_and_audited(database, redis_env):
    batch_id = a_batch(4, succeeded=1)
    browser, csrf = signed_in("operator")
    back = f"/console/batches/{batch_id}"

    asked, after = act(browser, csrf, f"{back}/cancel", back)

    assert "its 3 pending members count as cancelled" in asked
    assert flash(after) == (
        "ok",
        f"batch {batch_id} cancelled: 3 pending members counted as cancelled",
    )
    assert BATCHES.progress(batch_id).failed_by_kind == {"cancelled": 3}
    assert [(action, target) for _, action, target in audited()] == [("batch.cancel", batch_id)]
    assert 'data-action="cancel"' not in after  # complete now: nothing left to cancel


def test_a_viewers_cancel_is_refused_and_an_unknown_batch_is_a_page_naming_it(database, redis_env):
    batch_id = a_batch(2)
    browser, csrf = signed_in("viewer")

    refused = browser.post(
        f"/console/batches/{batch_id}/cancel",
        data={"csrf_token": csrf, "back": "/console/batches", "confirmed": "yes"},
    )
    unknown = browser.get("/console/batches/nope")
    bad_cursor = browser.get(f"/console/batches/{batch_id}?cursor=xyz")

    assert refused.status_code == 403 and "acting needs operator" in refused.text
    assert BATCHES.progress(batch_id).state == "sealed"
    assert audited() == []
    assert unknown.status_code == 404 and "no batch &#39;nope&#39;" in unknown.text
    assert bad_cursor.status_code == 400 and "pass next_cursor" in bad_cursor.text
