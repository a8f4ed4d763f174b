"""fintask over TLS, each process type as its own Redis ACL user (docs/security.md).

One ``redis-server`` speaks TLS only (``--tls-port``, ``--port 0``) with a certificate of a CA
this test makes with ``openssl``, and loads ``ops/redis-users.acl`` as shipped; the test, as a
deploy would, gives each user a password. A real worker, the scheduler and the web process
(as the Procfile starts them) then do their work through ``rediss://USER:PASSWORD@...`` with
certificate verification on, and the commands each user must not run are refused.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from app.db.migrate import upgrade
from app.local.ports import free_port, wait_for_port
from app.local.supervisor import procfile_commands
from app.schedule_control import request_run
from app.settings import PROJECT_ROOT
from app.wakeup_broker import WakeupRedisBroker
from tests.support.processes import VENV_BIN, fintask_env, running, wait_until
from tests.support.recovery import done, send_work, worker_env, worker_process
from tests.support.redis_servers import RedisNode, TLSFiles, make_tls_files
from tests.support.scheduler_actors import QUEUE as TICK_QUEUE

pytestmark = pytest.mark.integration

PASSWORD = "tls-acl-test-password"
USERS = ("fintask-worker", "fintask-web", "fintask-scheduler")
#: Gunicorn's first answer waits for its worker to import the app (tests/integration/
#: test_web_process.py).
FIRST_ANSWER_S = 120
SCHEDULER = [str(VENV_BIN / "fintask"), "process", "scheduler", "--"]
SCHEDULER += [str(VENV_BIN / "python"), "-m", "scheduler", "tests.support.scheduler_actors"]


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


def test_worker_scheduler_and_web_work_over_tls_each_as_its_own_acl_user(tls_acl_redis, tmp_path):
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
    worker_url = url_of("fintask-worker", node, tls)
    worker = worker_process(threads=2)
    reader = client_of("fintask-worker", node, tls)
    # Given a worker, the scheduler and the web process, each on its user, over TLS
    with (
        running(worker, worker_env(worker_url, tmp_path / "w", prefetch=2), tmp_path / "w.log"),
        running(SCHEDULER, scheduler_env, tmp_path / "scheduler.log"),
        running(["bash", "-c", procfile_commands()["web"]], web_env, tmp_path / "web.log"),
    ):
        # When the web's user sends work, and an operator asks the scheduler for a run now
        producer = WakeupRedisBroker(url=url_of("fintask-web", node, tls), middleware=[])
        sent = {send_work(producer) for _ in range(5)}
        request_run(client_of("fintask-web", node, tls), "every_minute", requested_by="test")

        # Then the worker runs the work, the scheduler sends the job, the web answers
        wait_until(lambda: set(done(reader)) >= sent, timeout_s=120, what="the work to run")
        wait_until(
            lambda: reader.llen(f"dramatiq:{TICK_QUEUE}") >= 1,
            timeout_s=120,
            what="the scheduler to send the job asked for",
        )
        wait_for_port(port, timeout_s=FIRST_ANSWER_S)
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=FIRST_ANSWER_S)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30)
        producer.client.close()

    assert health.json() == {"status": "ok", "database": "ok", "redis": "ok"}
    assert 'fintask_queue_messages{queue_name="maintenance",state="ready"} 0.0' in metrics.text
    for log in ("w.log", "scheduler.log", "web.log"):
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
