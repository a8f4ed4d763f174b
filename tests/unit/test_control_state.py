"""The fleet's control state in a real Redis, and a worker obeying it (``FleetControl`` on
Dramatiq's StubBroker, with the state in the test's own redis-server): revocations, and the
release of a delayed message its worker holds."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from queue import PriorityQueue

import dramatiq
import pytest
import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import current_millis, dq_name, iter_queue
from dramatiq.middleware import CurrentMessage
from dramatiq.worker import _WorkQueueItem

from app import control_state
from app.control_state import ControlWatcher, read_state
from app.middleware.deadlines import check_deadline
from app.middleware.fleet import FleetControl, release_delayed
from app.middleware.metrics import DUE_AT_OPTION
from app.middleware.retries import DurableRetries
from tests.support.processes import wait_until


def test_each_change_bumps_the_version_and_says_whether_it_changed_anything(client):
    assert control_state.read_version(client) == 0
    assert control_state.pause_queue(client, "emails") is True
    assert control_state.pause_queue(client, "emails") is False
    assert control_state.set_rate_limit(client, "sync_account", "5/s") is True
    assert read_state(client).paused == {"emails"}
    assert read_state(client).limits == {"sync_account": "5/s"}
    assert control_state.resume_queue(client, "emails") is True
    assert control_state.clear_rate_limit(client, "sync_account") is True
    assert control_state.clear_rate_limit(client, "sync_account") is False
    state = read_state(client)
    assert (state.paused, state.limits, state.version) == (frozenset(), {}, 6)


def test_a_revocation_lasts_until_its_expiry_and_a_later_expiry_wins(client):
    now = 1_000_000
    assert control_state.revoke(client, {"a": now + 10, "b": now + 50}, mode="hard", now_ms=now)
    control_state.revoke(client, {"a": now + 100}, now_ms=now)

    assert read_state(client, now_ms=now + 60).revoked == {"a": "soft"}
    assert read_state(client, now_ms=now + 100).revoked == {}
    # the next revoke forgets the expired ones for good
    control_state.revoke(client, {"c": now + 500}, now_ms=now + 200)
    assert client.zrange(control_state.REVOKED_KEY, 0, -1) == [b"c"]
    assert client.hkeys(control_state.REVOKED_MODES_KEY) == [b"c"]


def test_a_release_is_kept_until_an_hour_past_its_eta_then_forgotten(client):
    now, hour = 1_000_000, control_state.RELEASE_KEPT_MS
    assert control_state.release(client, "r-later", eta_ms=now + 60_000, now_ms=now) is True
    assert control_state.release(client, "r-later", eta_ms=now + 60_000, now_ms=now) is False
    control_state.release(client, "r-due", eta_ms=now - 5, now_ms=now)  # due: from now on

    assert read_state(client, now_ms=now + hour - 1).released == {"r-later", "r-due"}
    assert read_state(client, now_ms=now + hour).released == {"r-later"}
    assert read_state(client, now_ms=now + 60_000 + hour).released == frozenset()
    # the next release forgets the expired ones for good
    control_state.release(client, "r-next", eta_ms=None, now_ms=now + 2 * hour)
    assert client.zrange(control_state.RELEASED_KEY, 0, -1) == [b"r-next"]
    assert control_state.read_version(client) == 4


def test_an_unknown_abort_mode_is_refused(client):
    with pytest.raises(ValueError, match="abort mode 'gentle'"):
        control_state.revoke(client, {"a": 1}, mode="gentle")  # type: ignore[arg-type]


def test_a_watcher_reads_the_whole_state_only_when_the_version_moved(client, monkeypatch):
    reads = []
    real = control_state.read_state
    monkeypatch.setattr(control_state, "read_state", lambda c: reads.append(1) or real(c))
    watcher = ControlWatcher(lambda: client, interval_s=0)

    watcher.refresh()
    watcher.refresh()
    control_state.pause_queue(client, "emails")
    watcher.refresh()
    watcher.refresh()

    assert len(reads) == 2
    assert watcher.state.paused == {"emails"}


def test_a_watcher_keeps_the_last_state_while_redis_is_away(client, unused_port_url):
    control_state.pause_queue(client, "emails")
    target = {"client": client}
    watcher = ControlWatcher(lambda: target["client"], interval_s=0)
    assert watcher.refresh().paused == {"emails"}

    target["client"] = redis.Redis.from_url(unused_port_url, socket_connect_timeout=1)
    assert watcher.refresh().paused == {"emails"}


@pytest.fixture
def unused_port_url() -> str:
    from app.local.ports import free_port

    return f"redis://127.0.0.1:{free_port()}/0"


@pytest.fixture
def fleet_broker(client: redis.Redis) -> Iterator[tuple[StubBroker, FleetControl]]:
    """A StubBroker of its own with ``FleetControl`` watching the test's Redis, and a worker."""
    watcher = ControlWatcher(lambda: client, interval_s=0.05)
    fleet = FleetControl(watcher=watcher, client=lambda: client, process_type="worker")
    broker = StubBroker(middleware=[DurableRetries(), CurrentMessage(), fleet])
    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=2)
    worker.start()
    yield broker, fleet
    worker.stop()
    broker.close()


