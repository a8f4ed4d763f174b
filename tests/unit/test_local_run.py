"""`fintask run` refuses what it cannot run before it starts anything, and says where it runs."""

from __future__ import annotations

import json
import os
import stat

import pytest
from click.testing import CliRunner

from app.blob_crypto import new_key_entry
from app.cli import local
from app.cli.main import main
from app.local import supervisor
from app.local.run_file import RunFile, published
from app.settings import RUN_FILE_NAME, load_settings


@pytest.fixture
def nothing_may_start(monkeypatch):
    """Fail the test if `fintask run` starts a Redis or migrates."""

    def started(*args, **kwargs):
        raise AssertionError("fintask run started something")

    monkeypatch.setattr(supervisor.RedisServer, "start", started)
    monkeypatch.setattr(local, "upgrade", started)
    monkeypatch.setattr(local, "run_processes", started)


@pytest.mark.usefixtures("nothing_may_start")
@pytest.mark.parametrize("names", [["bogus"], ["web", "bogus", "wrker"], ["release"]])
def test_an_unknown_process_type_is_a_usage_error_before_anything_starts(tmp_path, names):
    result = CliRunner().invoke(main, ["run", *names], env={"FINTASK_VAR_DIR": str(tmp_path)})

    assert result.exit_code == 2, result.output
    unknown = ", ".join(repr(name) for name in names if name != "web")
    assert f"unknown process type {unknown}; the Procfile's are web, worker_urgent, worker," in (
        result.output
    )
    assert "release" not in result.output.split("the Procfile's are")[1]
    assert list(tmp_path.iterdir()) == [], "no Redis data, no database, no run file"


@pytest.mark.usefixtures("nothing_may_start")
def test_a_second_run_of_the_same_var_dir_is_refused(tmp_path):
    (tmp_path / RUN_FILE_NAME).write_text(
        json.dumps({"pid": os.getpid(), "redis_url": "redis://127.0.0.1:41234/0"})
    )

    result = CliRunner().invoke(main, ["run", "web"], env={"FINTASK_VAR_DIR": str(tmp_path)})

    assert result.exit_code == 1
    assert f"fintask run (pid {os.getpid()}) is already running from {tmp_path}" in result.output


def test_the_run_file_names_each_server_and_hides_a_redis_password(tmp_path):
    settings = load_settings({"FINTASK_VAR_DIR": str(tmp_path)})
    names = ["web", "worker", "scheduler"]
    env = supervisor.shared_environment(settings, {"REDIS_URL": "redis://:s3cret@h:6379/0"}, names)

    run = RunFile.of(names, env)

    assert run.pid == os.getpid()
    assert run.web_url == f"http://127.0.0.1:{env['WEB_PORT']}"
    assert run.metrics_urls == {
        "worker": f"http://127.0.0.1:{env['METRICS_PORT_WORKER']}/metrics"
    }, "only the worker types it runs"
    assert run.lines() == [
        "redis           redis://***@h:6379/0",
        f"web             {run.web_url}",
        f"worker metrics  {run.metrics_urls['worker']}",
    ]


def test_a_local_run_makes_its_blob_key_once_for_its_owner_only(tmp_path):
    settings = load_settings({"FINTASK_VAR_DIR": str(tmp_path)})

    first = supervisor.shared_environment(settings, {})["BLOB_KEYS"]

    # The next run from the same var dir decrypts what this one encrypted: the same key.
    assert supervisor.shared_environment(settings, {})["BLOB_KEYS"] == first
    assert load_settings({"BLOB_KEYS": first}).blob_keyring().ids == ("local",)
    path = tmp_path / supervisor.LOCAL_BLOB_KEYS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_local_run_passes_the_blob_keys_it_is_given_on_and_makes_none(tmp_path):
    given = new_key_entry("k1")
    settings = load_settings({"FINTASK_VAR_DIR": str(tmp_path), "BLOB_KEYS": given})

    assert supervisor.shared_environment(settings, {"BLOB_KEYS": given})["BLOB_KEYS"] == given
    assert not (tmp_path / supervisor.LOCAL_BLOB_KEYS_FILE).exists()


def test_the_run_file_is_there_while_it_runs_for_its_owner_only(tmp_path):
    run = RunFile(pid=os.getpid(), redis_url="redis://127.0.0.1:41234/0")
    var_dir = tmp_path / "var"

    with published(run, var_dir) as path:
        assert json.loads(path.read_text())["redis_url"] == run.redis_url
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert load_settings({"FINTASK_VAR_DIR": str(var_dir)}).redis_url == run.redis_url

    assert list(var_dir.iterdir()) == []
    assert load_settings({"FINTASK_VAR_DIR": str(var_dir)}).redis_url is None
