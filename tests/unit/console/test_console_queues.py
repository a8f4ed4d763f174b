"""The console's Queues pages (``app.web.console.queues``): every queue with its counts and
actions, and a queue's messages by state, filtered and paged, acted on in bulk."""

from __future__ import annotations

import re
from html import unescape

import dramatiq
import pytest
import redis
from dramatiq import Message
from dramatiq.common import current_millis

from app import control_state
from app.control.actions import queue_names
from app.web.console import queues
from tests.support.console import act, flash, message_rows, row, signed_in
from tests.unit.test_control_api import (
    EMAIL,
    LATER_MS,
    QUEUE,
    TRACEBACK,
    audited,
    dead_letter,
    hold,
    producer_on,
    send,
)

WHO = "token:operator-token"


def cell(html: str, field: str) -> str:
    found = re.search(rf'data-field="{field}"[^>]*>(.*?)</td>', html, re.S)
    assert found is not None, f"no {field} cell"
    return re.sub(r"<[^>]+>", "", found.group(1)).strip()


def next_page(html: str) -> str | None:
    found = re.search(r'<a href="([^"]+)" rel="next"', html)
    return None if found is None else unescape(found.group(1))


def test_every_queue_is_listed_with_its_messages_by_state(database, redis_env):
    dead_letter(redis_env, ValueError("declined"))
    send(redis_env)
    send(redis_env)
    send(redis_env, delay_ms=LATER_MS)
    send(redis_env, options={"retries": 1}, delay_ms=LATER_MS)
    client, _ = signed_in("viewer")

    page = client.get("/console/queues")

    assert page.status_code == 200
    for name in queue_names(dramatiq.get_broker()):
        assert f'<tr data-queue="{name}">' in page.text
    ours = row(page.text, "data-queue", QUEUE)
    counts = {f: cell(ours, f) for f in ("ready", "delayed", "retrying", "held", "dead")}
    assert counts == {"ready": "2", "delayed": "1", "retrying": "1", "held": "0", "dead": "1"}
    assert "data-action" not in page.text  # a viewer is offered no action


def test_an_operator_pauses_and_resumes_a_queue_each_confirmed_and_audited(
    database, redis_env, client: redis.Redis
):
    browser, csrf = signed_in("operator")
    listed = browser.get("/console/queues").text
    assert 'data-action="pause"' in row(listed, "data-queue", QUEUE)

    asked, after = act(browser, csrf, f"/console/queues/{QUEUE}/pause", "/console/queues")

    assert f"Pause {QUEUE}?" in asked
    assert control_state.read_state(client).paused == {QUEUE}
    assert flash(after) == ("ok", f"Paused {QUEUE}")
    ours = row(after, "data-queue", QUEUE)
    assert 'class="badge paused"' in ours
    assert 'data-action="resume"' in ours
    _, resumed = act(browser, csrf, f"/console/queues/{QUEUE}/resume", "/console/queues")
    assert control_state.read_state(client).paused == frozenset()
    assert flash(resumed) == ("ok", f"Resumed {QUEUE}")
    assert audited("queue.pause") == [(WHO, QUEUE, 0)]
    assert audited("queue.resume") == [(WHO, QUEUE, 0)]


def test_a_purge_says_how_many_ready_messages_it_deletes_and_keeps_the_rest(
    database, redis_env, client: redis.Redis
):
    for _ in range(3):
        send(redis_env)
    send(redis_env, delay_ms=LATER_MS)
    browser, csrf = signed_in("operator")

    asked, after = act(browser, csrf, f"/console/queues/{QUEUE}/purge", "/console/queues")

    assert f"Delete the 3 ready messages of {QUEUE}" in asked
    assert flash(after) == ("ok", f"Purged 3 ready messages of {QUEUE}")
    assert client.llen(f"dramatiq:{QUEUE}") == 0
    assert client.llen(f"dramatiq:{QUEUE}.DQ") == 1
    assert audited("queue.purge") == [(WHO, QUEUE, 3)]


