"""Sentinel over TLS: a deploy in which every server speaks TLS only (the master, its replica,
three sentinels, replication and the sentinels' own links), certificates of a CA the test made
with ``openssl``, and fintask on ``REDIS_URL=rediss+sentinel://...?ssl_ca_certs=CA``.

The Procfile's worker runs a message; the master is SIGKILLed and Sentinel promotes the
replica; the worker finds the new master through the sentinels, over TLS, and runs a message
sent after. A CA that did not sign the sentinels' certificates stops a process at start, in one
line naming ``REDIS_URL`` and the cause. The plain-text failover under load, with what it
loses, is ``test_sentinel_failover.py``'s.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import redis

from app.redis_client import redis_pool
from app.settings import CONFIGURATION_ERROR_EXIT
from app.wakeup_broker import WakeupRedisBroker
from tests.support.processes import VENV_BIN, running, wait_until
from tests.support.procfile import booted_processes, procfile_env, procfile_worker
from tests.support.recovery import runs, send_work
from tests.support.redis_servers import SentinelDeploy, make_tls_files

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(600)]


def test_a_tls_only_sentinel_deploy_fails_over_and_the_worker_follows_it(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "tls")
    with SentinelDeploy(tmp_path / "redis", tls=tls) as deploy:
        url = deploy.url
        assert url.startswith("rediss+sentinel://")
        env = procfile_env(var_dir=tmp_path / "var", REDIS_URL=url)
        client = redis.Redis(connection_pool=redis_pool(url, socket_timeout=10))
        producer = WakeupRedisBroker(url=url, middleware=[])
        worker = procfile_worker("tests.support.reliability_actors")
        # Given the Procfile's worker on the TLS Sentinel URL, running messages,
        with running(worker, env, tmp_path / "worker.log") as process:
            wait_until(lambda: booted_processes(client, process) == 2, timeout_s=180, what="boot")
            before = send_work(producer)
            wait_until(lambda: before in runs(client), timeout_s=120, what="the first message")

            # when the master is SIGKILLed and Sentinel promotes the replica,
            old_port = deploy.master.port
            deploy.kill_master()
            promoted = deploy.wait_promoted()

            # then a message sent to the new master, over TLS, runs on the same worker.
            after = send_work(producer)
            wait_until(lambda: after in runs(client), timeout_s=300, what="a message after")
            assert process.poll() is None, "the worker rode the failover out"
        assert promoted.port != old_port
        assert runs(client)[after] == 1
        producer.client.close()
        client.close()


def test_sentinels_whose_certificate_does_not_verify_stop_a_process_in_one_line(
    tmp_path: Path,
) -> None:
    tls = make_tls_files(tmp_path / "tls")
    other_ca = make_tls_files(tmp_path / "other-ca").ca_cert
    with SentinelDeploy(tmp_path / "redis", tls=tls) as deploy:
        url = deploy.url.replace(str(tls.ca_cert), str(other_ca))
        env = procfile_env(var_dir=tmp_path / "var", REDIS_URL=url)

        ended = subprocess.run(
            [str(VENV_BIN / "fintask"), "queues"], env=env, capture_output=True, text=True
        )

    output = ended.stdout + ended.stderr
    assert ended.returncode == CONFIGURATION_ERROR_EXIT, output
    (line,) = output.strip().splitlines()
    assert line.startswith(f"configuration error: REDIS_URL='{url}': "), line
    assert "the sentinels' certificate did not verify" in line
    assert "CERTIFICATE_VERIFY_FAILED" in line
