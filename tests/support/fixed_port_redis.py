"""A private redis-server that keeps its port across a stop and a start, with its data on disk.

A client connected to the first server must find the second at the same address, as it would
after a restart of a production Redis; ``RedisServer`` picks a new free port at each start. The
port is picked once (``app.local.ports.free_port``) and kept; the append-only file under
``data_dir`` carries the data from one server to the next.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from app.local.ports import free_port
from app.local.redis_server import RedisServer, RedisServerError

#: A loaded machine can take a while to start redis-server and replay its append-only file.
START_TIMEOUT_S = 30.0


class FixedPortRedis(RedisServer):
    """``RedisServer`` on one port for all its starts, append-only file on."""

    def __init__(self, *, data_dir: Path, port: int | None = None) -> None:
        super().__init__(data_dir=data_dir, persistent=True, attempts=1)
        self.fixed_port = port or free_port()

    @property
    def fixed_url(self) -> str:
        """The URL of this server, whether it runs now or not."""
        return f"redis://127.0.0.1:{self.fixed_port}/0"

    def start(self) -> FixedPortRedis:
        """Start a server on the kept port; return once it answers as our own child."""
        executable = shutil.which("redis-server")
        if executable is None:
            raise RedisServerError("redis-server is not installed (apt-get install redis-server)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        process = subprocess.Popen(
            [executable, *self._arguments(self.fixed_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not self._owns_port(process, self.fixed_port, timeout_s=START_TIMEOUT_S):
            process.kill()
            process.wait()
            raise RedisServerError(f"redis-server could not bind port {self.fixed_port}")
        self.port, self.process = self.fixed_port, process
        return self
