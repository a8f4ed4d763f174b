"""Redis deployments a test starts and stops by pid: replicas, Sentinel, TLS, ACL users.

``RedisNode`` is ``app.local.redis_server.RedisServer`` with the options of a production
server: a replica of another (``replica_of``), TLS only (``tls``: ``--tls-port`` and
``--port 0``, with a certificate of a CA the test made with ``openssl``) and ACL users loaded
from a file (``acl_file``). ``SentinelServer`` is one ``redis-sentinel`` with a config file of
its own, and ``SentinelDeploy`` the smallest deploy that survives losing its master: a
master, a replica and three sentinels, all on free loopback ports under one temporary
directory; given ``tls``, every one of them speaks TLS only (replication and the sentinels'
own links included), for ``rediss+sentinel://`` URLs. Each server is accepted only once it
answers as the child the test spawned.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import redis

from app.local.ports import free_port
from app.local.redis_server import RedisServer, RedisServerError
from tests.support.processes import wait_until

#: The master's name the sentinels monitor.
MASTER = "mymaster"

#: Sentinel's ``down-after-milliseconds`` in these deploys: 5 s, the value of the Sentinel
#: documentation's example configuration, as a deploy that wants failover within seconds sets
#: it (Sentinel's own default is 30 s). ``failover-timeout`` is the documentation's 60 s.
DOWN_AFTER_MS = 5_000
FAILOVER_TIMEOUT_MS = 60_000

#: A loaded machine can take a while to start a server and for sentinels to find each other.
READY_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class TLSFiles:
    """A CA's certificate and a server certificate it signed for 127.0.0.1 and localhost."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


def make_tls_files(directory: Path) -> TLSFiles:
    """Make a CA and a server certificate for 127.0.0.1 and localhost with ``openssl``."""
    directory.mkdir(parents=True, exist_ok=True)
    files = TLSFiles(directory / "ca.crt", directory / "server.crt", directory / "server.key")
    ca_key = directory / "ca.key"
    request = directory / "server.csr"
    names = directory / "names.ext"
    names.write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n")
    for command in (
        ["req", "-x509", "-new", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", f"/CN=fintask test CA {directory.name}",
         "-keyout", ca_key, "-out", files.ca_cert],
        ["req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
         "-keyout", files.server_key, "-out", request],
        ["x509", "-req", "-in", request, "-CA", files.ca_cert, "-CAkey", ca_key,
         "-CAcreateserial", "-days", "2", "-extfile", names, "-out", files.server_cert],
    ):  # fmt: skip
        subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True)
    return files


class RedisNode(RedisServer):
    """A ``redis-server`` of this test: optionally a replica, TLS only, with ACL users."""

    def __init__(
        self,
        *,
        data_dir: Path,
        replica_of: int | None = None,
        tls: TLSFiles | None = None,
        acl_file: Path | None = None,
    ) -> None:
        super().__init__(data_dir=data_dir, persistent=True)
        self.replica_of = replica_of
        self.tls = tls
        self.acl_file = acl_file
        self.killed_port: int | None = None

    @property
    def url(self) -> str:
        """The server's URL: ``rediss://`` with the test CA's certificate if it speaks TLS."""
        if self.tls is None:
            return super().url
        return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls.ca_cert}"

    def client(self) -> redis.Redis:
        """A client of the running server as its default user (TLS if it speaks TLS)."""
        assert self.port is not None
        return self._client(self.port)

    def kill(self) -> None:
        """SIGKILL the server: it writes nothing more, as a crashed host would."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.killed_port, self.process, self.port = self.port, None, None

    def restart(self) -> RedisNode:
        """Start the killed server again on its port, with its data: the crashed host is back."""
        self.attempts = 1
        return self.start()

    def _pick_port(self) -> int:
        return self.killed_port or super()._pick_port()

    def _arguments(self, port: int) -> list[str]:
        arguments = super()._arguments(port)
        if self.tls is not None:
            arguments[arguments.index("--port") + 1] = "0"
            arguments += ["--tls-port", str(port), "--tls-cert-file", str(self.tls.server_cert)]
            arguments += ["--tls-key-file", str(self.tls.server_key)]
            arguments += ["--tls-ca-cert-file", str(self.tls.ca_cert), "--tls-auth-clients", "no"]
            arguments += ["--tls-replication", "yes"]
        if self.replica_of is not None:
            arguments += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        if self.acl_file is not None:
            arguments += ["--aclfile", str(self.acl_file)]
        return arguments

    def _client(self, port: int) -> redis.Redis:
        if self.tls is None:
            return super()._client(port)
        return tls_client(port, self.tls, socket_timeout=1)


def tls_client(port: int, tls: TLSFiles, *, socket_timeout: float) -> redis.Redis:
    """A client of the TLS-only server on ``port`` that trusts the test's CA."""
    return redis.Redis(
        host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(tls.ca_cert),
        socket_timeout=socket_timeout,
    )  # fmt: skip


