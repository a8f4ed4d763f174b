"""No output of fintask shows a password, an API token or a Sentry DSN's key (docs/security.md).

Every secret here is a distinctive string, so a search for it finds it wherever it went. The
tests drive what an operator reads: the one line of a process stopped by a bad setting (web as
the Procfile starts it, a Dramatiq worker, the scheduler, a ``fintask`` command), the one line
of a command that meets Redis refusing its password, Redis or the database not answering; and
a whole ``fintask run`` (web, a worker, the scheduler) on a Redis that requires a password, a
PostgreSQL URL with one and a Sentry DSN with a key and a secret: the lines it prints, every
process's log and every file it leaves, ``fintask ping`` through it, ``/healthz``, the metrics,
the API's 401s, 400s and 422s, the console's sign-in refusal and pages, then the web's answers
and logs once the database and Redis are gone. Each output is checked to say what happened, so
that no test passes on an empty or unrelated output.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest

from app.local.ports import free_port
from app.local.redis_server import RedisServer
from app.local.supervisor import procfile_commands
from app.settings import CONFIGURATION_ERROR_EXIT
from tests.support.console import csrf_of
from tests.support.postgres import PostgresServer
from tests.support.processes import (
    VENV_BIN,
    dramatiq_worker,
    fintask_env,
    run_to_exit,
    running,
    wait_until,
)

pytestmark = pytest.mark.integration

REDIS_PASSWORD = "redispw-K7qXv2"
WRONG_REDIS_PASSWORD = "wrongpw-Z4rQ9n"
DATABASE_PASSWORD = "dbpw-Hs8Nc3Rf"
SENTRY_KEY = "sentrykey-0c4fA9"
SENTRY_SECRET = "sentrysecret-9a2dB7"
#: A token sent where fintask never reads one, a query string (as OAuth's bearer-in-query does).
PASTED_TOKEN = "ft_pasted-Yb3kW8"
#: A mistyped value: no answer repeats what it refuses (it might have been a secret).
MISTYPED = "mistyped-Qz8Lr5"
SECRETS = (
    REDIS_PASSWORD,
    WRONG_REDIS_PASSWORD,
    DATABASE_PASSWORD,
    SENTRY_KEY,
    SENTRY_SECRET,
    PASTED_TOKEN,
)

FINTASK = str(VENV_BIN / "fintask")
#: How long the stack may take to answer: gunicorn listens before its workers have imported
#: the app, and a loaded 2-core machine takes tens of seconds (as in test_web_process).
BOOT_S = 120


def assert_no_secret(
    outputs: Mapping[str, str | bytes], secrets: tuple[str, ...] = SECRETS
) -> None:
    """None of ``secrets`` in any of ``outputs`` (named for the failure message)."""
    for where, output in outputs.items():
        data = output.encode() if isinstance(output, str) else output
        for secret in secrets:
            at = data.find(secret.encode())
            assert at < 0, f"{where} shows a secret: {data[max(at - 120, 0) : at + 60]!r}"


@pytest.mark.parametrize(
    ("command", "env", "error"),
    [
        pytest.param(
            ["bash", "-c", procfile_commands()["web"]],
            {
                "REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:notaport/0",
                "PORT": "0",
                "HOST": "127.0.0.1",
            },
            "REDIS_URL='redis://***@127.0.0.1:notaport/0': the port must be a whole number "
            "from 1 to 65535",
            id="web",
        ),
        pytest.param(
            dramatiq_worker(processes=1, threads=1),
            {"SENTRY_DSN": f"https://{SENTRY_KEY}@127.0.0.1:9/project"},
            "SENTRY_DSN='https://***@127.0.0.1:9/project': the DSN does not end in a project id "
            "(https://KEY@HOST/PROJECT_ID)",
            id="worker",
        ),
        pytest.param(
            [str(VENV_BIN / "python"), "-m", "scheduler"],
            {"REDIS_URL": REDIS_PASSWORD},  # the password alone, where its URL belongs
            "REDIS_URL='***': the scheme must be one of redis://, redis+sentinel://, rediss://, "
            "rediss+sentinel://, unix://",
            id="scheduler",
        ),
        pytest.param(
            [FINTASK, "migrate"],
            {
                "DATABASE_URL": f"postgresql://fintask:{DATABASE_PASSWORD}@db.internal:5x32/fin",
                "SENTRY_DSN": f"http://{SENTRY_KEY}:{SENTRY_SECRET}@127.0.0.1:0/1",
            },
            "DATABASE_URL='postgresql://***@db.internal:5x32/fin': the port must be a whole "
            "number from 1 to 65535; SENTRY_DSN='http://***@127.0.0.1:0/1': the port must be a "
            "whole number from 1 to 65535",
            id="cli",
        ),
    ],
)
def test_a_process_stopped_by_a_bad_setting_names_it_without_its_secret(command, env, error):
    status, output = run_to_exit(command, **env)

    assert status == CONFIGURATION_ERROR_EXIT, output
    errors = {line for line in output.splitlines() if "configuration error:" in line}
    assert errors == {f"configuration error: {error}"}, output
    assert_no_secret({"the output": output})


@pytest.fixture
def password_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test that requires ``REDIS_PASSWORD``, as a production one does."""
    with RedisServer(
        data_dir=tmp_path / "redis", persistent=False, password=REDIS_PASSWORD
    ) as server:
        yield server


