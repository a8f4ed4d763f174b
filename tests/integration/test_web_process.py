"""The web process under gunicorn answers /healthz and /metrics, and says so when Redis is
down or stalled instead of holding the request."""

from __future__ import annotations

import os
import signal

import httpx
from sqlalchemy import create_engine, select

from app.db.migrate import upgrade
from app.db.models import ProviderAccount
from app.local.ports import free_port, wait_for_port
from app.local.redis_server import RedisServer
from app.local.seed import seed
from app.local.supervisor import procfile_commands
from tests.support.processes import fintask_env, running

#: How long the first request may wait. Gunicorn's master listens before its worker has
#: imported the app, so the request sits in the listen backlog until the worker boots: tens
#: of seconds on a loaded 2-core machine.
FIRST_ANSWER_S = 120


def test_gunicorn_serves_health_and_metrics(redis_url, tmp_path):
    database_url = f"sqlite:///{tmp_path / 'web.db'}"
    upgrade(database_url)
    port = free_port()
    env = fintask_env(
        REDIS_URL=redis_url, DATABASE_URL=database_url, PORT=str(port), HOST="127.0.0.1"
    )

    with running(["bash", "-c", procfile_commands()["web"]], env, tmp_path / "web.log"):
        wait_for_port(port, timeout_s=FIRST_ANSWER_S)
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=FIRST_ANSWER_S)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)

    assert health.status_code == 200
    assert health.json() == {"status": "ok", "database": "ok", "redis": "ok"}
    assert metrics.status_code == 200
    assert 'fintask_queue_messages{queue_name="maintenance",state="ready"} 0.0' in metrics.text


def test_healthz_is_503_and_names_redis_when_redis_is_down(tmp_path):
    database_url = f"sqlite:///{tmp_path / 'web.db'}"
    upgrade(database_url)
    port = free_port()
    env = fintask_env(
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        DATABASE_URL=database_url,
        PORT=str(port),
        HOST="127.0.0.1",
    )

    with running(["bash", "-c", procfile_commands()["web"]], env, tmp_path / "web.log"):
        wait_for_port(port, timeout_s=FIRST_ANSWER_S)
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=FIRST_ANSWER_S)

    assert health.status_code == 503
    assert health.json()["database"] == "ok"
    assert health.json()["redis"].startswith("error: ")


def test_a_refresh_while_redis_is_stalled_is_a_503_once_the_socket_timeout_runs_out(tmp_path):
    # Given a web process whose Redis (this test's own) answered at start, and an account,
    database_url = f"sqlite:///{tmp_path / 'web.db'}"
    upgrade(database_url)
    engine = create_engine(database_url)
    seed(engine, users=1)
    with engine.connect() as connection:
        account_id = connection.scalar(select(ProviderAccount.id))
    engine.dispose()
    port = free_port()
    with RedisServer(data_dir=tmp_path / "redis", persistent=False) as server:
        assert server.process is not None
        env = fintask_env(
            REDIS_URL=server.url, DATABASE_URL=database_url, PORT=str(port), HOST="127.0.0.1"
        )
        with running(["bash", "-c", procfile_commands()["web"]], env, tmp_path / "web.log"):
            wait_for_port(port, timeout_s=FIRST_ANSWER_S)
            assert (
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=FIRST_ANSWER_S).status_code
                == 200
            )

            # when Redis stops answering without closing its connections (a paused VM, a
            # partition) and a client asks for a refresh,
            os.kill(server.process.pid, signal.SIGSTOP)
            try:
                response = httpx.post(
                    f"http://127.0.0.1:{port}/api/accounts/{account_id}/refresh", timeout=300
                )
            finally:
                os.kill(server.process.pid, signal.SIGCONT)

    # then the request ends with a 503 that says the job waits for the queue (the outbox keeps
    # its first poll), not a 500 and not a request held for as long as Redis is stalled.
    assert response.status_code == 503
    assert "the queue could not be reached (TimeoutError)" in response.json()["detail"]
