"""Every real process stopped by a bad setting says so in one line, and stops.

No Redis is started: each process must fail on its settings before it connects to anything.
"""

from __future__ import annotations

import base64
import os

import pytest

from app.local.supervisor import procfile_commands
from app.settings import CONFIGURATION_ERROR_EXIT, MISSING_BLOB_KEYS
from tests.support.processes import VENV_BIN, dramatiq_worker, run_to_exit

pytestmark = pytest.mark.integration

PASSWORD = "hunter2"
BAD_REDIS_URL = f"redis://:{PASSWORD}@localhost:notaport/0"
SHOWN_REDIS_URL = "REDIS_URL='redis://***@localhost:notaport/0': the port must be a whole number"


def configuration_errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if "configuration error:" in line]


def test_a_dramatiq_worker_stops_in_one_line_without_the_password():
    status, output = run_to_exit(dramatiq_worker(processes=2, threads=1), REDIS_URL=BAD_REDIS_URL)

    assert status == CONFIGURATION_ERROR_EXIT
    assert "Traceback" not in output
    assert PASSWORD not in output
    errors = configuration_errors(output)
    assert errors, output
    assert all(line == f"configuration error: {SHOWN_REDIS_URL} from 1 to 65535" for line in errors)


def test_gunicorn_as_the_procfile_runs_it_stops_its_master_in_one_line():
    # The Procfile's gunicorn command without ``fintask process web``, which would refuse the
    # setting before gunicorn starts: what is tested is gunicorn's own master.
    gunicorn = procfile_commands()["web"].split(" -- ", 1)[1]
    dsn = f"https://key:{PASSWORD}@o1.ingest.sentry.io/project"

    status, output = run_to_exit(
        ["bash", "-c", f"exec {gunicorn}"], SENTRY_DSN=dsn, PORT="0", HOST="127.0.0.1"
    )

    assert status == CONFIGURATION_ERROR_EXIT
    assert "Traceback" not in output
    assert PASSWORD not in output
    assert "Booting worker" not in output
    [error] = configuration_errors(output)
    assert error.startswith("configuration error: SENTRY_DSN='https://***@o1.ingest")


def test_the_scheduler_stops_in_one_line():
    status, output = run_to_exit([str(VENV_BIN / "python"), "-m", "scheduler"], LOG_FORMAT="xml")

    assert status == CONFIGURATION_ERROR_EXIT
    assert "Traceback" not in output
    assert configuration_errors(output) == [
        "configuration error: LOG_FORMAT='xml': expected one of text, json"
    ]


def test_fintask_process_refuses_a_prefetch_dramatiq_would_crash_on_before_starting_it():
    command = [str(VENV_BIN / "fintask"), "process", "worker", "--", *dramatiq_worker()]

    status, output = run_to_exit(command, dramatiq_queue_prefetch="abc")

    assert status == CONFIGURATION_ERROR_EXIT
    assert output.splitlines() == [
        "configuration error: dramatiq_queue_prefetch='abc': "
        "expected a whole number from 0 to 65535"
    ]


def test_a_fintask_command_names_the_bad_database_url_without_its_password():
    database_url = f"postgresql://fintask:{PASSWORD}@db.internal:5x32/fintask"

    status, output = run_to_exit([str(VENV_BIN / "fintask"), "migrate"], DATABASE_URL=database_url)

    assert status == CONFIGURATION_ERROR_EXIT
    assert output.splitlines() == [
        "configuration error: DATABASE_URL='postgresql://***@db.internal:5x32/"
        "fintask': the port must be a whole number from 1 to 65535"
    ]


def test_a_worker_refuses_a_malformed_blob_key_in_one_line_without_the_key():
    key = base64.b64encode(os.urandom(16)).decode()
    command = [str(VENV_BIN / "fintask"), "process", "worker", "--", *dramatiq_worker()]

    status, output = run_to_exit(command, BLOB_KEYS=f"k1:{key}")

    assert status == CONFIGURATION_ERROR_EXIT
    assert key not in output
    assert output.splitlines() == [
        "configuration error: BLOB_KEYS='**********': key 'k1' is 16 bytes; "
        "AES-256 needs 32 (openssl rand -base64 32 makes one)"
    ]


def test_a_worker_without_blob_keys_stops_in_one_line_saying_how_to_set_them():
    worker = dramatiq_worker(processes=1, threads=1)
    command = [str(VENV_BIN / "fintask"), "process", "worker", "--", *worker]

    status, output = run_to_exit(command, BLOB_KEYS="")

    assert status == CONFIGURATION_ERROR_EXIT
    assert "Traceback" not in output
    assert configuration_errors(output) == [f"configuration error: {MISSING_BLOB_KEYS}"]