def test_a_wrong_redis_password_is_one_line_that_says_so_without_the_password(password_redis):
    url = f"redis://:{WRONG_REDIS_PASSWORD}@127.0.0.1:{password_redis.port}/0"

    status, output = run_to_exit([FINTASK, "queues"], REDIS_URL=url)

    assert status == 1
    assert output.splitlines() == [
        "Error: Redis refused fintask (invalid username-password pair or user is disabled.): "
        "check the password (and user) in REDIS_URL, redis://USER:PASSWORD@HOST:PORT/DB"
    ]
    assert_no_secret({"fintask queues": output})


def test_redis_not_answering_is_one_line_naming_the_address_not_the_password():
    port = free_port()
    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0"

    status, output = run_to_exit([FINTASK, "queues"], REDIS_URL=url)

    assert status == 1
    assert output.startswith(
        f"Error: Redis did not answer (Error 111 connecting to 127.0.0.1:{port}."
    )
    assert_no_secret({"fintask queues": output})


def test_a_database_not_answering_is_one_line_naming_the_address_not_the_password():
    port = free_port()
    url = f"postgresql://fintask:{DATABASE_PASSWORD}@127.0.0.1:{port}/fintask"

    status, output = run_to_exit([FINTASK, "tokens", "list"], DATABASE_URL=url)

    assert status == 1
    assert output.splitlines() == [
        "Error: the database is unavailable (OperationalError: connection failed: connection to "
        f'server at "127.0.0.1", port {port} failed: Connection refused)'
    ]
    assert_no_secret({"fintask tokens list": output})


def test_a_running_fintask_shows_no_secret_in_its_lines_logs_metrics_or_pages(tmp_path):
    postgres = PostgresServer().start()  # its own: it is stopped below, for the outage
    redis_server = RedisServer(
        data_dir=tmp_path / "redis", persistent=False, password=REDIS_PASSWORD
    ).start()
    try:
        database_url = postgres.create_database("fintask").replace(
            "postgres@", f"postgres:{DATABASE_PASSWORD}@", 1
        )
        outputs, token = _drive_a_run(tmp_path, redis_server, postgres, database_url)
    finally:
        redis_server.stop()
        postgres.stop()

    # Every file the run left (each process's metrics files, Redis's log) is output too.
    for path in sorted(p for p in tmp_path.rglob("*") if p.is_file()):
        outputs[str(path.relative_to(tmp_path))] = path.read_bytes()
    assert_no_secret(outputs, (*SECRETS, token))


