"""The console's message page (``app.web.console.messages``): a message's fields, masked and
redacted, and the actions of its state, each confirmed, done once, audited and reported."""

from __future__ import annotations

import re
from html import unescape

import redis

from app import control_state
from tests.support.console import act, flash, message_rows, signed_in
from tests.unit.test_control_api import (
    EMAIL,
    LATER_MS,
    QUEUE,
    TRACEBACK,
    audited,
    dead_letter,
    hold,
    send,
)

WHO = "token:operator-token"
ACTIONS = ("cancel", "requeue", "delete", "run-now")


def offered(html: str) -> set[str]:
    """The message actions a page offers."""
    return {action for action in ACTIONS if f'data-action="{action}"' in html}


def field(html: str, name: str) -> str:
    found = re.search(rf'<dd[^>]*data-field="{name}"[^>]*>(.*?)</dd>', html, re.S)
    assert found is not None, f"no {name} field"
    return unescape(re.sub(r"<[^>]+>", "", found.group(1))).strip()


def traceback_of(html: str) -> str:
    found = re.search(r'<pre class="traceback">(.*?)</pre>', html, re.S)
    assert found is not None, "no traceback shown"
    return unescape(found.group(1))


def redis_id(message) -> str:
    return str(message.options["redis_message_id"])


def test_a_dead_letter_shows_why_it_died_and_its_traceback_with_no_personal_data(
    database, redis_env
):
    dead = dead_letter(
        redis_env,
        ValueError(f"card declined for {EMAIL}"),
        args=(EMAIL,),
        kwargs={"token": EMAIL, "account_id": 42},
        options={"retries": 2, "traceback": TRACEBACK},
    )
    browser, _ = signed_in("operator")

    page = browser.get(f"/console/messages/{dead.message_id}").text

    assert '<dl class="fields">' in page
    assert field(page, "state") == "dead"
    assert field(page, "queue") == QUEUE
    assert field(page, "actor") == "ping"
    assert field(page, "retries").startswith("2")
    assert field(page, "reason") == "ValueError: card declined for <email>"
    assert field(page, "exception") == "ValueError"
    assert "account_id=42" in field(page, "arguments")
    assert "app.senders.DeliveryError: the mail server refused <email>" in traceback_of(page)
    assert EMAIL not in page
    assert offered(page) == {"requeue", "delete"}


def test_a_dead_letter_without_a_traceback_shows_its_reason_in_its_place(database, redis_env):
    dead = dead_letter(redis_env, TimeoutError(f"no answer for {EMAIL}"))
    browser, _ = signed_in("viewer")

    page = browser.get(f"/console/messages/{redis_id(dead)}").text

    assert traceback_of(page) == "TimeoutError: no answer for <email>"
    assert offered(page) == set()  # a viewer is offered no action


def test_requeueing_a_dead_letter_puts_it_back_once_and_says_so(
    database, redis_env, client: redis.Redis
):
    dead = dead_letter(redis_env, ValueError("declined"))
    browser, csrf = signed_in("operator")
    path = f"/console/messages/{dead.message_id}"

    asked, after = act(browser, csrf, f"{path}/requeue", path)

    assert "back to its ready queue" in asked
    assert flash(after) == ("ok", f"Requeued {dead.message_id}")
    assert field(after, "state") == "ready"
    assert client.lrange(f"dramatiq:{QUEUE}", 0, -1) == [redis_id(dead).encode()]
    assert client.zcard(f"dramatiq:{QUEUE}.XQ") == 0
    assert audited("message.requeue") == [(WHO, dead.message_id, 1)]
    _, again = act(browser, csrf, f"{path}/requeue", path)
    assert flash(again) == ("failed", f"message {dead.message_id} is ready, not a dead letter: "
                                      "only dead letters are requeued")  # fmt: skip
    assert client.llen(f"dramatiq:{QUEUE}") == 1


def test_deleting_a_dead_letter_removes_it_and_goes_back_to_the_dead_letters(
    database, redis_env, client: redis.Redis
):
    dead = dead_letter(redis_env, ValueError("declined"))
    kept = dead_letter(redis_env, ValueError("kept"))
    browser, csrf = signed_in("operator")
    back = f"/console/queues/{QUEUE}?state=dead"

    _, after = act(browser, csrf, f"/console/messages/{dead.message_id}/delete", back)

    assert flash(after) == ("ok", f"Deleted dead letter {dead.message_id}")
    assert message_rows(after) == [kept.message_id]
    assert client.hexists(f"dramatiq:{QUEUE}.XQ.msgs", redis_id(dead)) is False
    assert audited("message.delete") == [(WHO, dead.message_id, 1)]
    assert browser.get(f"/console/messages/{dead.message_id}").status_code == 404