def test_a_viewers_action_is_a_403_page_and_changes_nothing(
    database, redis_env, client: redis.Redis
):
    send(redis_env)
    browser, csrf = signed_in("viewer")

    for action in ("pause", "purge"):
        answer = browser.post(
            f"/console/queues/{QUEUE}/{action}", data={"csrf_token": csrf, "confirmed": "yes"}
        )
        assert answer.status_code == 403
        assert "acting needs operator" in answer.text

    assert control_state.read_state(client).paused == frozenset()
    assert client.llen(f"dramatiq:{QUEUE}") == 1
    assert audited("queue.pause") == audited("queue.purge") == []


@pytest.mark.parametrize(
    ("query", "status", "words"),
    [
        ("state=lost", 422, "query parameter state"),
        ("state=ready&min_age_s=soon", 400, "not a number of seconds"),
        ("state=ready&min_age_s=-5", 400, "not a number of seconds"),
        ("state=ready&cursor=bogus", 400, "cursor is not valid"),
        ("state=dead&order=sideways", 422, "query parameter order"),
    ],
)
def test_a_bad_state_filter_or_cursor_is_a_readable_page(database, redis_env, query, status, words):
    browser, _ = signed_in("viewer")

    answer = browser.get(f"/console/queues/{QUEUE}?{query}")

    assert answer.status_code == status
    assert answer.headers["content-type"].startswith("text/html")
    assert words in unescape(answer.text)
    assert "Traceback" not in answer.text


def test_an_unknown_queue_is_a_404_page_naming_the_queues(database, redis_env):
    browser, _ = signed_in("viewer")

    answer = browser.get("/console/queues/nope?state=ready")

    assert answer.status_code == 404
    assert "&#39;nope&#39; is not a queue of fintask" in answer.text


def test_a_filtered_page_reads_on_until_its_bound_and_its_next_page_continues(
    database, redis_env, monkeypatch
):
    # Pages of 2 read at most 40 entries: 45 messages of another actor come first.
    monkeypatch.setattr(queues, "PAGE_SIZE", 2)
    for _ in range(45):
        send(redis_env, actor_name="relay_outbox", kwargs={})
    wanted = [send(redis_env).message_id for _ in range(3)]
    browser, _ = signed_in("viewer")

    first = browser.get(f"/console/queues/{QUEUE}?state=ready&actor=ping").text
    shown, url = [], next_page(first)
    while url is not None:
        page = browser.get(url).text
        assert 'value="ping"' in page  # the filter is kept from page to page
        shown += message_rows(page)
        url = next_page(page)

    assert message_rows(first) == []
    assert "Scanned 40 messages, showing the 0 that match; Next page continues" in first
    assert shown == wanted


def test_dead_and_retrying_messages_filter_by_their_last_exception(database, redis_env):
    declined = dead_letter(redis_env, ValueError("declined"))
    dead_letter(redis_env, TimeoutError("slow"))
    retrying = send(redis_env, options={"retries": 1, "traceback": TRACEBACK}, delay_ms=LATER_MS)
    send(redis_env, options={"retries": 1}, delay_ms=LATER_MS)
    browser, _ = signed_in("viewer")

    dead = browser.get(f"/console/queues/{QUEUE}?state=dead&exception=valueerror").text
    retried = browser.get(f"/console/queues/{QUEUE}?state=retrying&exception=DeliveryError")

    assert message_rows(dead) == [declined.message_id]
    assert "Scanned 2 messages, showing the 1 that match." in dead
    assert message_rows(retried.text) == [retrying.message_id]
    assert EMAIL not in retried.text


def test_an_age_filter_shows_only_messages_sent_that_long_ago(database, redis_env):
    with producer_on(redis_env) as producer:
        old = producer.enqueue(
            Message(
                QUEUE,
                "ping",
                (),
                {"token": "t"},
                {},
                message_timestamp=current_millis() - 7_200_000,
            )
        )
    send(redis_env)
    browser, _ = signed_in("viewer")

    page = browser.get(f"/console/queues/{QUEUE}?state=ready&min_age_s=3600").text

    assert message_rows(page) == [old.message_id]


