"""A throwaway RabbitMQ node for tests and the benchmark (``python -m bench --rabbitmq``):
Debian's ``rabbitmq-server`` on free loopback ports, with a node name, data, logs, config,
Erlang cookie (a private ``HOME``) and ``epmd`` of its own.

Nothing of the machine's is used or touched: not the default ports (5672, 25672, 4369), not a
system node or epmd, not ``/etc/rabbitmq``. The node's ``cluster_name`` is a token made for it,
which its AMQP greeting repeats: a port answered by someone else's server is never taken for
ours. Both processes are children of the process that started them, stopped by pid (RabbitMQ
takes a few seconds to stop: it flushes its queues to disk).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import suppress
from pathlib import Path
from types import TracebackType

import pika
import pika.exceptions

from app.local.ports import free_port, wait_for_port

#: Where Debian's package keeps the server script that runs as the calling user.
SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
#: RabbitMQ boots in about 8 s on an idle machine; a loaded one may take several times that.
BOOT_TIMEOUT_S = 120
USER = "fintask"


class RabbitmqUnavailable(RuntimeError):
    """Debian's rabbitmq-server (or Erlang's epmd) is not installed."""


class RabbitmqServer:
    """One RabbitMQ node listening on 127.0.0.1 only, in a temporary directory."""

    def __init__(self, *, attempts: int = 3) -> None:
        epmd = shutil.which("epmd")
        if not SERVER.exists() or epmd is None:
            raise RabbitmqUnavailable(
                "rabbitmq-server not found: run `make install` (apt-get install rabbitmq-server)"
            )
        self.epmd_executable = epmd
        self.attempts = attempts
        self.root = Path(tempfile.mkdtemp(prefix="fintask-rabbitmq-"))
        self.token = f"fintask-test-{secrets.token_hex(6)}"
        self.password = secrets.token_urlsafe(12)
        self.port = 0
        self.epmd: subprocess.Popen[bytes] | None = None
        self.server: subprocess.Popen[bytes] | None = None

    def url(self, *, password: str | None = None, vhost: str = "%2F") -> str:
        """The ``amqp://`` URL of the node (another password, to be refused, if given)."""
        return f"amqp://{USER}:{password or self.password}@127.0.0.1:{self.port}/{vhost}"

    def start(self) -> RabbitmqServer:
        """Start epmd, then the node; return once the node answers as ours."""
        for _ in range(self.attempts):
            epmd_port = free_port()
            self.epmd = self._spawn(
                [self.epmd_executable, "-port", str(epmd_port), "-address", "127.0.0.1"],
                "epmd.log",
                {},
            )
            if not self._listening(self.epmd, epmd_port):
                self._stop(self.epmd)
                continue
            self.port = free_port()
            self.server = self._spawn([str(SERVER)], "server.out", self._environment(epmd_port))
            if self._owns_port():
                return self
            self.stop()
        raise RuntimeError(f"RabbitMQ did not start on a free port:\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop the node, then its epmd (each by pid, SIGKILL if it outlives its grace)."""
        for process in (self.server, self.epmd):
            if process is not None:
                self._stop(process)
        self.server = self.epmd = None

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the node's output, for a failure's message."""
        path = self.root / "server.out"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def _environment(self, epmd_port: int) -> dict[str, str]:
        home = self.root / "home"
        home.mkdir(exist_ok=True)
        config = self.root / "rabbitmq.conf"
        config.write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            f"default_user = {USER}\n"
            f"default_pass = {self.password}\n"
            f"cluster_name = {self.token}\n"
            "loopback_users = none\n"
        )
        (self.root / "enabled_plugins").write_text("[].\n")
        (self.root / "rabbitmq-env.conf").write_text("")
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),  # its .erlang.cookie
            "ERL_EPMD_PORT": str(epmd_port),
            "RABBITMQ_NODENAME": f"{self.token}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_CONFIG_FILE": str(config),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.root / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(self.root / "rabbitmq-env.conf"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def _spawn(
        self, command: list[str], log_name: str, env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        with (self.root / log_name).open("ab") as log:
            return subprocess.Popen(
                command,
                env=env or None,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @staticmethod
    def _listening(process: subprocess.Popen[bytes], port: int) -> bool:
        """Whether ``process`` is alive and something listens on ``port`` (epmd exits at once
        when its port is taken, so a live epmd there is ours)."""
        try:
            wait_for_port(port, timeout_s=15)
        except TimeoutError:
            return False
        time.sleep(0.2)  # an epmd that lost the port exits right after the attempt
        return process.poll() is None

    def _owns_port(self) -> bool:
        """Wait for the node's AMQP port; True once its greeting names our cluster."""
        assert self.server is not None
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        parameters = pika.URLParameters(self.url())
        parameters.connection_attempts = 1
        parameters.socket_timeout = 2
        # pika logs each refused attempt as an error, with its traceback: not while booting.
        quiet = logging.getLogger("pika")
        level, quiet.level = quiet.level, logging.CRITICAL
        try:
            while time.monotonic() < deadline and self.server.poll() is None:
                try:
                    connection = pika.BlockingConnection(parameters)
                except pika.exceptions.AMQPError:
                    time.sleep(0.25)
                    continue
                try:
                    properties = connection._impl.server_properties
                    return bool(properties.get("cluster_name") == self.token)
                finally:
                    connection.close()
            return False
        finally:
            quiet.setLevel(level)

    @staticmethod
    def _stop(process: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
        """SIGTERM ``process`` (the server script stops its Erlang VM and waits for it), then
        SIGKILL its session if it is still there after ``timeout_s``."""
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout_s)
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def __enter__(self) -> RabbitmqServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