def _drive_a_run(
    tmp_path: Path, redis_server: RedisServer, postgres: PostgresServer, database_url: str
) -> tuple[dict[str, str | bytes], str]:
    """Start ``fintask run`` on the secrets, read every output, stop the database and Redis
    and read them again; every output by name, and the API token made on the way."""
    var_dir = tmp_path / "var"
    web = f"http://127.0.0.1:{free_port()}"
    env = {
        "FINTASK_VAR_DIR": str(var_dir),
        "WEB_PORT": web.rsplit(":", 1)[1],
        "REDIS_URL": redis_server.url,
        "DATABASE_URL": database_url,
        # Nothing listens there: what the SDK does with a DSN it cannot reach is output too.
        "SENTRY_DSN": f"http://{SENTRY_KEY}:{SENTRY_SECRET}@127.0.0.1:{free_port()}/1",
    }
    shown_redis_url = f"redis://***@127.0.0.1:{redis_server.port}/0"
    run_log = tmp_path / "run.log"
    outputs: dict[str, str | bytes] = {}
    command = [FINTASK, "run", "web", "worker", "scheduler"]
    with running(command, fintask_env(**env), run_log), httpx.Client(base_url=web) as http:
        wait_until(lambda: _status(http, "/healthz") == 200, timeout_s=BOOT_S, what="web")
        run_file = var_dir / "run.json"
        # The run file gives a second shell the URL, password included: for its owner only.
        assert stat.S_IMODE(run_file.stat().st_mode) == 0o600
        wait_until(
            lambda: "waking at each minute" in run_log.read_text(),
            timeout_s=BOOT_S,
            what="the scheduler",
        )
        status, outputs["fintask ping"] = run_to_exit([FINTASK, "ping", "--timeout", "60"], **env)
        assert status == 0 and "pong from" in outputs["fintask ping"], outputs["fintask ping"]
        status, created = run_to_exit(
            [FINTASK, "tokens", "create", "--name", "probe", "--role", "viewer"], **env
        )
        assert status == 0, created
        token = created.splitlines()[0]
        assert token.startswith("ft_"), created  # shown once, here: not part of ``outputs``

        outputs["GET /healthz"] = _answer(http.get("/healthz"), 200, '"redis":"ok"')
        outputs["GET /metrics"] = _answer(http.get("/metrics"), 200, "fintask_queue_messages{")
        # The worker's metrics are read from the files its exposition serves (and grepped with
        # every file below): the server itself starts only if the worker's processes boot within
        # Dramatiq's --worker-fork-timeout, which a loaded machine may exceed.
        worker_metrics = b"".join(p.read_bytes() for p in (var_dir / "prometheus").rglob("*.db"))
        assert b'"actor_name": "ping"' in worker_metrics, "the worker counted the ping it ran"
        outputs["API, no token"] = _answer(http.get("/api/queues"), 401, "needs an API token")
        outputs["API, token in the query"] = _answer(
            http.get("/api/queues", params={"access_token": PASTED_TOKEN}),
            401,
            "needs an API token",
        )
        wrong = {"Authorization": "Bearer ft_not-a-token"}
        outputs["API, wrong token"] = _answer(
            http.get("/api/queues", headers=wrong), 401, "the API token is not valid"
        )
        bearer = {"Authorization": f"Bearer {token}"}
        outputs["API"] = _answer(http.get("/api/queues", headers=bearer), 200, "urgent_notif")
        for params, status, says in (
            ({"cursor": MISTYPED}, 400, "the cursor is not one this list handed out"),
            ({"limit": MISTYPED}, 422, "query parameter limit: Input should be a valid integer"),
        ):
            answer = http.get("/api/audit", params=params, headers=bearer)
            assert MISTYPED not in answer.text, answer.text
            outputs[f"API, {status}"] = _answer(answer, status, says)
        outputs |= _console(http, token)

        postgres.stop()
        redis_server.stop()
        outputs["GET /healthz, outage"] = _answer(
            http.get("/healthz"),
            503,
            '{"status":"unavailable","database":"error: OperationalError",'
            '"redis":"error: ConnectionError"}',
        )
        outputs["GET /metrics, outage"] = _answer(
            http.get("/metrics"), 200, 'fintask_metrics_source_up{source="broker"} 0.0'
        )
        outputs["API, outage"] = _answer(
            http.get("/api/queues", headers=bearer), 503, "the database is unavailable"
        )
        wait_until(
            lambda: "broker metrics unavailable: Error 111" in run_log.read_text(),
            what="web to log the outage",
        )
    printed = run_log.read_text()
    assert f"  {'redis':<14}  {shown_redis_url}\n" in printed, "fintask run's list of its URLs"
    assert '"GET /api/queues?access_token=*** HTTP/1.1" 401' in printed, "the access log"
    outputs["fintask run's output"] = printed
    return outputs, token


def _console(http: httpx.Client, token: str) -> dict[str, str | bytes]:
    """The console's sign-in refused a wrong token, then the pages of a signed-in viewer."""
    form = http.get("/console/sign-in")
    refused = http.post(
        "/console/sign-in",
        data={"token": "ft_not-a-token", "csrf_token": csrf_of(form.text), "next": "/console"},
    )
    signed_in = http.post(
        "/console/sign-in",
        data={"token": token, "csrf_token": csrf_of(http.get("/console/sign-in").text)},
    )
    assert signed_in.status_code == 303, signed_in.text
    return {
        "console sign-in refused": _answer(refused, 401, "that token is not valid"),
        "console overview": _answer(http.get("/console"), 200, "urgent_notifications"),
        "console workers": _answer(http.get("/console/workers"), 200, "badge alive"),
        "console audit": _answer(http.get("/console/audit"), 200, "token.create"),
    }


def _answer(response: httpx.Response, status: int, says: str) -> str:
    """``response``'s headers and body, once it is the answer expected: ``status``, saying
    ``says`` (so that a check for secrets never passes on an empty or unrelated answer)."""
    assert (response.status_code, says in response.text) == (status, True), response.text
    headers = "\n".join(f"{name}: {value}" for name, value in response.headers.items())
    return f"{headers}\n\n{response.text}"


def _status(http: httpx.Client, url: str) -> int | None:
    try:
        return http.get(url, timeout=5).status_code
    except httpx.HTTPError:
        return None
