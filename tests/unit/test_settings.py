"""Settings: a wrong environment variable fails fast with an error that names it."""

from __future__ import annotations

import pytest

from app.settings import SettingsError, load_settings


def test_defaults_give_sqlite_under_var_and_no_redis(tmp_path):
    settings = load_settings({"FINTASK_VAR_DIR": str(tmp_path)})

    assert settings.database_url == f"sqlite:///{tmp_path / 'fintask.db'}"
    assert settings.redis_url is None
    assert settings.metrics_ports == {"worker": 9191, "worker_urgent": 9192}


def test_heroku_style_postgres_url_gets_the_psycopg_driver():
    settings = load_settings({"DATABASE_URL": "postgres://u:p@db.internal:5432/fintask"})

    assert settings.database_url == "postgresql+psycopg://u:p@db.internal:5432/fintask"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("REDIS_URL", "http://localhost:6379", "REDIS_URL='http://localhost:6379': the scheme"),
        ("REDIS_URL", "redis://", "REDIS_URL='redis://': the URL names no host"),
        ("SMTP_URL", "mail.example.com:25", "SMTP_URL='mail.example.com:25': the scheme"),
        ("METRICS_PORT_WORKER", "ninety", "METRICS_PORT_WORKER='ninety': expected a whole number"),
        ("METRICS_PORT_WORKER_URGENT", "70000", "METRICS_PORT_WORKER_URGENT=70000: expected"),
        ("WORKER_MAX_MEMORY_MB", "8", "WORKER_MAX_MEMORY_MB=8: expected a number from 32"),
    ],
)
def test_a_bad_value_names_the_variable_and_what_is_expected(variable, value, message):
    with pytest.raises(SettingsError) as error:
        load_settings({variable: value})

    assert str(error.value).startswith(message)


def test_a_bad_database_url_does_not_leak_its_password():
    with pytest.raises(SettingsError) as error:
        load_settings({"DATABASE_URL": "mysql://admin:hunter2@db/fintask"})

    assert "hunter2" not in str(error.value)
    assert "DATABASE_URL='mysql://admin:***@db/fintask'" in str(error.value)
