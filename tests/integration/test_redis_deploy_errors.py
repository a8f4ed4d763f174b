"""A Redis deploy that answers but will not serve fintask stops a process at start, in one line
naming ``REDIS_URL`` and the cause (``app.redis_access``), never a traceback: no sentinel
answers, the sentinels monitor no such master, the server's certificate does not verify, the
ACL user lacks a command of its process type. Passwords are never shown.

Two cases run real processes (a scheduler, a ``dramatiq`` worker), which print the line and
exit with status 4 as for any bad setting; the other two check the same function in this
process, against real servers: a process start costs seconds of the suite's budget."""

from __future__ import annotations

import shutil

import pytest

from app.local.ports import free_port
from app.local.redis_server import RedisServer
from app.redis_access import check_redis_access
from app.settings import CONFIGURATION_ERROR_EXIT, PROJECT_ROOT, SettingsError
from tests.support.processes import VENV_BIN, dramatiq_worker, run_to_exit
from tests.support.redis_servers import RedisNode, SentinelServer, make_tls_files

pytestmark = pytest.mark.integration

PASSWORD = "deploy-error-password"
SCHEDULER = [str(VENV_BIN / "python"), "-m", "scheduler"]
WORKER = [str(VENV_BIN / "fintask"), "process", "worker", "--", *dramatiq_worker(threads=1)]


def the_error(status: int, output: str) -> str:
    """The one configuration error line a stopped process printed (once per process)."""
    assert status == CONFIGURATION_ERROR_EXIT, output
    assert "Traceback" not in output
    assert PASSWORD not in output
    errors = {line for line in output.splitlines() if "configuration error:" in line}
    assert len(errors) == 1, output
    return errors.pop()


def test_a_sentinel_url_naming_no_reachable_sentinel_stops_the_scheduler(tmp_path):
    ports = free_port(), free_port()
    url = f"redis+sentinel://:{PASSWORD}@127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}/mymaster/0"

    error = the_error(*run_to_exit(SCHEDULER, REDIS_URL=url))

    assert error.startswith(
        f"configuration error: REDIS_URL='redis+sentinel://***@127.0.0.1:{ports[0]},"
        f"127.0.0.1:{ports[1]}/mymaster/0': no sentinel answered (127.0.0.1:{ports[0]}: "
    ), error


def test_a_master_name_the_sentinels_do_not_monitor_is_refused(tmp_path):
    with RedisServer(data_dir=tmp_path / "redis", persistent=False) as master:
        assert master.port is not None
        with SentinelServer(directory=tmp_path / "sentinel", master_port=master.port) as sentinel:
            url = f"redis+sentinel://:{PASSWORD}@127.0.0.1:{sentinel.port}/mymastr/0"

            with pytest.raises(SettingsError) as refused:
                check_redis_access(url, process_type="worker")
            shown = f"redis+sentinel://***@127.0.0.1:{sentinel.port}/mymastr/0"

    assert str(refused.value) == (
        f"REDIS_URL='{shown}': no sentinel monitors a master named 'mymastr' "
        "(they monitor: mymaster)"
    )


def test_a_server_certificate_that_does_not_verify_is_refused(tmp_path):
    served = make_tls_files(tmp_path / "server-ca")
    other_ca = make_tls_files(tmp_path / "other-ca").ca_cert
    with RedisNode(data_dir=tmp_path / "redis", tls=served) as node:
        url = f"rediss://:{PASSWORD}@127.0.0.1:{node.port}/0?ssl_ca_certs={other_ca}"

        with pytest.raises(SettingsError) as refused:
            check_redis_access(url, process_type="scheduler")
        shown = f"rediss://***@127.0.0.1:{node.port}/0?ssl_ca_certs={other_ca}"

    error = str(refused.value)
    assert error.startswith(f"REDIS_URL='{shown}': ")
    assert "the server's certificate did not verify" in error
    assert "CERTIFICATE_VERIFY_FAILED" in error
    assert PASSWORD not in error and "\n" not in error


def test_an_acl_user_lacking_a_command_of_its_process_type_stops_a_worker(tmp_path):
    acl_file = tmp_path / "redis-users.acl"
    shutil.copy(PROJECT_ROOT / "ops" / "redis-users.acl", acl_file)
    with RedisNode(data_dir=tmp_path / "redis", acl_file=acl_file) as node:
        port = node.port
        admin = node.client()
        # An ACL file from before the wake-up lists: the worker may not block on them
        admin.execute_command("ACL", "SETUSER", "fintask-worker", f">{PASSWORD}", "-blpop")
        admin.close()
        url = f"redis://fintask-worker:{PASSWORD}@127.0.0.1:{port}/0"

        error = the_error(*run_to_exit(WORKER, REDIS_URL=url))

    assert error == (
        f"configuration error: REDIS_URL='redis://***@127.0.0.1:{port}/0': Redis user "
        "'fintask-worker' may not run BLPOP, which the worker process needs (This user has no "
        "permissions to run the 'blpop' command); ops/redis-users.acl has the rights of each "
        "process type"
    )