def test_arguments_never_show_unmasked_on_a_queue_page(database, redis_env):
    sent = send(redis_env, args=(EMAIL,), kwargs={"token": EMAIL, "user_id": 7})
    browser, _ = signed_in("operator")

    page = browser.get(f"/console/queues/{QUEUE}?state=ready").text

    assert message_rows(page) == [sent.message_id]
    assert f'href="/console/messages/{sent.message_id}"' in page
    assert EMAIL not in page
    assert "user_id=7" in page
    assert "&lt;str: 15 chars&gt;" in page


def test_selected_dead_letters_are_requeued_in_bulk_and_the_gone_ones_counted(
    database, redis_env, client: redis.Redis
):
    letters = [dead_letter(redis_env, ValueError(f"no {n}")) for n in range(3)]
    browser, csrf = signed_in("operator")
    page = browser.get(f"/console/queues/{QUEUE}?state=dead").text
    assert 'data-select-all value="ids"' in page
    assert 'data-action="bulk-requeue"' in page and 'data-action="bulk-delete"' in page
    assert 'data-action="bulk-cancel"' not in page
    selected = [str(m.options["redis_message_id"]) for m in letters[:2]] + ["gone-already"]
    back = f"/console/queues/{QUEUE}?state=dead"

    asked, after = act(
        browser, csrf, f"/console/queues/{QUEUE}/bulk", back, bulk="requeue", ids=selected
    )

    assert f"Requeue the 3 selected dead letters of {QUEUE}" in asked
    assert flash(after) == ("ok", "Requeued 2 of 3 selected messages; 1 no longer there")
    assert message_rows(after) == [letters[2].message_id]
    assert client.llen(f"dramatiq:{QUEUE}") == 2
    assert len(audited("message.requeue")) == 2


def test_selected_waiting_messages_are_cancelled_in_bulk(database, redis_env, client):
    sent = [send(redis_env) for _ in range(3)]
    browser, csrf = signed_in("operator")
    back = f"/console/queues/{QUEUE}?state=ready"
    assert 'data-action="bulk-cancel"' in browser.get(back).text
    selected = [str(m.options["redis_message_id"]) for m in sent[:2]]

    asked, after = act(
        browser, csrf, f"/console/queues/{QUEUE}/bulk", back, bulk="cancel", ids=selected
    )

    assert f"Cancel the 2 selected messages of {QUEUE}" in asked
    assert flash(after) == ("ok", "Cancelled 2 of 2 selected messages")
    assert message_rows(after) == [sent[2].message_id]
    assert {target for _, target, _ in audited("message.cancel")} == {
        m.message_id for m in sent[:2]
    }


def test_a_bulk_action_with_nothing_selected_says_so(database, redis_env):
    browser, csrf = signed_in("operator")
    back = f"/console/queues/{QUEUE}?state=dead"

    answer = browser.post(
        f"/console/queues/{QUEUE}/bulk", data={"csrf_token": csrf, "back": back, "bulk": "delete"}
    )

    assert answer.status_code == 303
    assert flash(browser.get(answer.headers["location"]).text) == (
        "failed",
        "No message was selected: nothing done",
    )


def test_held_messages_show_their_worker_and_eta(database, redis_env):
    delayed = send(redis_env, delay_ms=LATER_MS)
    worker = hold(redis_env, delayed=True)
    browser, _ = signed_in("viewer")

    held = browser.get(f"/console/queues/{QUEUE}?state=held").text
    empty = browser.get(f"/console/queues/{QUEUE}?state=delayed").text

    assert message_rows(held) == [delayed.message_id]
    assert worker in held
    assert "Workers hold 1 messages of it" in empty
