"""`fintask run` with no REDIS_URL starts its own Redis, hands it to every process, tells the
shells beside it where it is, and leaves nothing behind when it is stopped."""

from __future__ import annotations

import json
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
        # It said where it runs, and keeps it in its var dir's run file while it runs,
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        run_file = json.loads((tmp_path / "run.json").read_text())
        assert (run_file["pid"], run_file["redis_url"]) == (process.pid, redis_url)
        assert run_file["web_url"] == f"http://127.0.0.1:{web_port}"
        worker_metrics = run_file["metrics_urls"]["worker"]
        printed = (tmp_path / "run.log").read_text()
        assert f"  redis           {redis_url}\n" in printed
        assert f"  web             http://127.0.0.1:{web_port}\n" in printed
        assert f"  worker metrics  {worker_metrics}\n" in printed
        wait_until(lambda: _healthy(worker_metrics), timeout_s=60, what="the worker's metrics")
        # so a second shell's fintask, with no REDIS_URL, reaches the worker through that Redis.
        ping = subprocess.run(
            [str(VENV_BIN / "fintask"), "ping", "--timeout", "30"],
            env={k: v for k, v in env.items() if k != "REDIS_URL"},
            capture_output=True,
            text=True,
        )
        assert ping.returncode == 0, ping.stderr
        assert (tmp_path / "redis" / "appendonlydir").is_dir(), "Redis keeps its data under var/"
        children = psutil.Process(process.pid).children(recursive=True)

    assert process.returncode == 143, "honcho reports a stop by SIGTERM as 128 + 15"
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], f"left behind: {[p.cmdline() for p in alive]}"
    assert not (tmp_path / "run.json").exists(), "a stopped run leaves no run file"


def test_an_unknown_process_type_stops_run_before_it_starts_anything(tmp_path):
    var_dir = tmp_path / "var"
    env = fintask_env(FINTASK_VAR_DIR=str(var_dir), REDIS_URL="")

    result = subprocess.run(
        [str(VENV_BIN / "fintask"), "run", "web", "bogus"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 2, result.stderr
    assert "unknown process type 'bogus'; the Procfile's are web, worker_urgent" in result.stderr
    assert "Traceback" not in result.stderr
    assert not var_dir.exists(), "no Redis data, no database, no run file"
