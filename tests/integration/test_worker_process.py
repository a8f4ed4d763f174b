"""A message sent by the CLI is processed by a real dramatiq worker on the test's own Redis."""

from __future__ import annotations

import subprocess

from tests.support.processes import VENV_BIN, dramatiq_worker, fintask_env, running


def test_fintask_ping_is_answered_by_a_real_worker(redis_url, tmp_path):
    env = fintask_env(REDIS_URL=redis_url, FINTASK_VAR_DIR=str(tmp_path))

    with running(dramatiq_worker("maintenance"), env, tmp_path / "worker.log"):
        result = subprocess.run(
            [str(VENV_BIN / "fintask"), "ping", "--timeout", "30"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("pong from ")


def test_fintask_ping_says_so_when_no_worker_answers(redis_url, tmp_path):
    env = fintask_env(REDIS_URL=redis_url, FINTASK_VAR_DIR=str(tmp_path))

    result = subprocess.run(
        [str(VENV_BIN / "fintask"), "ping", "--timeout", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    assert "no worker answered within 1 s" in result.stderr


def test_a_missing_redis_url_is_a_readable_error(tmp_path):
    env = fintask_env(FINTASK_VAR_DIR=str(tmp_path), REDIS_URL="")

    result = subprocess.run(
        [str(VENV_BIN / "fintask"), "ping"], env=env, capture_output=True, text=True, timeout=60
    )

    assert result.returncode != 0
    assert "REDIS_URL is not set" in result.stderr
    assert "Traceback" not in result.stderr
