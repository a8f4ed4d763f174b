"""Gunicorn's configuration for the web process (``--config python:app.web.gunicorn_config``).

Gunicorn's master never imports the app, so without this a bad setting is found only by its
workers: each exits with "App failed to load" and the master halts. With two workers that
both fail, gunicorn 27's master can meet the second failure while it is already halting, and
dies on it with a traceback and status 1. Checking the settings in the master, before it
listens or forks, stops it in one line with ``CONFIGURATION_ERROR_EXIT`` every time.
"""

from __future__ import annotations

from typing import Any

from app.settings import exit_on_settings_error, load_settings


def on_starting(server: Any) -> None:
    """Gunicorn's hook in the master, before it binds: validate every setting there."""
    exit_on_settings_error(load_settings)()
