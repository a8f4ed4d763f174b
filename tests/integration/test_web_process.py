"""The web process under gunicorn answers /healthz and /metrics."""

from __future__ import annotations

import httpx

from app.db.migrate import upgrade
from app.local.ports import free_port, wait_for_port
from app.local.supervisor import procfile_commands
from tests.support.processes import fintask_env, running


def test_gunicorn_serves_health_and_metrics(redis_url, tmp_path):
    database_url = f"sqlite:///{tmp_path / 'web.db'}"
    upgrade(database_url)
    port = free_port()
    env = fintask_env(
        REDIS_URL=redis_url, DATABASE_URL=database_url, PORT=str(port), HOST="127.0.0.1"
    )

    with running(["bash", "-c", procfile_commands()["web"]], env, tmp_path / "web.log"):
        wait_for_port(port, timeout_s=30)
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
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
        wait_for_port(port, timeout_s=30)
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=20)

    assert health.status_code == 503
    assert health.json()["database"] == "ok"
    assert health.json()["redis"].startswith("error: ")
