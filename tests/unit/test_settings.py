"""Settings: a wrong environment variable fails fast, in one line that names it, no password."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from app.settings import (
    CONFIGURATION_ERROR_EXIT,
    RUN_FILE_NAME,
    SettingsError,
    exit_on_settings_error,
    load_settings,
)

PASSWORD = "hunter2"


def test_defaults_give_sqlite_under_var_and_no_redis(tmp_path):
    settings = load_settings({"FINTASK_VAR_DIR": str(tmp_path)})

    assert settings.database_url == f"sqlite:///{tmp_path / 'fintask.db'}"
    assert settings.redis_url is None
    assert settings.metrics_ports == {"worker": 9191, "worker_urgent": 9192}
    assert settings.metrics_host == "0.0.0.0"
    assert settings.log_format == "text"
    assert settings.refresh_deadline_s == 300


def test_heroku_style_postgres_url_gets_the_psycopg_driver():
    settings = load_settings({"DATABASE_URL": "postgres://u:p@db.internal:5432/fintask"})

    assert settings.database_url == "postgresql+psycopg://u:p@db.internal:5432/fintask"


def test_values_are_stripped_and_a_blank_variable_counts_as_unset(tmp_path):
    settings = load_settings(
        {
            "FINTASK_VAR_DIR": str(tmp_path),  # no `fintask run` there whose Redis it would find
            "REDIS_URL": "  ",
            "LOG_FORMAT": " JSON ",
            "REFRESH_DEADLINE_S": "2.5",
            "SMTP_URL": "",
        }
    )

    assert settings.redis_url is None
    assert settings.log_format == "json"
    assert settings.refresh_deadline_s == 2.5
    assert settings.smtp_url == "smtp://127.0.0.1:1025"


def test_a_given_environment_stands_alone_and_the_default_is_the_process_one(monkeypatch):
    monkeypatch.setenv("LOG_FORMAT", "json")

    assert load_settings({}).log_format == "text"
    assert load_settings().log_format == "json"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("REDIS_URL", "http://localhost:6379", "REDIS_URL='http://localhost:6379': the scheme"),
        ("REDIS_URL", "redis://", "REDIS_URL='redis://': the URL names no host"),
        (
            "REDIS_URL",
            "redis://localhost:notaport/0",
            "REDIS_URL='redis://localhost:notaport/0': the port must be a whole number",
        ),
        (
            "REDIS_URL",
            "redis://localhost:6379/zero",
            "REDIS_URL='redis://localhost:6379/zero': the database must be a whole number",
        ),
        ("REDIS_URL", "unix:///tmp/redis.sock?db=one", "REDIS_URL='unix:///tmp/redis.sock?db=one'"),
        ("DATABASE_URL", "postgresql://db:5x32/fintask", "DATABASE_URL='postgresql://db:5x32/fin"),
        ("SENTRY_DSN", "https://o1.ingest.sentry.io/1", "SENTRY_DSN='https://o1.ingest.sentry"),
        # No URL at all in a secret's variable may be the secret alone: not shown.
        ("SMTP_URL", "mail.example.com:25", "SMTP_URL='***': the scheme must be one of smtp://"),
        ("PROVIDER_URL", "http://bank:99999", "PROVIDER_URL='http://bank:99999': the port"),
        ("METRICS_PORT_WORKER", "ninety", "METRICS_PORT_WORKER='ninety': expected a whole number"),
        (
            "METRICS_PORT_WORKER_URGENT",
            "70000",
            "METRICS_PORT_WORKER_URGENT='70000': expected a whole number from 1 to 65535",
        ),
        ("SMTP_MAX_SENDS", "0", "SMTP_MAX_SENDS='0': expected a whole number from 1 to"),
        ("SMTP_MAX_IDLE_S", "-1", "SMTP_MAX_IDLE_S='-1': expected a number from 0 to"),
        ("WORKER_MAX_MEMORY_MB", "8", "WORKER_MAX_MEMORY_MB='8': expected a whole number from 32"),
        ("REFRESH_DEADLINE_S", "abc", "REFRESH_DEADLINE_S='abc': expected a number from 1 to"),
        ("REFRESH_DEADLINE_S", "nan", "REFRESH_DEADLINE_S='nan': expected a number from 1 to"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT='xml': expected one of text, json"),
        (
            "dramatiq_queue_prefetch",
            "abc",
            "dramatiq_queue_prefetch='abc': expected a whole number from 0 to 65535",
        ),
    ],
)
def test_a_bad_value_names_the_variable_and_what_is_expected(variable, value, message):
    with pytest.raises(SettingsError) as error:
        load_settings({variable: value})

    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_a_var_dir_that_cannot_be_a_directory_is_refused(tmp_path):
    (tmp_path / "file").write_text("")

    with pytest.raises(SettingsError) as error:
        load_settings({"FINTASK_VAR_DIR": str(tmp_path / "file" / "var")})

    assert str(error.value).startswith(f"FINTASK_VAR_DIR='{tmp_path / 'file' / 'var'}'")
    assert f"{tmp_path / 'file'} is a file" in str(error.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to a read-only directory")
def test_a_var_dir_fintask_cannot_write_to_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)

    with pytest.raises(SettingsError, match=r"FINTASK_VAR_DIR=.*is not writable"):
        load_settings({"FINTASK_VAR_DIR": str(locked / "var")})


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("REDIS_URL", f"redis://:{PASSWORD}@localhost:notaport/0"),
        ("REDIS_URL", f"redis://fintask:{PASSWORD}@localhost:6379/zero"),
        ("REDIS_URL", f"rediss://fintask:hun@{PASSWORD}@[::1/0"),
        ("REDIS_URL", f"unix:///tmp/redis.sock?db=x&password={PASSWORD}"),
        ("DATABASE_URL", f"mysql://admin:{PASSWORD}@db/fintask"),
        ("DATABASE_URL", f"postgres://admin:{PASSWORD}@db:5x32/fintask"),
        ("SENTRY_DSN", f"https://key:{PASSWORD}@o1.ingest.sentry.io/project"),
        # A DSN's key is what lets anyone send events to the project: hidden as a password.
        ("SENTRY_DSN", f"https://{PASSWORD}@o1.ingest.sentry.io/project"),
        ("SMTP_URL", f"smtp://mailer:{PASSWORD}@mail.example.com:smtp"),
        # A secret pasted alone where its URL belongs.
        ("REDIS_URL", PASSWORD),
        ("SENTRY_DSN", PASSWORD),
        ("PUSH_URL", f"https://push.example.com:x/send?api_key={PASSWORD}"),
    ],
)
def test_a_bad_url_is_named_without_its_password(variable, value):
    with pytest.raises(SettingsError) as error:
        load_settings({variable: value})

    assert str(error.value).startswith(f"{variable}=")
    assert PASSWORD not in str(error.value)
    assert "\n" not in str(error.value)


def test_a_bad_database_url_shows_where_the_credentials_were():
    with pytest.raises(SettingsError) as error:
        load_settings({"DATABASE_URL": f"mysql://admin:{PASSWORD}@db/fintask"})

    assert "DATABASE_URL='mysql://***@db/fintask'" in str(error.value)


def test_a_secret_variable_that_is_no_url_is_not_shown_at_all():
    with pytest.raises(SettingsError) as error:
        load_settings({"SENTRY_DSN": PASSWORD})

    assert str(error.value) == "SENTRY_DSN='***': the scheme must be one of http://, https://"


def test_every_bad_variable_is_named_in_one_line():
    with pytest.raises(SettingsError) as error:
        load_settings({"LOG_FORMAT": "xml", "REDIS_URL": f"redis://:{PASSWORD}@h:x/0"})

    line = str(error.value)
    assert "\n" not in line
    assert "LOG_FORMAT='xml'" in line
    assert "REDIS_URL='redis://***@h:x/0'" in line
    assert PASSWORD not in line


def test_the_settings_never_show_a_password_though_clients_get_the_url():
    settings = load_settings(
        {
            "REDIS_URL": f"redis://:{PASSWORD}@redis.internal:6379/0",
            "DATABASE_URL": f"postgresql://fintask:{PASSWORD}@db.internal/fintask",
            "SENTRY_DSN": f"https://key:{PASSWORD}@o1.ingest.sentry.io/1",
            "SMTP_URL": f"smtps://mailer:{PASSWORD}@mail.example.com:465",
        }
    )

    assert PASSWORD not in repr(settings)
    assert PASSWORD not in str(settings.model_dump())
    assert settings.redis_url == f"redis://:{PASSWORD}@redis.internal:6379/0"
    assert settings.database_url == f"postgresql+psycopg://fintask:{PASSWORD}@db.internal/fintask"


def test_an_entry_point_stopped_by_a_bad_setting_prints_one_line_and_exits(capsys):
    @exit_on_settings_error
    def entry_point() -> None:
        load_settings({"LOG_FORMAT": "xml"})

    with pytest.raises(SystemExit) as stopped:
        entry_point()

    assert stopped.value.code == CONFIGURATION_ERROR_EXIT
    assert capsys.readouterr().err == (
        "configuration error: LOG_FORMAT='xml': expected one of text, json\n"
    )


def _run_file(var_dir, **record) -> None:
    """A run file as a running ``fintask run`` writes it."""
    (var_dir / RUN_FILE_NAME).write_text(json.dumps(record))


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_without_redis_url_the_redis_of_a_live_fintask_run_of_the_var_dir_is_used(tmp_path):
    _run_file(tmp_path, pid=os.getpid(), redis_url="redis://127.0.0.1:41234/0")

    settings = load_settings({"FINTASK_VAR_DIR": str(tmp_path), "REDIS_URL": " "})

    assert settings.redis_url == "redis://127.0.0.1:41234/0"


def test_an_explicit_redis_url_wins_over_a_running_stacks(tmp_path):
    _run_file(tmp_path, pid=os.getpid(), redis_url="redis://127.0.0.1:41234/0")

    settings = load_settings(
        {"FINTASK_VAR_DIR": str(tmp_path), "REDIS_URL": "redis://redis.internal:6379/2"}
    )

    assert settings.redis_url == "redis://redis.internal:6379/2"


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(lambda: {"pid": _dead_pid(), "redis_url": "redis://127.0.0.1:1/0"}, id="dead"),
        pytest.param(lambda: {"pid": 2**70, "redis_url": "redis://127.0.0.1:1/0"}, id="no pid"),
        pytest.param(lambda: {"pid": "1", "redis_url": "redis://127.0.0.1:1/0"}, id="a text pid"),
        pytest.param(lambda: {"pid": os.getpid(), "redis_url": "http://x"}, id="not redis"),
        pytest.param(lambda: {"pid": os.getpid()}, id="no url"),
        pytest.param(lambda: [os.getpid()], id="not an object"),
    ],
)
def test_a_stale_or_foreign_run_file_is_ignored(tmp_path, content):
    (tmp_path / RUN_FILE_NAME).write_text(json.dumps(content()))

    assert load_settings({"FINTASK_VAR_DIR": str(tmp_path)}).redis_url is None


def test_a_half_written_run_file_is_ignored(tmp_path):
    (tmp_path / RUN_FILE_NAME).write_text('{"pid": ')

    assert load_settings({"FINTASK_VAR_DIR": str(tmp_path)}).redis_url is None
