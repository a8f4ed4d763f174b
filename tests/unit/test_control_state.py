"""The fleet's control state in a real Redis, and a worker obeying it (``FleetControl`` on
Dramatiq's StubBroker, with the state in the test's own redis-server)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import dramatiq
import pytest
import redis
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage

from app import control_state
from app.control_state import ControlWatcher, read_state
from app.middleware.deadlines import check_deadline
from app.middleware.fleet import FleetControl
from app.middleware.retries import DurableRetries


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