def test_a_revoked_message_never_starts(fleet_broker, client):
    broker, fleet = fleet_broker
    ran = []
    actor = dramatiq.actor(lambda: ran.append(1), broker=broker, actor_name="revocable")
    message = actor.message()
    control_state.revoke(client, {message.message_id: 2**50})
    fleet.watcher.refresh()

    broker.enqueue(message)
    broker.join(actor.queue_name)

    assert ran == []
    assert fleet.revoked_skipped == 1


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_a_message_revoked_while_it_runs_stops_and_is_not_retried(fleet_broker, client, mode):
    broker, fleet = fleet_broker
    started, ended = threading.Event(), []

    def loop(cooperative: bool) -> None:
        started.set()
        give_up = time.monotonic() + 120
        try:
            while time.monotonic() < give_up:
                if cooperative:
                    check_deadline()
                time.sleep(0.01)
        except BaseException as error:
            ended.append(type(error).__name__)
            raise
        ended.append("timed out")

    actor = dramatiq.actor(loop, broker=broker, actor_name=f"looping_{mode}", max_retries=3)
    message = actor.send(cooperative=mode == "soft")
    assert started.wait(30)

    control_state.revoke(client, {message.message_id: 2**50}, mode=mode)
    broker.join(actor.queue_name, timeout=60_000)

    assert ended == ["MessageRevoked"]
    assert fleet.failed == 1
    assert broker.dead_letters == []  # acknowledged, not retried nor dead-lettered


def held_until(
    queue: PriorityQueue[_WorkQueueItem], redis_id: str, eta_ms: int, **message_id: str
) -> MessageProxy:
    """A delayed message as a consumer thread holds it until its eta (``handle_message``)."""
    options = {"eta": eta_ms, "redis_message_id": redis_id}
    message = MessageProxy(dramatiq.Message("q.DQ", "a", (), {}, options, **message_id))
    queue.put(_WorkQueueItem(eta_ms, message))
    return message


def test_a_released_message_comes_out_of_the_delay_queue_first_and_the_others_keep_their_order():
    now = 1_000_000
    queue: PriorityQueue[_WorkQueueItem] = PriorityQueue()
    held_until(queue, "soon", now + 1_000)
    held_until(queue, "later", now + 3_600_000)
    latest = held_until(queue, "latest", now + 7_200_000)
    held_until(queue, "due", now - 1)
    # a retry of it: the same message id, a Redis id of its own, so it waits out its backoff
    held_until(queue, "retry", now + 9_000_000, message_id=latest.message_id)

    released = release_delayed(queue, {"latest", "due", "unknown"}, now_ms=now)
    again = release_delayed(queue, {"latest"}, now_ms=now)

    assert released == [latest]  # one already due is left alone: it is enqueued anyway
    assert again == []
    assert latest.options[DUE_AT_OPTION] == now  # its wait counts from the release
    order = [item.message.options["redis_message_id"] for item in iter_queue(queue)]
    assert order == ["latest", "due", "soon", "later", "retry"]


def test_a_held_delayed_message_released_by_the_control_state_runs_once_long_before_its_eta(
    fleet_broker, client
):
    broker, _ = fleet_broker
    ran = []
    actor = dramatiq.actor(lambda: ran.append(1), broker=broker, actor_name="releasable")
    actor.send_with_options(delay=3_600_000, redis_message_id="r-1")
    wait_until(
        lambda: broker.queues[dq_name(actor.queue_name)].qsize() == 0,
        what="the worker's delay consumer to hold the message",
    )

    control_state.release(client, "r-1", eta_ms=current_millis() + 3_600_000)
    broker.join(actor.queue_name, timeout=30_000)

    assert ran == [1]  # the join saw both queues done: it is not held again for its eta
