"""A private ``redis-server`` that fintask starts, owns and stops.

With no ``REDIS_URL``, fintask runs its own Redis on a free loopback port, with its data under
``var/``. It never reuses a server it did not start: after launch it asks the server for its
``process_id`` and accepts the port only if that is the pid of the child it spawned.

Given a password, the server requires it (``requirepass``), as a production Redis should: the
password reaches the server on its stdin, never its command line, which ``ps`` shows to anyone.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

import redis

from app.local.ports import free_port

logger = logging.getLogger(__name__)


class RedisServerError(RuntimeError):
    """redis-server is missing, or could not be started on a port of its own."""


class RedisServer:
    """A ``redis-server`` child process bound to 127.0.0.1 on a free port."""

    def __init__(
        self,
        *,
        data_dir: Path,
        persistent: bool = True,
        attempts: int = 5,
        password: str | None = None,
    ) -> None:
        """``password``, if given, is one word (no blanks or quotes: a line of Redis's config)."""
        if password is not None and (not password or any(c in "\"' \t\n\\" for c in password)):
            raise ValueError("a Redis password for requirepass is one word without quotes")
        self.data_dir = data_dir
        self.persistent = persistent
        self.attempts = attempts
        self.password = password
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The ``redis://`` URL of the running server, its password included."""
        if self.port is None:
            raise RedisServerError("the Redis server is not running")
        credentials = "" if self.password is None else f":{quote(self.password, safe='')}@"
        return f"redis://{credentials}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start the server and return once it answers as our own child; retry on a lost port."""
        executable = shutil.which("redis-server")
        if executable is None:
            raise RedisServerError(
                "redis-server is not installed: run `make install` (apt-get install redis-server)"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(self.attempts):
            port = self._pick_port()
            process = subprocess.Popen(
                [executable, "-", *self._arguments(port)],  # "-": the config's start on stdin
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                # Out of the terminal's process group: Ctrl-C stops what runs on this Redis
                # first (``fintask run``, ``fintask demo --keep``), then ``stop`` stops it.
                start_new_session=True,
            )
            self._write_config(process)
            if self._owns_port(process, port):
                self.port, self.process = port, process
                logger.info("Started redis-server pid %d on port %d", process.pid, port)
                return self
            _terminate(process)
        raise RedisServerError(f"redis-server could not bind a free port in {self.attempts} tries")

    def stop(self) -> None:
        """Stop the server (it saves its append-only file on the way out)."""
        if self.process is not None:
            _terminate(self.process)
            logger.info("Stopped redis-server pid %d", self.process.pid)
        self.process = self.port = None

    def _arguments(self, port: int) -> list[str]:
        persistence = ["--appendonly", "yes"] if self.persistent else ["--appendonly", "no"]
        return [
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--save", "",
            *persistence,
            "--daemonize", "no",
            "--logfile", str(self.data_dir / "redis.log"),
        ]  # fmt: skip

    def _write_config(self, process: subprocess.Popen[bytes]) -> None:
        """Hand the server its password on stdin, then close it: the config is complete."""
        assert process.stdin is not None
        if self.password is not None:
            process.stdin.write(f"requirepass {self.password}\n".encode())
        process.stdin.close()

    def _owns_port(
        self, process: subprocess.Popen[bytes], port: int, timeout_s: float = 10.0
    ) -> bool:
        client = self._client(port)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline and process.poll() is None:
                try:
                    return int(client.info("server")["process_id"]) == process.pid
                except redis.ConnectionError:
                    time.sleep(0.02)
            return False
        finally:
            client.close()

    def _pick_port(self) -> int:
        """The port to try next: any free one."""
        return free_port()

    def _client(self, port: int) -> redis.Redis:
        """A client of the server on ``port``, to ask it whose it is."""
        return redis.Redis(host="127.0.0.1", port=port, password=self.password, socket_timeout=1)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _terminate(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
