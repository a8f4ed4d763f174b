"""A whole fintask on one machine: private Redis, migrated database, the Procfile's processes.

The demo and the end-to-end tests both run fintask this way, so what the tests prove is what
the demo shows: real ``dramatiq`` and ``periodiq`` processes, gunicorn, real HTTP.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import httpx

from app.db.migrate import upgrade
from app.local.ports import free_port
from app.local.redis_server import RedisServer
from app.local.supervisor import shared_environment
from app.settings import load_settings


class StackError(RuntimeError):
    """The processes did not come up; the message carries the tail of their log."""


class LocalStack:
    """Start Redis, migrate, run the named Procfile process types; stop it all on exit."""

    def __init__(
        self,
        *,
        var_dir: Path,
        process_types: list[str],
        extra_env: Mapping[str, str] | None = None,
        redis_url: str | None = None,
    ) -> None:
        self.var_dir = var_dir
        self.process_types = process_types
        self.extra_env = dict(extra_env or {})
        self.log_path = var_dir / "processes.log"
        self._redis_url = redis_url
        self._redis: RedisServer | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {}

    @property
    def web_url(self) -> str:
        """Where the ``web`` process answers."""
        return f"http://127.0.0.1:{self.env['WEB_PORT']}"

    def start(self, *, timeout_s: float = 120.0) -> LocalStack:
        """Start everything and return once the web process reports healthy.

        If any of it fails (the web never healthy on a loaded machine, a migration refused),
        what was started is stopped before the error goes up: a failed demo leaves no Redis
        and no process behind.
        """
        self.var_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout_s: float) -> None:
        if self._redis_url is None:
            self._redis = RedisServer(data_dir=self.var_dir / "redis").start()
        base = {
            **os.environ,
            "FINTASK_VAR_DIR": str(self.var_dir),
            "DATABASE_URL": self.extra_env.get("DATABASE_URL", ""),
            "REDIS_URL": self._redis_url or self._redis.url,  # type: ignore[union-attr]
            "WEB_PORT": str(free_port()),
            **self.extra_env,
        }
        settings = load_settings(base)
        self.env = shared_environment(settings, base, self.process_types)
        upgrade(settings.database_url)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "run", *self.process_types],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if "web" in self.process_types:
            self._wait_healthy(timeout_s)

    def _wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise StackError(f"the processes exited early:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.web_url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise StackError(f"web was not healthy within {timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        """The last lines the processes printed."""
        if not self.log_path.exists():
            return "(no output)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, *, timeout_s: float = 40.0) -> int | None:
        """SIGTERM the processes (as the platform would), wait, and stop Redis; return the code."""
        code = None
        if self._process is not None:
            # honcho forwards SIGTERM to each process's own session and SIGKILLs the ones
            # still running after the platform's grace period.
            if self._process.poll() is None:
                self._process.send_signal(signal.SIGTERM)
            try:
                code = self._process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                code = self._process.wait()
            self._process = None
        if self._redis is not None:
            self._redis.stop()
            self._redis = None
        return code

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
