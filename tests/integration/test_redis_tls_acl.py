"""fintask over TLS, each process type as its own Redis ACL user (docs/security.md).

One ``redis-server`` speaks TLS only (``--tls-port``, ``--port 0``) with a certificate of a CA
this test makes with ``openssl``, and loads ``ops/redis-users.acl`` as shipped; the test, as a
deploy would, gives each user a password. A real worker, the scheduler and the web process
(as the Procfile starts them) then do their work through ``rediss://USER:PASSWORD@...`` with
certificate verification on, and the commands each user must not run are refused. A batch
under fintask's prefix goes through all of it: the web's user creates, fills and seals it and
cancels another, the worker's records its members and fires its callbacks, and the web's reads
its progress.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from dramatiq import Message

from app.celery_protocol import BRIDGE_QUEUE
from app.db.migrate import upgrade
from app.inspection import list_dead_letters
from app.local.ports import free_port, wait_for_port
from app.local.supervisor import procfile_commands
from app.redis_access import BATCH_PREFIX
from app.schedule_control import request_run
from app.settings import PROJECT_ROOT
from app.wakeup_broker import WakeupRedisBroker
from chunking import Batches, Callback
from tests.support.celery_bridge_actors import QUEUE as BRIDGED_QUEUE
from tests.support.celery_producer import celery_producer
from tests.support.processes import VENV_BIN, fintask_env, running, wait_until
from tests.support.procfile import procfile_command, procfile_env
from tests.support.recovery import QUEUE, done, send_work, worker_env, worker_process
from tests.support.redis_servers import RedisNode, TLSFiles, make_tls_files
from tests.support.scheduler_actors import QUEUE as TICK_QUEUE

pytestmark = pytest.mark.integration

PASSWORD = "tls-acl-test-password"
USERS = ("fintask-worker", "fintask-web", "fintask-scheduler")
#: The members of the batch the worker records, added in three pages.
MEMBERS, PAGE = 250, 100
#: Gunicorn's first answer waits for its worker to import the app (tests/integration/
#: test_web_process.py).
FIRST_ANSWER_S = 120
SCHEDULER = [str(VENV_BIN / "fintask"), "process", "scheduler", "--"]
SCHEDULER += [str(VENV_BIN / "python"), "-m", "scheduler", "tests.support.scheduler_actors"]
BRIDGE = procfile_command("bridge_celery", "--tasks", "tests.support.celery_bridge_actors:TASKS")


@pytest.fixture
def tls_acl_redis(tmp_path: Path) -> Iterator[tuple[RedisNode, TLSFiles]]:
    tls = make_tls_files(tmp_path / "tls")
    acl_file = tmp_path / "redis-users.acl"  # Redis may rewrite it (ACL SAVE): a copy
    shutil.copy(PROJECT_ROOT / "ops" / "redis-users.acl", acl_file)
    node = RedisNode(data_dir=tmp_path / "redis", tls=tls, acl_file=acl_file).start()
    admin = node.client()
    for user in USERS:
        admin.execute_command("ACL", "SETUSER", user, f">{PASSWORD}")
    admin.close()
    yield node, tls
    node.stop()


def url_of(user: str, node: RedisNode, tls: TLSFiles) -> str:
    return f"rediss://{user}:{PASSWORD}@127.0.0.1:{node.port}/0?ssl_ca_certs={tls.ca_cert}"


def client_of(user: str, node: RedisNode, tls: TLSFiles) -> redis.Redis:
    return redis.Redis.from_url(url_of(user, node, tls))


def test_every_process_type_works_over_tls_as_its_own_acl_user(tls_acl_redis, redis_url, tmp_path):
    node, tls = tls_acl_redis
    database_url = f"sqlite:///{tmp_path / 'web.db'}"
    upgrade(database_url)
    port = free_port()
    web_env = fintask_env(
        REDIS_URL=url_of("fintask-web", node, tls),
        DATABASE_URL=database_url,
        PORT=str(port),
        HOST="127.0.0.1",
    )
    scheduler_env = fintask_env(
        REDIS_URL=url_of("fintask-scheduler", node, tls), FINTASK_VAR_DIR=str(tmp_path / "s")
    )
    # (the bridge's Celery side is Celery's own Redis: the test session's)
    bridge_env = procfile_env(
        var_dir=tmp_path / "b",
        REDIS_URL=url_of("fintask-web", node, tls),
        CELERY_BROKER_URL=redis_url,
    )
    celery = celery_producer(redis_url)
    mapped = celery.send_task("shop.tasks.record", args=["over tls"])
    unknown = celery.send_task("shop.tasks.nobody_runs_this", args=[1])
    worker_url = url_of("fintask-worker", node, tls)
    worker = worker_process(threads=2)
    reader = client_of("fintask-worker", node, tls)
    # Given a worker, the scheduler, the web process and the Celery bridge, each on its user,
    # over TLS, and a Celery producer's task the bridge maps and one it does not
    with (
        running(worker, worker_env(worker_url, tmp_path / "w", prefetch=2), tmp_path / "w.log"),
        running(SCHEDULER, scheduler_env, tmp_path / "scheduler.log"),
        running(["bash", "-c", procfile_commands()["web"]], web_env, tmp_path / "web.log"),
        running(BRIDGE, bridge_env, tmp_path / "bridge.log"),
    ):
        # When the web's user sends work, and an operator asks the scheduler for a run now
        producer = WakeupRedisBroker(url=url_of("fintask-web", node, tls), middleware=[])
        sent = {send_work(producer) for _ in range(5)}
        request_run(client_of("fintask-web", node, tls), "every_minute", requested_by="test")
        # And the web's user starts a batch of work with two callbacks, and cancels another
        batches = Batches(
            client=client_of("fintask-web", node, tls), broker=producer, prefix=BATCH_PREFIX
        )
        on_success, on_complete = Callback("work", QUEUE), Callback("work", QUEUE, {"n": 1})
        batch_id = batches.create(name="acl", on_success=on_success, on_complete=on_complete)
        members = (Message(QUEUE, "work", (), {}, {}) for _ in range(MEMBERS))
        batches.add(batch_id, members, page_size=PAGE)
        batches.seal(batch_id)
        cancelled_id = batches.create(name="cancelled", on_complete=on_complete)
        batches.cancel(cancelled_id)
        callbacks = {
            on_success.message(batch_id, "on_success", 0, 0).message_id,
            on_complete.message(batch_id, "on_complete", 0, 0).message_id,
            on_complete.message(cancelled_id, "on_complete", 0, 0).message_id,
        }

        # Then the worker runs the work, the scheduler sends the job, the web answers
        wait_until(lambda: set(done(reader)) >= sent, timeout_s=120, what="the work to run")
        # and the worker records every member and runs the callbacks, once each
        wait_until(
            lambda: set(done(reader)) >= callbacks, timeout_s=120, what="the batch's callbacks"
        )
        progress = batches.progress(batch_id)
        recent = {listed.batch_id for listed in batches.recent()}
        failed_page = batches.failed_members(batch_id)
        wait_until(
            lambda: reader.llen(f"dramatiq:{TICK_QUEUE}") >= 1,
            timeout_s=120,
            what="the scheduler to send the job asked for",
        )
        # and the bridge hands the mapped task on (its queue has no worker here) and
        # dead-letters the other
        wait_until(
            lambda: (
                reader.zcard(f"dramatiq:{BRIDGE_QUEUE}.XQ") == 1
                and reader.hlen(f"dramatiq:{BRIDGED_QUEUE}.msgs") == 1
            ),
            timeout_s=120,
            what="the bridge to hand one task on and dead-letter one",
        )
        [handed_on] = reader.hvals(f"dramatiq:{BRIDGED_QUEUE}.msgs")
        [letter] = list_dead_letters(reader, [BRIDGE_QUEUE])
        wait_for_port(port, timeout_s=FIRST_ANSWER_S)
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=FIRST_ANSWER_S)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30)
        producer.client.close()

    assert health.json() == {"status": "ok", "database": "ok", "redis": "ok"}
    assert progress is not None
    assert (progress.state, progress.succeeded, progress.failed) == ("fired", MEMBERS, 0)
    assert recent == {batch_id, cancelled_id}
    assert failed_page == (0, [])
    assert all(done(reader)[callback] == 1 for callback in callbacks)
    assert len(done(reader)) == len(sent) + MEMBERS + len(callbacks)
    assert 'fintask_queue_messages{queue_name="maintenance",state="ready"} 0.0' in metrics.text
    assert json.loads(handed_on)["message_id"] == mapped.id
    assert letter.message_id == unknown.id
    for log in ("w.log", "scheduler.log", "web.log", "bridge.log"):
        text = (tmp_path / log).read_text()
        assert "no permissions" not in text.lower(), text
        assert "configuration error" not in text, text


@pytest.mark.parametrize(
    ("user", "command"),
    [
        ("fintask-worker", ("FLUSHALL",)),
        ("fintask-worker", ("CONFIG", "GET", "maxmemory")),
        ("fintask-worker", ("KEYS", "*")),
        ("fintask-web", ("LPOP", "dramatiq:default")),
        ("fintask-web", ("BLPOP", "dramatiq:default.wake", "1")),
        ("fintask-web", ("KEYS", "dramatiq:*")),
        ("fintask-scheduler", ("LPOP", "dramatiq:default")),
        ("fintask-scheduler", ("FLUSHDB",)),
        ("fintask-worker", ("SET", "other-app:key", "1")),
    ],
)
def test_each_user_is_refused_what_its_process_type_must_not_do(tls_acl_redis, user, command):
    node, tls = tls_acl_redis
    client = client_of(user, node, tls)

    with pytest.raises(redis.exceptions.NoPermissionError):
        client.execute_command(*command)
    client.close()


def test_the_web_user_reads_queues_it_may_not_consume(tls_acl_redis):
    node, tls = tls_acl_redis
    client = client_of("fintask-web", node, tls)

    assert client.llen("dramatiq:default") == 0
    assert client.lrange("dramatiq:default", 0, 10) == []
    client.close()
