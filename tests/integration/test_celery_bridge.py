"""A real Celery 5.7 producer's tasks run on real fintask workers through the bridge.

One stack for the module's main case: the test's own redis-server (Celery's broker and
fintask's, as in a migration that keeps one Redis), a real ``dramatiq`` worker and the bridge
started by the Procfile's ``bridge_celery`` line, with the test's task mapping.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest
import redis

from app.celery_protocol import BRIDGE_QUEUE
from app.inspection import list_dead_letters
from tests.support.celery_bridge_actors import QUEUE, RAN_AT_KEY, RUNS_KEY
from tests.support.celery_producer import CreatesFileWhenUnpickled, celery_producer
from tests.support.processes import dramatiq_worker, running, wait_until
from tests.support.procfile import procfile_command, procfile_env

pytestmark = pytest.mark.integration

TEST_TASKS = ("--tasks", "tests.support.celery_bridge_actors:TASKS")
WORKER_MODULES = ("actors", "tests.support.celery_bridge_actors")


def test_a_celery_producers_tasks_run_once_each_and_what_cannot_run_is_dead_lettered(
    redis_url: str, client: redis.Redis, tmp_path: Path
):
    # Given a Celery producer publishing with delay, apply_async (countdown, eta, expires,
    # an expiry already past) and send_task, a pickled task whose unpickling would create a
    # file, a task no actor is mapped to, and one whose argument is an e-mail address,
    producer = celery_producer(redis_url)
    record = producer.tasks["shop.tasks.record"]
    now = dt.datetime.now(dt.UTC)
    expired = record.apply_async(args=["expired"], expires=now - dt.timedelta(minutes=1))
    sent = {
        "delay": record.delay("delay"),
        "countdown": record.apply_async(args=["countdown"], countdown=2),
        "eta": record.apply_async(args=["eta"], eta=now + dt.timedelta(seconds=2)),
        "expires": record.apply_async(args=["expires"], expires=600),
        "send_task": producer.send_task("shop.tasks.record", args=["send_task"]),
    }
    proof = tmp_path / "unpickled"
    pickled = record.apply_async(args=[CreatesFileWhenUnpickled(proof)], serializer="pickle")
    unknown = producer.send_task("shop.tasks.nobody_runs_this", args=[1])
    personal = producer.send_task("shop.tasks.record", args=["jane.doe@example.com"])

    # when the bridge and a fintask worker run,
    env = procfile_env(var_dir=tmp_path, REDIS_URL=redis_url)
    bridge_log = tmp_path / "bridge.log"
    with (
        running(dramatiq_worker(QUEUE, modules=WORKER_MODULES), env, tmp_path / "worker.log"),
        running(procfile_command("bridge_celery", *TEST_TASKS), env, bridge_log) as bridge,
    ):
        wait_until(
            lambda: _alive(bridge) and client.hlen(RUNS_KEY) == len(sent) and _dead(client) == 3,
            timeout_s=120,
            what=f"{len(sent)} runs and 3 dead letters",
        )

    # then each task ran once, as the fintask message of its Celery id, none before its eta,
    runs = {key.decode(): int(count) for key, count in client.hgetall(RUNS_KEY).items()}
    assert runs == {result.id: 1 for result in sent.values()}
    ran_at = {key.decode(): int(value) for key, value in client.hgetall(RAN_AT_KEY).items()}
    for label in ("countdown", "eta"):
        assert ran_at[sent[label].id] >= (now + dt.timedelta(seconds=2)).timestamp() * 1000 - 50
    # the expired one was dropped unrun, as a Celery worker revokes it,
    assert expired.id not in runs
    assert f"Dropping Celery task {expired.id}" in bridge_log.read_text()
    # and the three it could not run are dead letters with their reason, the pickle unread
    reasons = {
        letter.message_id: letter.reason for letter in list_dead_letters(client, [BRIDGE_QUEUE])
    }
    assert "'application/x-python-serialize', not JSON" in reasons[pickled.id]
    assert not proof.exists()
    assert (
        "no fintask actor is mapped to Celery task 'shop.tasks.nobody_runs_this'"
        in (reasons[unknown.id])
    )
    assert "argument 'args[0]' looks like an e-mail address" in reasons[personal.id]
    assert "jane.doe" not in str(list_dead_letters(client, [BRIDGE_QUEUE]))
    # and the bridge stopped cleanly on SIGTERM, its Celery queue empty and nothing unacked
    assert "Stopped" in bridge_log.read_text()
    assert client.llen("celery") == 0
    assert client.hlen("fintask.celery_bridge.celery.unacked") == 0


def _alive(process: subprocess.Popen[bytes]) -> bool:
    """True while ``process`` runs; fails the test at once if it exited."""
    assert process.poll() is None, f"the bridge exited with status {process.returncode}"
    return True


def _dead(client: redis.Redis) -> int:
    return int(client.zcard(f"dramatiq:{BRIDGE_QUEUE}.XQ"))
