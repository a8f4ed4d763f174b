"""`fintask run` with no REDIS_URL starts its own Redis, hands it to every process, and leaves
nothing behind when it is stopped."""

from __future__ import annotations

import subprocess

import httpx
import psutil

from app.local.ports import free_port
from tests.support.processes import VENV_BIN, fintask_env, running, wait_until


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_run_starts_and_stops_a_private_redis_and_leaves_no_process(tmp_path):
    web_port = free_port()
    env = fintask_env(FINTASK_VAR_DIR=str(tmp_path), WEB_PORT=str(web_port), REDIS_URL="")
    command = [str(VENV_BIN / "fintask"), "run", "web", "worker"]

    with running(command, env, tmp_path / "run.log") as process:
        wait_until(
            lambda: _healthy(f"http://127.0.0.1:{web_port}/healthz"),
            timeout_s=60,
            what="web to report healthy on the private Redis",
        )
        children = psutil.Process(process.pid).children(recursive=True)
        (redis_server,) = [p for p in children if p.name() == "redis-server"]
        (listening,) = [c for c in redis_server.net_connections("tcp") if c.status == "LISTEN"]
        redis_port = listening.laddr.port
        # The worker was handed the same private Redis: it answers a ping sent there.
        ping = subprocess.run(
            [str(VENV_BIN / "fintask"), "ping", "--timeout", "30"],
            env=dict(env, REDIS_URL=f"redis://127.0.0.1:{redis_port}/0"),
            capture_output=True,
            text=True,
        )
        assert ping.returncode == 0, ping.stderr
        assert (tmp_path / "redis" / "appendonlydir").is_dir(), "Redis keeps its data under var/"
        children = psutil.Process(process.pid).children(recursive=True)

    assert process.returncode == 143, "honcho reports a stop by SIGTERM as 128 + 15"
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], f"left behind: {[p.cmdline() for p in alive]}"
