"""A batch whose worker is SIGKILLed while its last members run, and again while its callbacks
run: every member's effect once, each callback's effect once, the tallies exact.

The workers are the Procfile's ``worker`` line word for word (2 processes x 8 threads, prefetch
16, every queue) with ``tests.support.batch_kill_actors`` imported beside fintask's actors, on
the production settings: a killed worker's messages come back through ``DeadWorkerRecovery``
once its heartbeat is 60 s old. The batch has 300 members; the last 8 block their first run
after their effect, so the first kill lands with their effects done and their outcomes not
recorded; both callbacks (``on_success``, ``on_complete``) block their first run, so the second
kill lands while they run, after the batch recorded that it fired. A fresh worker replaces each
killed one at once, as a platform restarts a dyno. The test takes about 3 minutes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest
import redis
from dramatiq import Message

from app.redis_access import BATCH_PREFIX
from app.settings import load_settings
from chunking import Batches, BatchProgress, Callback
from chunking.batch_scripts import done_key
from tests.support import batch_kill_actors as kill_actors
from tests.support.processes import running, wait_until
from tests.support.procfile import booted_processes, procfile_env, procfile_worker
from tests.support.workers import fintask_broker

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900)]

MEMBERS = 300
#: The last members, in flight at the first kill: fewer than a worker's 16 threads.
SLOW = 8
HEARTBEAT_TIMEOUT_S = 60
#: Room for recovery's 5 s clock, worker boots and a loaded 2-core machine.
MARGIN_S = 240
CALLBACKS = ("on_success", "on_complete")


class Workers:
    """The test's workers, one at a time, each started the Procfile's way."""

    def __init__(self, stack: ExitStack, tmp_path: Path, client: redis.Redis, url: str) -> None:
        self.stack = stack
        self.tmp_path = tmp_path
        self.client = client
        self.url = url
        self.started = 0

    def start(self) -> subprocess.Popen[bytes]:
        """Start the next worker; return it once both its processes have booted."""
        self.started += 1
        name = f"worker-{self.started}"
        env = procfile_env(
            var_dir=self.tmp_path / name,
            REDIS_URL=self.url,
            DATABASE_URL=f"sqlite:///{self.tmp_path / 'fintask.db'}",
        )
        log = self.tmp_path / f"{name}.log"
        command = procfile_worker(kill_actors.__name__)
        worker = self.stack.enter_context(running(command, env, log))
        wait_until(
            lambda: booted_processes(self.client, worker) == 2 or worker.poll() is not None,
            timeout_s=180,
            what=f"both processes of {name} to boot",
        )
        assert worker.poll() is None, log.read_text()[-3000:]
        return worker


def kill(worker: subprocess.Popen[bytes]) -> float:
    """SIGKILL ``worker``'s process group; when (the wall clock the actors' effects carry)."""
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    return time.time()


def runs(client: redis.Redis, prefix: str) -> dict[str, int]:
    """How many times each member (``member:``) or callback (``callback:``) started."""
    return {
        name.decode().removeprefix(prefix): int(count)
        for name, count in client.hgetall(kill_actors.RUNS_KEY).items()
        if name.decode().startswith(prefix)
    }


def callback(which: str) -> Callback:
    """The test actor's callback, telling which one it is."""
    return Callback("callback", kill_actors.QUEUE, {"which": which})


def effects(client: redis.Redis) -> set[int]:
    return {int(n) for n in client.smembers(kill_actors.EFFECTS_KEY)}


def callback_effects(client: redis.Redis) -> dict[str, float]:
    return {k.decode(): float(v) for k, v in client.hgetall(kill_actors.CALLBACKS_KEY).items()}


def test_a_batch_killed_during_its_last_members_and_its_callbacks_fires_each_once(
    redis_url: str,
    client: redis.Redis,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    # The Procfile's settings, not a test's: the heartbeat timeout is the production default.
    assert load_settings().heartbeat_timeout_ms == HEARTBEAT_TIMEOUT_S * 1000
    producer = fintask_broker(redis_url)
    batches = Batches(client=client, broker=producer, prefix=BATCH_PREFIX)
    slow_from = MEMBERS - SLOW

    def progress() -> BatchProgress:
        snapshot = batches.progress(batch_id)
        assert snapshot is not None
        return snapshot

    def last_members_blocked() -> bool:
        return len(effects(client)) == MEMBERS and progress().pending == SLOW

    def callbacks_blocked() -> bool:
        return set(runs(client, "callback:")) == set(CALLBACKS)

    with ExitStack() as stack:
        workers = Workers(stack, tmp_path, client, redis_url)
        worker = workers.start()
        # Given a batch of 300 members with an on_success and an on_complete callback
        batch_id = batches.create(
            name="kill",
            on_success=callback("on_success"),
            on_failure=callback("on_failure"),
            on_complete=callback("on_complete"),
        )
        batches.add(
            batch_id,
            (
                Message(kill_actors.QUEUE, "member", (), {"n": n, "slow_from": slow_from}, {})
                for n in range(MEMBERS)
            ),
        )
        batches.seal(batch_id)

        # When the worker is SIGKILLed while the last 8 members run (their effect done, their
        # outcome not yet recorded)
        wait_until(last_members_blocked, timeout_s=300, what="the last members to block")
        first_kill = kill(worker)
        # And a fresh worker takes its place, gets them back and finishes them
        worker = workers.start()
        wait_until(
            lambda: progress().complete,
            timeout_s=HEARTBEAT_TIMEOUT_S + MARGIN_S,
            what="the batch to complete after the first kill",
        )
        completed_s = time.time() - first_kill
        # And is SIGKILLed in turn while both callbacks run, the batch recorded as fired
        wait_until(callbacks_blocked, timeout_s=120, what="both callbacks to start")
        assert progress().state == "fired"
        second_kill = kill(worker)
        # And a third worker takes its place
        workers.start()
        wait_until(
            lambda: set(callback_effects(client)) == set(CALLBACKS),
            timeout_s=HEARTBEAT_TIMEOUT_S + MARGIN_S,
            what="both callbacks' effects after the second kill",
        )
        to_effect_s = max(callback_effects(client).values()) - second_kill
        final = progress()
        marked = int(client.bitcount(done_key(BATCH_PREFIX, batch_id)))
        member_runs = runs(client, "member:")
        callback_runs = runs(client, "callback:")
        fired = callback_effects(client)
    producer.client.close()

    record_property("batch_completed_after_first_kill_s", round(completed_s, 1))
    record_property("callback_effect_after_second_kill_s", round(to_effect_s, 1))
    record_property("member_redeliveries", sum(member_runs.values()) - MEMBERS)
    print(
        f"\nbatch of {MEMBERS}, worker SIGKILL during the last {SLOW} members and again during "
        f"both callbacks: members lost 0 of {MEMBERS}, counted {final.succeeded} "
        f"(bitmap {marked}); batch complete {completed_s:.1f} s after the first kill; "
        f"callbacks' effects {to_effect_s:.1f} s after the second kill "
        f"(callback runs {callback_runs})"
    )

    # Then every member's effect is there once, and counted once though the last ones ran twice
    assert effects(client) == set(range(MEMBERS))
    assert {n for n, count in member_runs.items() if count > 1} == {
        str(n) for n in range(slow_from, MEMBERS)
    }
    assert (final.succeeded, final.failed, final.total, marked) == (MEMBERS, 0, MEMBERS, MEMBERS)
    # And each callback's effect once (on_failure none), its only second run the redelivery
    assert set(fired) == set(CALLBACKS)
    assert callback_runs == dict.fromkeys(CALLBACKS, 2)