def test_a_delayed_message_is_run_now_with_its_id(database, redis_env, client: redis.Redis):
    delayed = send(redis_env, delay_ms=LATER_MS)
    browser, csrf = signed_in("operator")
    path = f"/console/messages/{delayed.message_id}"
    assert offered(browser.get(path).text) == {"cancel", "run-now"}

    asked, after = act(browser, csrf, f"{path}/run-now", path)

    assert "keeps its id and runs once" in asked
    assert flash(after) == ("ok", f"Moved {delayed.message_id} to its ready queue")
    assert field(after, "state") == "ready"
    assert client.lrange(f"dramatiq:{QUEUE}", 0, -1) == [redis_id(delayed).encode()]
    assert client.llen(f"dramatiq:{QUEUE}.DQ") == 0
    assert audited("message.run_now") == [(WHO, delayed.message_id, 1)]


def test_a_delayed_message_a_worker_holds_is_run_now_by_asking_that_worker_to_release_it(
    database, redis_env, client: redis.Redis
):
    delayed = send(redis_env, delay_ms=LATER_MS)
    worker = hold(redis_env, delayed=True)
    browser, csrf = signed_in("operator")
    path = f"/console/messages/{delayed.message_id}"

    page = browser.get(path).text
    asked, after = act(browser, csrf, f"{path}/run-now", path)

    assert offered(page) == {"cancel", "run-now"}
    assert f"Ask worker {worker} to release held message {delayed.message_id}" in asked
    assert flash(after) == (
        "ok",
        f"Asked the worker holding {delayed.message_id} to release it: it runs within about 2 s",
    )
    assert field(after, "state") == f"held by worker {worker}"  # until the worker enqueues it
    assert control_state.read_state(client).released == {redis_id(delayed)}
    assert client.llen(f"dramatiq:{QUEUE}") == 0
    assert audited("message.run_now") == [(WHO, delayed.message_id, 1)]


def test_cancelling_a_ready_message_removes_it_without_running(
    database, redis_env, client: redis.Redis
):
    ready = send(redis_env)
    browser, csrf = signed_in("operator")
    page = browser.get(f"/console/messages/{ready.message_id}").text
    assert offered(page) == {"cancel"}
    assert "Delete is for dead letters" in page
    back = f"/console/queues/{QUEUE}?state=ready"

    asked, after = act(browser, csrf, f"/console/messages/{ready.message_id}/cancel", back)

    assert "removed without running" in asked
    ok, line = flash(after)
    assert (ok, line.startswith(f"Cancelled {ready.message_id}: removed")) == ("ok", True)
    assert client.llen(f"dramatiq:{QUEUE}") == 0
    assert audited("message.cancel") == [(WHO, ready.message_id, 1)]


def test_a_held_message_is_cancelled_hard_when_asked(database, redis_env, client):
    ready = send(redis_env)
    hold(redis_env)
    browser, csrf = signed_in("operator")
    path = f"/console/messages/{ready.message_id}"
    page = browser.get(path).text
    assert 'name="mode" value="hard"' in page
    assert offered(page) == {"cancel"}  # fetched from its ready queue: nothing to run sooner

    asked, _ = act(browser, csrf, f"{path}/cancel", path, mode="hard")

    assert "stops at once (hard)" in asked
    assert control_state.read_state(client).revoked == {ready.message_id: "hard"}


def test_a_viewers_action_is_a_403_page_and_the_dead_letter_stays(
    database, redis_env, client: redis.Redis
):
    dead = dead_letter(redis_env, ValueError("declined"))
    browser, csrf = signed_in("viewer")

    for action in ("requeue", "delete"):
        answer = browser.post(
            f"/console/messages/{dead.message_id}/{action}",
            data={"csrf_token": csrf, "confirmed": "yes"},
        )
        assert answer.status_code == 403

    assert client.zcard(f"dramatiq:{QUEUE}.XQ") == 1
    assert audited("message.requeue") == audited("message.delete") == []


def test_an_unknown_message_is_a_404_page_that_says_what_may_have_become_of_it(database, redis_env):
    browser, _ = signed_in("viewer")

    answer = browser.get("/console/messages/0000")

    assert answer.status_code == 404
    assert "no message 0000 is in any queue of fintask" in answer.text
    long = browser.get(f"/console/messages/{'x' * 101}")
    assert long.status_code == 422
    assert "path parameter message_id" in long.text