class SentinelServer(RedisServer):
    """One ``redis-sentinel`` on a free port, monitoring ``MASTER`` at ``master_port``.

    Sentinel rewrites its config file as it learns the deploy, so each has one of its own
    (``RedisServer`` hands its config over on stdin).
    """

    def __init__(self, *, directory: Path, master_port: int, tls: TLSFiles | None = None) -> None:
        super().__init__(data_dir=directory, persistent=False)
        self.master_port = master_port
        self.tls = tls

    def start(self) -> SentinelServer:
        executable = shutil.which("redis-sentinel")
        if executable is None:
            raise RedisServerError("redis-sentinel is not installed: run `make install`")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "sentinel.conf"
        for _ in range(self.attempts):
            port = free_port()
            config.write_text(
                f"{self._listen(port)}bind 127.0.0.1\ndir {self.data_dir}\n"
                f"logfile {self.data_dir / 'sentinel.log'}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {self.master_port} 2\n"
                f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}\n"
            )
            process = subprocess.Popen(
                [executable, str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            if self._owns_port(process, port):
                self.port, self.process = port, process
                return self
            process.kill()
            process.wait()
        raise RedisServerError(f"redis-sentinel bound no free port in {self.attempts} tries")

    def client(self) -> redis.Redis:
        assert self.port is not None
        return self._client(self.port, socket_timeout=5)

    def _listen(self, port: int) -> str:
        """The config lines of where it listens: TLS only (to the master and replicas, and to
        the other sentinels, too) when the deploy speaks TLS."""
        if self.tls is None:
            return f"port {port}\n"
        return (
            f"port 0\ntls-port {port}\ntls-cert-file {self.tls.server_cert}\n"
            f"tls-key-file {self.tls.server_key}\ntls-ca-cert-file {self.tls.ca_cert}\n"
            "tls-auth-clients no\ntls-replication yes\n"
        )

    def _client(self, port: int, socket_timeout: float = 1) -> redis.Redis:
        if self.tls is None:
            return redis.Redis(host="127.0.0.1", port=port, socket_timeout=socket_timeout)
        return tls_client(port, self.tls, socket_timeout=socket_timeout)


class SentinelDeploy:
    """A master, its replicas (one by default) and three sentinels, for ``redis+sentinel://``
    URLs. After a failover the replicas left follow the new master; the old one stays dead."""

    def __init__(self, directory: Path, *, replicas: int = 1, tls: TLSFiles | None = None) -> None:
        self.directory = directory
        self.tls = tls
        self.master = RedisNode(data_dir=directory / "master", tls=tls)
        self.replica_count = replicas
        self.replicas: list[RedisNode] = []
        self.sentinels: list[SentinelServer] = []

    @property
    def url(self) -> str:
        """``REDIS_URL`` naming the three sentinels and the master (over TLS, trusting the
        test's CA, if the deploy speaks TLS)."""
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        if self.tls is None:
            return f"redis+sentinel://{hosts}/{MASTER}/0"
        return f"rediss+sentinel://{hosts}/{MASTER}/0?ssl_ca_certs={self.tls.ca_cert}"

    def start(self) -> SentinelDeploy:
        """Start every server; return once the sentinels see each other and the replica."""
        self.master.start()
        assert self.master.port is not None
        for number in range(self.replica_count):
            directory = self.directory / f"replica-{number}"
            replica = RedisNode(data_dir=directory, replica_of=self.master.port, tls=self.tls)
            self.replicas.append(replica.start())
        for number in range(3):
            directory = self.directory / f"sentinel-{number}"
            sentinel = SentinelServer(
                directory=directory, master_port=self.master.port, tls=self.tls
            )
            self.sentinels.append(sentinel.start())
        wait_until(self._ready, timeout_s=READY_TIMEOUT_S, what="sentinels to see it all")
        return self

    def master_port(self) -> int | None:
        """The port the sentinels name as the master's now (None if none answers)."""
        for sentinel in self.sentinels:
            try:
                _, port = sentinel.client().sentinel_get_master_addr_by_name(MASTER)
                return int(port)
            except (redis.RedisError, TypeError):
                continue
        return None

    def kill_master(self) -> None:
        """SIGKILL the master; the sentinels promote the replica ``DOWN_AFTER_MS`` later."""
        self.master.kill()

    def wait_promoted(self) -> RedisNode:
        """Wait until the sentinels name a replica as the master, and it takes writes."""

        def promoted() -> RedisNode | None:
            port = self.master_port()
            for replica in self.replicas:
                if replica.port is not None and replica.port == port:
                    client = replica.client()
                    try:
                        return replica if client.role()[0] == b"master" else None
                    except redis.RedisError:
                        return None
                    finally:
                        client.close()
            return None

        wait_until(promoted, timeout_s=READY_TIMEOUT_S, what="a replica's promotion")
        new_master = promoted()
        assert new_master is not None
        return new_master

    def stop(self) -> None:
        for server in [*self.sentinels, *self.replicas, self.master]:
            server.stop()

    def _ready(self) -> bool:
        for sentinel in self.sentinels:
            try:
                state = sentinel.client().sentinel_master(MASTER)
            except redis.RedisError:
                return False
            if state["num-other-sentinels"] < 2 or state["num-slaves"] < self.replica_count:
                return False
        return True

    def __enter__(self) -> SentinelDeploy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
